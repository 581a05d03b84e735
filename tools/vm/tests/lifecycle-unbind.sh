# Guest test: CYCLES unbind/bind cycles through the driver's sysfs files
# while a program streams. The program (v4l2-ctl --stream-mmap) restarts
# whenever its device goes; each cycle needs the node back and new frames
# from it, and each unbind must end the running program with an error.
. /extra/lifecycle-lib.sh
cycles=${CYCLES:-200}
drv=/sys/bus/virtio/drivers/virtio_media
dev=$(bound_devices | head -n 1)
[ -n "$dev" ] || { result unbind-cycles FAIL "no device bound to virtio_media"; finish; exit; }

# The streaming program (lifecycle-probe stream), restarted in a loop; run
# N writes /tmp/run.N.log, its number is in /tmp/current while it runs, and
# "N STATUS" goes to /tmp/exits when it ends.
: > /tmp/exits
(
	n=0
	while [ ! -e /tmp/stop ]; do
		n=$((n + 1))
		echo $n > /tmp/current
		/extra/lifecycle-probe stream /dev/video0 > /tmp/run.$n.log 2>&1
		echo "$n $?" >> /tmp/exits
		sleep 0.1
	done
) &
looper=$!

# The run streaming now has dequeued at least 10 frames.
streaming_now() { grep -q '^frames' "/tmp/run.$(cat /tmp/current).log" 2> /dev/null; }
run_ended() { grep -q "^$1 " /tmp/exits; }

start=$(date +%s)
i=1 done=0 why=""
: > /tmp/unbound-runs
while [ $i -le "$cycles" ]; do
	if ! wait_until 30 streaming_now; then
		why="cycle $i: no frames within 30 s of bind ($(cat "/tmp/run.$(cat /tmp/current).log" | tr '\n' ' '))"; break
	fi
	run=$(cat /tmp/current)
	echo "$dev" > $drv/unbind || { why="cycle $i: unbind failed"; break; }
	if [ -e /dev/video0 ]; then
		why="cycle $i: /dev/video0 still there after unbind"; break
	fi
	if ! wait_until 15 run_ended $run; then
		why="cycle $i: the streaming program did not end within 15 s of unbind"
		for p in $(pidof lifecycle-probe); do stack_of "$p"; done
		break
	fi
	echo "$run $(sed -n "s/^$run //p" /tmp/exits) $(grep -m 1 ': error ' /tmp/run.$run.log)" >> /tmp/unbound-runs
	echo "$dev" > $drv/bind || { why="cycle $i: bind failed"; break; }
	wait_until 10 test -c /dev/video0 || { why="cycle $i: no /dev/video0 within 10 s of bind"; break; }
	done=$i
	i=$((i + 1))
done
seconds=$(($(date +%s) - start))
touch /tmp/stop
while is_running $looper; do
	kill $(pidof lifecycle-probe) 2> /dev/null
	sleep 0.2
done
wait $looper

# Each run an unbind ended must have failed with an error (not exited as
# if done); what the errors were is printed.
runs=$(wc -l < /tmp/exits)
errors=$(cut -d' ' -f3- /tmp/unbound-runs | sed 's/^$/no error printed/' | sort | uniq -c | tr -s ' \n' ' ')
echo "streaming program: $runs runs; the $done ended by unbind: $errors"
bad=$(awk '$2 != 1 || NF < 3' /tmp/unbound-runs | head -n 1)
[ -z "$why" ] && [ -n "$bad" ] && why="a run ended by unbind did not fail with an error: run, status, error: $bad"
if [ -z "$why" ]; then
	result unbind-cycles OK "$done cycles in $seconds s; the program streamed each time and got:$errors"
else
	result unbind-cycles FAIL "$why ($done of $cycles cycles done in $seconds s)"
fi
finish
