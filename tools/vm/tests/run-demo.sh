# make run with the test device: show the node, stream frames, export one.
echo "=== RUN START ==="
for d in /sys/bus/virtio/devices/*; do
	echo "virtio device $(basename "$d"): device $(cat "$d/device"), driver $(basename "$(readlink "$d/driver")")"
done
dmesg | grep virtio_media
v4l2-ctl -d /dev/video0 --all || exit 1
fmt=$(v4l2-ctl -d /dev/video0 --get-fmt-video)
width=$(echo "$fmt" | sed -n 's@.*Width/Height *: *\([0-9]*\)/.*@\1@p')
height=$(echo "$fmt" | sed -n 's@.*Width/Height *: *[0-9]*/\([0-9]*\).*@\1@p')
fourcc=$(echo "$fmt" | sed -n "s@.*Pixel Format *: *'\([A-Z0-9]*\)'.*@\1@p")
size=$(echo "$fmt" | sed -n 's@.*Size Image *: *\([0-9]*\).*@\1@p' | head -n 1)
echo "streaming 30 frames of ${width}x${height} $fourcc ($size bytes each)"
v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=30 --stream-to=/tmp/frames.raw || exit 1
ls -l /tmp/frames.raw
tail -c "$size" /tmp/frames.raw > /tmp/frame.raw
echo "$width $height $fourcc" > /tmp/frame.fmt
export_file frame.raw /tmp/frame.raw
export_file frame.fmt /tmp/frame.fmt
