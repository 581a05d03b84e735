# Guest test: 300 frames from one session, each frame whole; per-frame
# checksums are exported (single.md5) for comparison with the device's.
# STREAM_MODE=user streams USERPTR buffers instead of MMAP ones; dmabuf,
# dma-bufs that vivid exports.
. /test.env
dev=${VIDEO:-/dev/video0}
mode=${STREAM_MODE:-mmap}
size=$(v4l2-ctl -d $dev --get-fmt-video | sed -n 's@.*Size Image *: *\([0-9]*\).*@\1@p' | head -n 1)
[ -n "$size" ] || { echo "FAIL: no format"; exit 1; }
status=0
start=$(date +%s)
stream_args=--stream-$mode
if [ "$mode" = dmabuf ]; then
	. /extra/vivid-exporter.sh
	stream_args="--stream-dmabuf --export-device $exporter"
fi
timeout 120 v4l2-ctl -d $dev $stream_args --stream-count=300 --stream-to=/tmp/one.raw || {
	echo "FAIL: stream exited with $?"; status=1; }
echo "300 frames ($mode) in $(( $(date +%s) - start )) s"
got=$(wc -c < /tmp/one.raw)
if [ "$got" = "$((300 * size))" ]; then
	echo "PASS: 300 frames of $size bytes"
else
	echo "FAIL: $got bytes, expected 300 frames of $size bytes"
	status=1
fi
# Each frame's MD5, in one process (see frame-md5.c).
/extra/frame-md5 /tmp/one.raw "$size" > /tmp/one.md5 || { echo "FAIL: frame-md5"; status=1; }
export_file single.md5 /tmp/one.md5
exit $status
