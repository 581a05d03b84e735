# Guest test: the test device is hot-unplugged (QMP device_del) while used.
# Booted with two capture devices, vfu0 and vfu1 (run-guest.sh
# --host-actions). Results:
#   device-del-stream  a program streaming MMAP buffers from vfu0
#                      (lifecycle-probe stream) gets ENODEV once vfu0 is
#                      unplugged, and the node goes
#   device-del-sigbus  a program touching mmap'ed buffers of vfu1
#                      (lifecycle-probe touch) gets SIGBUS once vfu1 is
#                      unplugged, never memory that is no longer the device's
#   device-add-stream  a device plugged in afterwards (device_add, into
#                      vfu1's slot) binds and streams
. /extra/lifecycle-lib.sh
probe=/extra/lifecycle-probe

set -- $(bound_devices)
[ $# = 2 ] || { result device-del-stream FAIL "expected 2 bound devices, found $#: $*"; finish; exit; }
dev0=$1 dev1=$2
node0=$(video_node "$dev0") node1=$(video_node "$dev1")
# The guest-physical address of a device's shared memory (BAR2).
shm_of() { sed -n 3p "$(readlink -f "/sys/bus/virtio/devices/$1/..")/resource" | cut -d' ' -f1; }
echo "vfu0 is $dev0 ($node0), vfu1 is $dev1 ($node1, shared memory at $(shm_of "$dev1"))"

$probe stream "$node0" > /tmp/stream.log 2>&1 &
streamer=$!
$probe touch "$node1" > /tmp/touch.log 2>&1 &
toucher=$!
streaming() { grep -q '^frames' /tmp/stream.log; }
touching() { grep -q '^ready' /tmp/touch.log; }
wait_until 30 streaming || echo "lifecycle-probe stream did not stream: $(cat /tmp/stream.log)"
wait_until 30 touching || echo "lifecycle-probe touch did not start: $(cat /tmp/touch.log)"
cat /tmp/touch.log

# 1. Unplug the streaming device.
answer=$(host_action device_del vfu0)
echo "device_del vfu0: $answer (status $?)"
ended() { ! is_running $streamer; }
if [ -e "/sys/bus/virtio/devices/$dev0" ]; then
	result device-del-stream FAIL "$dev0 still present after device_del vfu0 ($answer)"
elif ! wait_until 15 ended; then
	result device-del-stream FAIL "the streaming program still runs 15 s after its device was unplugged: $(stack_of $streamer | tr '\n' ' ')"
	kill -9 $streamer
else
	wait $streamer
	rc=$?
	error=$(grep ': error ' /tmp/stream.log | head -n 1)
	frames=$(sed -n 's/^ended after \([0-9]*\) frames/\1/p' /tmp/stream.log)
	if [ -e "$node0" ]; then
		result device-del-stream FAIL "$node0 still exists after its device was unplugged"
	elif [ "$rc" = 1 ] && echo "$error" | grep -q 'error 19 '; then
		result device-del-stream OK "after $frames frames: $error"
	else
		result device-del-stream FAIL "expected ENODEV; status $rc after $frames frames: ${error:-$(tail -n 1 /tmp/stream.log)}"
	fi
fi

# 2. Unplug the device whose buffers are mapped and touched.
shm1=$(shm_of "$dev1")
answer=$(host_action device_del vfu1)
echo "device_del vfu1: $answer (status $?)"
kill -USR1 $toucher 2> /dev/null
sleep 3
kill -USR1 $toucher 2> /dev/null
sleep 0.5
sigbus=""
if ! is_running $toucher; then
	wait $toucher
	rc=$?
	if [ "$rc" = 0 ] && grep -q '^SIGBUS at' /tmp/touch.log; then
		sigbus=yes
		result device-del-sigbus OK "$(grep '^SIGBUS at' /tmp/touch.log)"
	else
		result device-del-sigbus FAIL "lifecycle-probe touch ended with $rc without SIGBUS: $(tail -n 1 /tmp/touch.log)"
	fi
	toucher=""
fi

# 3. A new device in the freed slot streams. Its shared memory may land
# where the old mapping points: a program still touching that mapping
# then reads and writes the new device's memory.
answer=$(host_action device_add bus=rp1 --device-id 42 --backend capture)
echo "device_add into vfu1's slot: $answer (status $?)"
new_device() { [ -n "$(bound_devices)" ] && [ -n "$(video_node "$(bound_devices | head -n 1)")" ]; }
if ! wait_until 30 new_device; then
	result device-add-stream FAIL "no device bound within 30 s of device_add ($answer)"
else
	dev=$(bound_devices | head -n 1)
	node=$(video_node "$dev")
	echo "new device $dev ($node), shared memory at $(shm_of "$dev"); vfu1's was at $shm1"
	if timeout 60 v4l2-ctl -d "$node" --stream-mmap --stream-count=10 --stream-to=/dev/null > /tmp/new.log 2>&1 &&
		[ "$(frames_in /tmp/new.log)" -ge 10 ]; then
		result device-add-stream OK "${answer%% *} ($node) streamed 10 frames"
	else
		result device-add-stream FAIL "${answer%% *} ($node): $(tail -n 2 /tmp/new.log | tr '\n' ' ')"
	fi
fi
if [ -n "$toucher" ]; then
	kill -USR1 $toucher
	sleep 0.5
	kill $toucher
	wait $toucher
	cat /tmp/touch.log
	result device-del-sigbus FAIL "no SIGBUS: the program went on reading and writing its mapping of the unplugged device's memory (the driver leaves such mappings in place): $(grep '^mark\|^terminated' /tmp/touch.log | tr '\n' ' ')"
fi
finish
