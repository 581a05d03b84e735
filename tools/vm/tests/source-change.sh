# Guest test: V4L2_EVENT_SOURCE_CHANGE from the device reaches programs
# through the driver. The device must be the capture backend started with
# --source-change-every N (N well below FRAMES). Two checks:
#  1. another session, subscribed with `v4l2-ctl --wait-for-event
#     source_change=0` (input 0) before a plain stream starts, dequeues the
#     event with changes = V4L2_EVENT_SRC_CH_RESOLUTION (1), and exits;
#  2. the streaming session itself: `v4l2-ctl --stream-poll` subscribes to
#     the event, waits for it with select() and prints "SOURCE CHANGE EVENT"
#     for each one (it then restarts the stream, as a program must); at
#     least one event and frames between them are required.
# Without events the waiter is still blocked when the stream is over: it is
# killed and the test fails.
. /test.env
dev=${VIDEO:-/dev/video0}
frames=${FRAMES:-40}
status=0

rm -f /tmp/waiter.rc
(
	v4l2-ctl -d $dev --wait-for-event=source_change=0 > /tmp/waiter.log 2>&1 &
	echo $! > /tmp/waiter.pid
	wait $!
	echo $? > /tmp/waiter.rc
) &
sleep 2 # lets it subscribe; an event it misses is followed by others
timeout 120 v4l2-ctl -d $dev --stream-mmap --stream-count="$frames" > /tmp/stream.log 2>&1 || {
	echo "FAIL: stream of $frames frames exited with $?"; status=1; }
# The event is sent after the N-th frame's DQBUF: it was delivered long ago.
i=0
while [ ! -f /tmp/waiter.rc ] && [ $i -lt 10 ]; do sleep 1; i=$((i + 1)); done
if [ ! -f /tmp/waiter.rc ]; then
	kill "$(cat /tmp/waiter.pid)"
	echo "FAIL: no source_change event for the waiting session after $frames frames"
	status=1
elif [ "$(cat /tmp/waiter.rc)" = 0 ] &&
	grep -q 'source_change: pad/input=0 changes: 1$' /tmp/waiter.log; then
	echo "PASS: waiting session got: $(grep source_change /tmp/waiter.log)"
else
	echo "FAIL: the waiting session ended without the expected event:"
	cat /tmp/waiter.log
	status=1
fi

# v4l2-ctl restarts the stream on each event; whether its frame count
# survives a restart depends on its timing (seen both ways), and when it
# does not it never reaches $frames with an event every N frames. So it is
# stopped after 30 s; what counts is that events arrived while it streamed.
timeout 30 v4l2-ctl -d $dev --stream-mmap --stream-count="$frames" --stream-poll > /tmp/poll.log 2>&1
rc=$?
case $rc in
0) ;;
124 | 143) echo "note: v4l2-ctl --stream-poll was still restarting after 30 s" ;;
*) echo "FAIL: polled stream exited with $rc"; status=1 ;;
esac
events=$(grep -c '^SOURCE CHANGE EVENT' /tmp/poll.log)
frames_seen=$(tr -cd '<' < /tmp/poll.log | wc -c)
if [ "$events" -gt 0 ] && [ "$frames_seen" -ge "$frames" ]; then
	echo "PASS: streaming session got $events source change events in $frames_seen frames"
else
	echo "FAIL: streaming session got $events source change events in $frames_seen frames"
	status=1
fi
for f in waiter stream poll; do export_file $f.log /tmp/$f.log; done
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
exit $status
