# Guest test: system sleep (suspend to idle) while one program streams MMAP
# buffers and another holds a session open; run-guest.sh --host-actions.
# The host wakes the guest SLEEP_S seconds (default 5) later by pressing the
# ACPI power button (QMP system_powerdown): QEMU raises the ACPI RTC event
# only for a machine in S3, and the guest's rtc_cmos, on ACPI, wakes through
# that event, so an RTC alarm never ends suspend to idle here. Results:
#   suspend-resume     the system went to sleep and woke up
#   suspend-streamer   the streaming program either goes on streaming after
#                      resume or ends with an error; it may not hang
#   suspend-session    the held session answers its ioctls after resume,
#                      with results or with errors, within 10 s
#   suspend-new        a new session streams normally after resume
. /extra/lifecycle-lib.sh
probe=/extra/lifecycle-probe
sleep_s=${SLEEP_S:-5}

node=$(video_node "$(bound_devices | head -n 1)")
[ -n "$node" ] || { result suspend-resume FAIL "no device bound"; finish; exit; }
grep -qw freeze /sys/power/state || { result suspend-resume FAIL "no suspend to idle: /sys/power/state has '$(cat /sys/power/state)'"; finish; exit; }

$probe stream "$node" > /tmp/stream.log 2>&1 &
streamer=$!
$probe hold "$node" > /tmp/hold.log 2>&1 &
holder=$!
# Frames the streaming program reported (a line every 10 frames).
streamed() { sed -n 's/^frames //p' /tmp/stream.log | tail -n 1 | grep . || echo 0; }
streaming() { [ "$(streamed)" -ge 10 ]; }
holding() { grep -q '^ready' /tmp/hold.log; }
wait_until 30 streaming || echo "lifecycle-probe stream did not stream: $(cat /tmp/stream.log)"
wait_until 30 holding || echo "the held session did not start: $(cat /tmp/hold.log)"
cat /tmp/hold.log

frames0=$(streamed)
# A second press 30 s later, in case the first came before the guest slept.
host_action after "$sleep_s" qmp '{"execute": "system_powerdown"}'
host_action after $((sleep_s + 30)) qmp '{"execute": "system_powerdown"}'
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

# What the driver said since resume, for the failure messages: without
# freeze and restore it keeps queues the device forgot when virtio reset
# it on resume, and its commands time out.
since_resume() {
	dmesg | sed -n '/PM: suspend exit/,$p' | grep 'virtio_media' | sed 's/^\[[ 0-9.]*\] //' |
		sort | uniq -c | sed 's/^ *\([0-9]*\) /\1 x /' | tr '\n' ';'
}
why() { echo "(since resume: $(since_resume))"; }

# The streaming program: still streaming, or ended with an error.
sleep 5
frames1=$(streamed)
if is_running $streamer; then
	sleep 5
	frames2=$(streamed)
	if [ "$frames2" -gt "$frames1" ]; then
		result suspend-streamer OK "goes on streaming: $((frames2 - frames0)) frames since resume"
	else
		result suspend-streamer FAIL "runs but got no frame for 10 s after resume (hangs): $(stack_of $streamer | head -n 1) $(why)"
	fi
	kill $streamer
	streamer_gone() { ! is_running $streamer; }
	wait_until 10 streamer_gone || echo "the streaming program does not end: $(stack_of $streamer | tr '\n' ' ')"
else
	wait $streamer
	rc=$?
	error=$(grep ': error ' /tmp/stream.log | head -n 1)
	if [ "$rc" = 1 ] && [ -n "$error" ]; then
		result suspend-streamer OK "ended after resume: $error, $(tail -n 1 /tmp/stream.log)"
	else
		result suspend-streamer FAIL "ended with status $rc and no error after resume: $(tail -n 2 /tmp/stream.log | tr '\n' ' ') $(why)"
	fi
fi

# The held session.
kill -USR1 $holder
answered() { [ "$(sed -n '/^mark 1/,$p' /tmp/hold.log | grep -c '^[A-Z_]*: ')" -ge 3 ]; }
if wait_until 10 answered; then
	result suspend-session OK "after resume: $(sed -n '/^mark 1/,$p' /tmp/hold.log | grep '^[A-Z_]*: ' | tr '\n' ' ')"
else
	result suspend-session FAIL "no answer within 10 s: $(sed -n '/^mark 1/,$p' /tmp/hold.log | tr '\n' ' ') $(stack_of $holder | head -n 1) $(why)"
fi
kill $holder

# A new session.
if timeout 60 v4l2-ctl -d "$node" --stream-mmap --stream-count=10 --stream-to=/dev/null > /tmp/new.log 2>&1 &&
	[ "$(frames_in /tmp/new.log)" -ge 10 ]; then
	result suspend-new OK "10 frames"
else
	result suspend-new FAIL "$(grep -v '^<*$' /tmp/new.log | tail -n 2 | tr '\n' ' ') $(why)"
fi
finish
