# make run with the test devices: show the nodes, stream from the camera,
# decode a clip through the decoder with FFmpeg and GStreamer, and export
# some decoded frames as PNG.
. /test.env
export HOME=/tmp
echo "=== RUN START ==="
for d in /sys/bus/virtio/devices/*; do
	echo "virtio device $(basename "$d"): device $(cat "$d/device"), driver $(basename "$(readlink "$d/driver")")"
done
dmesg | grep virtio_media
# The camera is the first device, the decoder the second.
cam=/dev/video0 dec=/dev/video1
echo
echo "=== $cam: $(v4l2-ctl -d $cam --info | sed -n 's/.*Card type *: //p') ==="
v4l2-ctl -d $cam --all || exit 1
fmt=$(v4l2-ctl -d $cam --get-fmt-video)
width=$(echo "$fmt" | sed -n 's@.*Width/Height *: *\([0-9]*\)/.*@\1@p')
height=$(echo "$fmt" | sed -n 's@.*Width/Height *: *[0-9]*/\([0-9]*\).*@\1@p')
fourcc=$(echo "$fmt" | sed -n "s@.*Pixel Format *: *'\([A-Z0-9]*\)'.*@\1@p")
echo "streaming 30 frames of ${width}x${height} $fourcc through mmap"
v4l2-ctl -d $cam --stream-mmap --stream-count=30 --stream-to=/tmp/frames.raw || exit 1
ls -l /tmp/frames.raw

echo
echo "=== $dec: $(v4l2-ctl -d $dec --info | sed -n 's/.*Card type *: //p') ==="
v4l2-ctl -d $dec --list-formats-out --list-formats
clip=/extra/$DEMO_CLIP
echo "FFmpeg decodes $clip through the driver (h264_v4l2m2m), 4 frames a second to PNG:"
echo "  ffmpeg -c:v h264_v4l2m2m -i $clip -vf fps=4 decoded-%02d.png"
ffmpeg -hide_banner -nostdin -loglevel error -c:v h264_v4l2m2m -i "$clip" -vf fps=4 \
	/tmp/decoded-%02d.png || exit 1
ls -l /tmp/decoded-*.png
for f in /tmp/decoded-*.png; do
	export_file "$(basename "$f")" "$f"
done
echo "GStreamer decodes the same clip (v4l2h264dec):"
echo "  gst-launch-1.0 filesrc location=$clip ! matroskademux ! h264parse ! v4l2h264dec ! fakesink silent=false -v"
# fakesink silent=false -v prints a "chain" line per frame it receives.
frames=$(gst-launch-1.0 -v filesrc location="$clip" ! matroskademux ! h264parse ! v4l2h264dec ! \
	fakesink silent=false | grep -c 'chain   \*')
echo "  $frames frames decoded"
[ "$frames" -gt 0 ] || exit 1
