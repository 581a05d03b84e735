# Guest test: the process of the test device is killed (kill -9 on the
# host) while v4l2-ctl streams MMAP buffers from it (run-guest.sh
# --host-actions, one capture device vfu0 with MSI-X). QEMU 11.1.3 keeps
# such a device in place: every register and its config space read
# all-ones, writes go nowhere, no interrupt comes, and QEMU logs each
# access. It cannot be unplugged (QEMU aborts in device_del of a vfio-user
# device with MSI-X, and when the process of one without MSI-X dies), so
# the guest can only unbind it. Results:
#   kill-device-error   the streaming program ends with an error within 20 s
#                       (the driver's command timeout is 5 s)
#   kill-device-new     a device plugged in afterwards binds and streams
#   kill-device-unbind  the dead device can be unbound from the driver,
#                       within 30 s, so that the module can unload. The
#                       driver does not wait for a reset of a device that
#                       reads all-ones (virtio-pci would poll for ever), so
#                       the virtio core's WARN_ON in virtio_dev_remove
#                       ("driver should have reset it") fires: lifecycle.sh
#                       allows that one report for this test.
. /extra/lifecycle-lib.sh

dev0=$(bound_devices | head -n 1)
node0=$(video_node "$dev0")
[ -n "$node0" ] || { result kill-device-error FAIL "no device bound"; finish; exit; }
v4l2-ctl -d "$node0" --stream-mmap --stream-count=1000000 --stream-to=/dev/null > /tmp/stream.log 2>&1 &
streamer=$!
streaming() { [ "$(frames_in /tmp/stream.log)" -ge 5 ]; }
wait_until 30 streaming || echo "v4l2-ctl did not stream: $(tail -n 3 /tmp/stream.log)"

# The program is paused (stream on, buffers mapped and queued) while the
# process dies, and goes on right after: QEMU 11.1.3 aborted
# ("error_setv: Assertion `*errp == NULL' failed") in 3 of the last 5
# runs that killed the process in the middle of the streaming.
kill -STOP $streamer
sleep 2
t0=$(date +%s)
answer=$(host_action kill vfu0)
echo "kill vfu0: $answer (status $?)"
kill -CONT $streamer
ended() { ! is_running $streamer; }
got_error() { grep -q 'error' /tmp/stream.log; }
# The driver gives up on a command after 5 s: the program must have its
# error within 15 s and be done within 30 s. Whether or not it is, wait up
# to 60 s to say when it ended. (v4l2-ctl exits 0 after a failed QBUF or
# DQBUF: its message says it failed, not its status.)
wait_until 15 got_error
error_s=$(($(date +%s) - t0))
wait_until 15 ended
stack=$(stack_of $streamer | head -n 1)
wait_until 30 ended
seconds=$(($(date +%s) - t0))
errors=$(grep -o '[A-Za-z_]*: [A-Za-z ]*error.*' /tmp/stream.log | head -n 2 | tr '\n' ' ')
timeouts=$(dmesg | grep -c 'device did not answer a command')
if is_running $streamer; then
	result kill-device-error FAIL "v4l2-ctl still runs $seconds s after its device died ($errors): $stack"
	kill -9 $streamer
elif ! got_error; then
	result kill-device-error FAIL "v4l2-ctl ended after $seconds s without an error: $(tail -n 1 /tmp/stream.log)"
elif [ "$seconds" -gt 30 ] || [ "$error_s" -gt 15 ]; then
	result kill-device-error FAIL "v4l2-ctl had its error ($errors) and ended only after $seconds s; the driver timed out $timeouts commands, 5 s each, one after the other"
else
	result kill-device-error OK "v4l2-ctl had its error ($errors) and ended after $seconds s"
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

# The dead device is unbound. An unbind that hangs blocks the module's
# unload, so /init could never finish: then the blocked tasks are dumped
# and the guest rebooted (the runner reports a guest without a verdict).
t0=$(date +%s)
echo "$dev0" > /sys/bus/virtio/drivers/virtio_media/unbind &
unbinder=$!
unbound() { ! is_running $unbinder; }
if wait_until 30 unbound; then
	if [ -e "/sys/bus/virtio/drivers/virtio_media/$dev0" ]; then
		result kill-device-unbind FAIL "$dev0 still bound after its unbind"
	else
		result kill-device-unbind OK "unbound in $(($(date +%s) - t0)) s"
	fi
else
	result kill-device-unbind FAIL "unbinding the dead device still runs after $(($(date +%s) - t0)) s: $(stack_of $unbinder | sed 's/[+]0x[^ ]*//' | tr '\n' ' ')"
	finish
	echo "lifecycle: rebooting, the module cannot unload"
	echo b > /proc/sysrq-trigger
fi
finish
