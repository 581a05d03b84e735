# Guest test: 300 frames from one session, then two sessions streaming at
# the same time. Each stream must deliver every frame, whole, in time.
. /test.env
dev=/dev/video0
size=$(v4l2-ctl -d $dev --get-fmt-video | sed -n 's@.*Size Image *: *\([0-9]*\).*@\1@p' | head -n 1)
[ -n "$size" ] || { echo "FAIL: no format"; exit 1; }
status=0

# check NAME FILE FRAMES: the file holds exactly FRAMES frames.
check() {
	got=$(wc -c < "$2")
	if [ "$got" = "$(($3 * size))" ]; then
		echo "PASS: $1: $3 frames of $size bytes"
	else
		echo "FAIL: $1: $got bytes, expected $3 frames of $size bytes"
		status=1
	fi
}

start=$(date +%s)
timeout 120 v4l2-ctl -d $dev --stream-mmap --stream-count=300 --stream-to=/tmp/one.raw || {
	echo "FAIL: single stream exited with $?"; status=1; }
echo "single stream: $(( $(date +%s) - start )) s"
check "single session" /tmp/one.raw 300
# Per-frame checksums, for comparison with what the device wrote.
i=0
while [ $i -lt 300 ]; do
	echo "$i $(dd if=/tmp/one.raw bs="$size" skip=$i count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
	i=$((i + 1))
done > /tmp/one.md5
rm -f /tmp/one.raw
export_file single.md5 /tmp/one.md5

start=$(date +%s)
timeout 120 v4l2-ctl -d $dev --stream-mmap --stream-count=100 --stream-to=/tmp/a.raw &
a=$!
timeout 120 v4l2-ctl -d $dev --stream-mmap --stream-count=100 --stream-to=/tmp/b.raw &
b=$!
wait $a || { echo "FAIL: first concurrent stream exited with $?"; status=1; }
wait $b || { echo "FAIL: second concurrent stream exited with $?"; status=1; }
echo "two streams: $(( $(date +%s) - start )) s"
check "concurrent session 1" /tmp/a.raw 100
check "concurrent session 2" /tmp/b.raw 100
exit $status
