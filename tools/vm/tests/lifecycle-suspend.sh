# Guest test: system sleep (suspend to idle, woken by an RTC alarm after
# SLEEP_S seconds, default 5) while one program streams MMAP buffers and
# another holds a session open. Results:
#   suspend-resume     the system went to sleep and woke up
#   suspend-streamer   the streaming program either goes on streaming after
#                      resume or ends with an error; it may not hang
#   suspend-session    the held session answers its ioctls after resume,
#                      with results or with errors, within 10 s
#   suspend-new        a new session streams normally after resume
. /extra/lifecycle-lib.sh
probe=/extra/lifecycle-probe
sleep_s=${SLEEP_S:-5}
rtc=/sys/class/rtc/rtc0

node=$(video_node "$(bound_devices | head -n 1)")
[ -n "$node" ] || { result suspend-resume FAIL "no device bound"; finish; exit; }
[ -e $rtc/wakealarm ] || { result suspend-resume FAIL "no RTC wake alarm ($rtc)"; finish; exit; }
grep -qw freeze /sys/power/state || { result suspend-resume FAIL "no suspend to idle: /sys/power/state has '$(cat /sys/power/state)'"; finish; exit; }

v4l2-ctl -d "$node" --stream-mmap --stream-count=1000000 --stream-to=/dev/null > /tmp/stream.log 2>&1 &
streamer=$!
$probe hold "$node" > /tmp/hold.log 2>&1 &
holder=$!
streaming() { [ "$(frames_in /tmp/stream.log)" -ge 5 ]; }
holding() { grep -q '^ready' /tmp/hold.log; }
wait_until 30 streaming || echo "v4l2-ctl did not stream: $(tail -n 3 /tmp/stream.log)"
wait_until 30 holding || echo "the held session did not start: $(cat /tmp/hold.log)"
cat /tmp/hold.log

frames0=$(frames_in /tmp/stream.log)
echo 0 > $rtc/wakealarm
echo "+$sleep_s" > $rtc/wakealarm
t0=$(date +%s)
echo "suspending to idle for $sleep_s s with $frames0 frames streamed"
if echo freeze > /sys/power/state; then
	slept=$(($(date +%s) - t0))
	result suspend-resume OK "woke up after $slept s"
else
	result suspend-resume FAIL "echo freeze > /sys/power/state failed after $(($(date +%s) - t0)) s: $(dmesg | grep -iE 'PM:|freez|suspend' | tail -n 3 | tr '\n' ' ')"
fi
echo "the kernel's sleep:"
dmesg | grep -iE 'PM:|suspend|resume|freez|virtio_media|restore' | tail -n 20

# The streaming program: still streaming, or ended with an error.
sleep 5
frames1=$(frames_in /tmp/stream.log)
if is_running $streamer; then
	sleep 5
	frames2=$(frames_in /tmp/stream.log)
	if [ "$frames2" -gt "$frames1" ]; then
		result suspend-streamer OK "goes on streaming: $((frames2 - frames0)) frames since resume"
	else
		result suspend-streamer FAIL "runs but got no frame for 10 s after resume (hangs): $(stack_of $streamer | tr '\n' ' ')"
	fi
	kill $streamer
else
	wait $streamer
	rc=$?
	last=$(grep -v '^<*$' /tmp/stream.log | tail -n 1)
	if [ "$rc" != 0 ]; then
		result suspend-streamer OK "ended with status $rc after resume: $last"
	else
		result suspend-streamer FAIL "ended with status 0 before its 1000000 frames: $last"
	fi
fi

# The held session.
kill -USR1 $holder
answered() { [ "$(sed -n '/^mark 1/,$p' /tmp/hold.log | grep -c '^[A-Z_]*: ')" -ge 3 ]; }
if wait_until 10 answered; then
	result suspend-session OK "after resume: $(sed -n '/^mark 1/,$p' /tmp/hold.log | grep '^[A-Z_]*: ' | tr '\n' ' ')"
else
	result suspend-session FAIL "no answer within 10 s: $(sed -n '/^mark 1/,$p' /tmp/hold.log | tr '\n' ' ') $(stack_of $holder | tr '\n' ' ')"
fi
kill $holder

# A new session.
wait_until 10 sh -c "! pidof v4l2-ctl > /dev/null"
if timeout 60 v4l2-ctl -d "$node" --stream-mmap --stream-count=10 --stream-to=/dev/null > /tmp/new.log 2>&1 &&
	[ "$(frames_in /tmp/new.log)" -ge 10 ]; then
	result suspend-new OK "10 frames"
else
	result suspend-new FAIL "$(grep -v '^<*$' /tmp/new.log | tail -n 2 | tr '\n' ' ')"
fi
finish
