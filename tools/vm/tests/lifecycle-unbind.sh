# Guest test: CYCLES unbind/bind cycles through the driver's sysfs files
# while a program streams. The program (v4l2-ctl --stream-mmap) restarts
# whenever its device goes; each cycle needs the node back and new frames
# from it, and each unbind must end the running program with an error.
. /extra/lifecycle-lib.sh
cycles=${CYCLES:-200}
drv=/sys/bus/virtio/drivers/virtio_media
dev=$(bound_devices | head -n 1)
[ -n "$dev" ] || { result unbind-cycles FAIL "no device bound to virtio_media"; finish; exit; }

# The streaming program, restarted in a loop; each run's output and exit
# status are kept (run.N.log, "N STATUS" in /tmp/exits).
: > /tmp/exits
(
	n=0
	while [ ! -e /tmp/stop ]; do
		n=$((n + 1))
		v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=1000000 --stream-to=/dev/null \
			> /tmp/run.$n.log 2>&1
		echo "$n $?" >> /tmp/exits
		sleep 0.1
	done
) &
looper=$!

streaming_now() { # at least 3 frames more than $frames_before
	[ "$(frames_in /tmp/run.*.log)" -ge $((frames_before + 3)) ]
}
runs_ended() { [ "$(wc -l < /tmp/exits)" -gt "$exits_before" ]; }

start=$(date +%s)
i=1 done=0 why=""
frames_before=0
while [ $i -le "$cycles" ]; do
	if ! wait_until 30 streaming_now; then
		why="cycle $i: no new frames within 30 s of bind"; break
	fi
	exits_before=$(wc -l < /tmp/exits)
	echo "$dev" > $drv/unbind || { why="cycle $i: unbind failed"; break; }
	if [ -e /dev/video0 ]; then
		why="cycle $i: /dev/video0 still there after unbind"; break
	fi
	if ! wait_until 15 runs_ended; then
		why="cycle $i: the streaming program did not end within 15 s of unbind"
		for p in $(pidof v4l2-ctl); do stack_of "$p"; done
		break
	fi
	frames_before=$(frames_in /tmp/run.*.log)
	echo "$dev" > $drv/bind || { why="cycle $i: bind failed"; break; }
	wait_until 10 test -c /dev/video0 || { why="cycle $i: no /dev/video0 within 10 s of bind"; break; }
	done=$i
	i=$((i + 1))
done
seconds=$(($(date +%s) - start))
touch /tmp/stop
while is_running $looper; do
	kill $(pidof v4l2-ctl) 2> /dev/null
	sleep 0.2
done
wait $looper

# Every run the unbind ended must have failed (not exited 0 as if done).
runs=$(wc -l < /tmp/exits)
clean=$(awk '$2 == 0' /tmp/exits | wc -l)
echo "streaming program: $runs runs, $clean exited 0, $(frames_in /tmp/run.*.log) frames in all"
echo "exit statuses: $(awk '{ print $2 }' /tmp/exits | sort | uniq -c | tr -s ' \n' ' ')"
tail -n 2 /tmp/run.1.log
[ -z "$why" ] && [ "$clean" != 0 ] && why="$clean runs of the streaming program ended with status 0 when their device went"
if [ -z "$why" ]; then
	result unbind-cycles OK "$done cycles in $seconds s, $runs streaming runs, each ended with an error by its unbind"
else
	result unbind-cycles FAIL "$why ($done of $cycles cycles done in $seconds s)"
fi
finish
