# Guest test: the process of the test device is killed (kill -9 on the
# host) while v4l2-ctl streams MMAP buffers from it (run-guest.sh
# --host-actions, one capture device vfu0). Results:
#   kill-device-error   the streaming program ends with an error within 20 s
#                       (the driver's command timeout is 5 s)
#   kill-device-new     a device plugged in afterwards binds and streams
#   kill-device-unplug  the dead device can then be unplugged (device_del)
. /extra/lifecycle-lib.sh

dev0=$(bound_devices | head -n 1)
node0=$(video_node "$dev0")
[ -n "$node0" ] || { result kill-device-error FAIL "no device bound"; finish; exit; }
v4l2-ctl -d "$node0" --stream-mmap --stream-count=1000000 --stream-to=/dev/null > /tmp/stream.log 2>&1 &
streamer=$!
streaming() { [ "$(frames_in /tmp/stream.log)" -ge 5 ]; }
wait_until 30 streaming || echo "v4l2-ctl did not stream: $(tail -n 3 /tmp/stream.log)"

t0=$(date +%s)
answer=$(host_action kill vfu0)
echo "kill vfu0: $answer (status $?)"
ended() { ! is_running $streamer; }
# The driver gives up on a command after 5 s: a program must have its
# error within 20 s. Whether or not it does, wait up to 60 s to say when.
wait_until 20 ended
late=$?
stack=$(stack_of $streamer | tr '\n' ' ')
wait_until 40 ended
seconds=$(($(date +%s) - t0))
last=$(grep -v '^<*$' /tmp/stream.log | tail -n 2 | tr '\n' ' ')
if is_running $streamer; then
	result kill-device-error FAIL "v4l2-ctl still runs $seconds s after its device died: $stack"
	kill -9 $streamer
elif wait $streamer; then
	result kill-device-error FAIL "v4l2-ctl exited with 0 after its device died: $last"
elif [ $late = 0 ]; then
	result kill-device-error OK "v4l2-ctl got an error, exited after $seconds s: $last"
else
	result kill-device-error FAIL "v4l2-ctl took $seconds s to exit (over 20 s: $stack): $last"
fi
echo "what the kernel said:"
dmesg | tail -n 20

# A new device on another slot.
answer=$(host_action device_add --device-id 42 --backend capture)
echo "device_add: $answer (status $?)"
new_node() { for d in $(bound_devices); do [ "$d" != "$dev0" ] && video_node "$d"; done; }
has_new_node() { [ -n "$(new_node)" ]; }
if ! wait_until 30 has_new_node; then
	result kill-device-new FAIL "no new device bound within 30 s of device_add ($answer)"
else
	node=$(new_node)
	if timeout 60 v4l2-ctl -d "$node" --stream-mmap --stream-count=10 --stream-to=/dev/null > /tmp/new.log 2>&1 &&
		[ "$(frames_in /tmp/new.log)" -ge 10 ]; then
		result kill-device-new OK "${answer%% *} ($node) streamed 10 frames"
	else
		result kill-device-new FAIL "${answer%% *} ($node): $(tail -n 2 /tmp/new.log | tr '\n' ' ')"
	fi
fi

# The dead device goes away when unplugged. QEMU 11.1.3 keeps a device
# whose process died in place, every register and config space reading
# all-ones; only device_del removes it. A removal that hangs blocks the
# module's unload, so /init could never finish: then the blocked tasks are
# dumped to the kernel log and the guest is rebooted (the runner reports a
# guest without a verdict).
t0=$(date +%s)
if answer=$(HOST_ACTION_TIMEOUT=60 host_action device_del vfu0 2>&1); then
	if [ -e "/sys/bus/virtio/devices/$dev0" ]; then
		result kill-device-unplug FAIL "$dev0 still present after device_del ($answer)"
	else
		result kill-device-unplug OK "$answer"
	fi
else
	result kill-device-unplug FAIL "the guest did not finish removing the dead device in $(($(date +%s) - t0)) s ($answer); blocked tasks: $(blocked_tasks)"
	finish
	echo "lifecycle: rebooting, the module cannot unload"
	echo b > /proc/sysrq-trigger
fi
finish
