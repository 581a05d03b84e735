# Guest test: 300 frames from one session, each frame whole; per-frame
# checksums are exported (single.md5) for comparison with the device's.
# STREAM_MODE=user streams USERPTR buffers instead of MMAP ones; dmabuf,
# dma-bufs that vivid exports.
#
# The frames go through a pipe to frame-md5, not through a file: 184 MB
# written to and freed from tmpfs cost about 25 s of a debug kernel under
# TCG, more than the stream itself.
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
# Each frame's MD5 as it arrives, in one process (see frame-md5.c).
{
	timeout 120 v4l2-ctl -d $dev $stream_args --stream-count=300 --stream-to=- 2> /tmp/stream.log
	echo $? > /tmp/stream.rc
} | /extra/frame-md5 - "$size" > /tmp/one.md5 || { echo "FAIL: frame-md5 exited with $?"; status=1; }
rc=$(cat /tmp/stream.rc)
[ "$rc" = 0 ] || { echo "FAIL: stream exited with $rc"; tail -n 5 /tmp/stream.log; status=1; }
frames=$(wc -l < /tmp/one.md5)
echo "$frames frames ($mode) in $(( $(date +%s) - start )) s"
if [ "$frames" = 300 ]; then
	echo "PASS: 300 frames of $size bytes"
else
	echo "FAIL: $frames frames of $size bytes, expected 300"
	status=1
fi
export_file single.md5 /tmp/one.md5
exit $status
