# Sourced by guest tests that need a dma-buf exporter: loads vivid with one
# capture node, gives it the format of $VIDEO or /dev/video0 (the
# virtio-media node, probed first), so its buffers are large enough, and sets $exporter.
# EXPORTER_FORMAT="width=W,height=H,pixelformat=FOURCC" gives the format
# instead.
modprobe vivid n_devs=1 node_types=0x1 || { echo "FAIL: modprobe vivid"; exit 1; }
exporter=""
for d in /sys/class/video4linux/video*; do
	grep -q vivid "$d/name" && exporter=/dev/$(basename "$d")
done
[ -n "$exporter" ] || { echo "FAIL: no vivid node"; exit 1; }
if [ -n "${EXPORTER_FORMAT:-}" ]; then
	# Given (e.g. for a codec, whose formats vivid does not have).
	wh=${EXPORTER_FORMAT%,pixelformat=*} pix=${EXPORTER_FORMAT##*pixelformat=}
else
	fmt=$(v4l2-ctl -d "${VIDEO:-/dev/video0}" --get-fmt-video)
	wh=$(echo "$fmt" | sed -n 's@.*Width/Height *: *\([0-9]*\)/\([0-9]*\).*@width=\1,height=\2@p' | head -n 1)
	pix=$(echo "$fmt" | sed -n "s@.*Pixel Format *: *'\([^']*\)'.*@\1@p" | head -n 1)
fi
v4l2-ctl -d "$exporter" -v "$wh,pixelformat=$pix" || { echo "FAIL: vivid format $wh $pix"; exit 1; }
echo "dma-buf exporter: $exporter ($(v4l2-ctl -d "$exporter" --get-fmt-video | grep -E 'Size Image' | tr -s ' '))"
