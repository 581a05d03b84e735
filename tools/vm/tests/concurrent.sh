# Guest test: two processes stream from two sessions of a mem2mem device at
# the same time; each must get all its frames.
. /test.env
dev=${VIDEO:-/dev/video0}
frames=50
size=$(v4l2-ctl -d $dev --get-fmt-video | sed -n 's@.*Size Image *: *\([0-9]*\).*@\1@p' | head -n 1)
[ -n "$size" ] || { echo "FAIL: no format"; exit 1; }
status=0
timeout 120 v4l2-ctl -d $dev --stream-mmap --stream-out-mmap --stream-count=$frames --stream-to=/tmp/a.raw &
a=$!
timeout 120 v4l2-ctl -d $dev --stream-mmap --stream-out-mmap --stream-count=$frames --stream-to=/tmp/b.raw &
b=$!
wait $a || { echo "FAIL: session 1 exited with $?"; status=1; }
wait $b || { echo "FAIL: session 2 exited with $?"; status=1; }
for f in a b; do
	got=$(wc -c < /tmp/$f.raw)
	if [ "$got" = "$((frames * size))" ]; then
		echo "PASS: session $f: $frames frames"
	else
		echo "FAIL: session $f: $got bytes, expected $frames frames of $size bytes"
		status=1
	fi
done
exit $status
