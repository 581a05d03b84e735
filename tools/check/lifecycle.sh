# Life-cycle tests of the driver: the module loaded and unloaded again and
# again, devices unbound while used, a device whose process dies, devices
# unplugged and plugged in (QMP, through run-guest.sh --host-actions), and
# system sleep. The guest tests are tools/vm/tests/lifecycle-*.sh; each
# prints "RESULT KEY OK|FAIL DETAIL" lines, recorded here one by one.
#
# LIFECYCLE_CYCLES sets the number of insmod and unbind cycles: 10 by
# default, to keep make check short; long runs use 200
# (LIFECYCLE_CYCLES=200 make check T=lifecycle).

lifecycle_cycles=${LIFECYCLE_CYCLES:-10}
# A cycle takes about 3 to 5 s; the guest's limit grows with the count.

# lifecycle_guest NAME TEST "KEY=LABEL;..." [run-guest.sh ARGS...]: one guest
# run of tools/vm/tests/TEST with the module and lifecycle-probe; records
# one line for each KEY, a FAIL for a KEY the test did not report.
lifecycle_guest() {
	local name=$1 test=$2 keys=$3 status pair key label line verdict lifecycle_probe qemu_abort=""
	shift 3
	if need module && need vfu && lifecycle_probe=$(guest_program lifecycle-probe tools/vm/tests/lifecycle-probe.c); then
		# KUnit off: the module's suites would run at every insmod.
		set -- --ko "$ko" --file tools/vm/tests/lifecycle-lib.sh --file tools/vm/tests/memory-lib.sh \
			--file "$lifecycle_probe" --modules virtio_media \
			--test "tools/vm/tests/$test" --timeout $((600 + 8 * lifecycle_cycles)) "$@"
		guest "$name" "$@"
		status=$?
		# QEMU 11.1.3 itself sometimes aborts when a vfio-user device's
		# process dies ("error_setv: Assertion `*errp == NULL' failed"):
		# the guest is gone and there is nothing to judge. Run once more,
		# and say so on every line.
		qemu_abort=$(grep -m 1 'Assertion .* failed' "$results/$name/qemu.log" 2> /dev/null)
		if [ -n "$qemu_abort" ]; then
			rm -rf "${results:?}/$name.qemu-abort"
			mv "$results/$name" "$results/$name.qemu-abort"
			guest "$name" "$@"
			status=$?
			qemu_abort=" (second run: QEMU aborted in the first, $qemu_abort; $results/$name.qemu-abort)"
		fi
	else
		status="no module, device or lifecycle-probe (see $results)"
	fi
	while [ -n "$keys" ]; do
		pair=${keys%%;*}
		[ "$pair" = "$keys" ] && keys="" || keys=${keys#*;}
		key=${pair%%=*} label=${pair#*=}
		line=$(grep -ao "RESULT $key \(OK\|FAIL\) .*" "$results/$name/console.log" 2> /dev/null | tail -n 1)
		verdict=$(echo "$line" | cut -d' ' -f3)
		if [ -n "$line" ]; then
			record "lifecycle: $label" "$verdict" "$(echo "$line" | cut -d' ' -f4-)$qemu_abort"
		else
			record "lifecycle: $label" FAIL "no result (guest status $status; $results/$name/console.log)"
		fi
	done
}

# The insmod cycles, then the unbind cycles while a program streams, in
# one boot (tools/vm/tests/lifecycle-cycles.sh).
t_lifecycle_cycles() {
	lifecycle_guest lifecycle-cycles lifecycle-cycles.sh \
		"insmod-cycles=$lifecycle_cycles x insmod, stream, rmmod;unbind-cycles=$lifecycle_cycles x unbind, bind while streaming" \
		--file tools/vm/tests/lifecycle-insmod.sh --file tools/vm/tests/lifecycle-unbind.sh \
		--vfu "--device-id 42 --backend capture" --env "CYCLES=$lifecycle_cycles"
}
check_test lifecycle-cycles t_lifecycle_cycles

t_lifecycle_kill_device() {
	# The virtio core's complaint that a dead device was not reset (see
	# lifecycle-kill-device.sh) is expected; any other report counts.
	REPORT_ALLOW='WARNING: .*drivers/virtio/virtio\.c:[0-9]+ .*virtio_dev_remove\+' lifecycle_guest lifecycle-kill-device lifecycle-kill-device.sh \
		"kill-device-error=device killed: the program gets an error;kill-device-new=device killed: a new device streams;kill-device-unbind=device killed: the dead device unbinds" \
		--host-actions --vfu "--device-id 42 --backend capture"
}
check_test lifecycle-kill-device t_lifecycle_kill_device

t_lifecycle_device_del() {
	lifecycle_guest lifecycle-device-del lifecycle-device-del.sh \
		"device-del-stream=device_del: streaming program gets ENODEV;device-del-sigbus=device_del: SIGBUS on its mapped buffers;device-add-stream=device_del: device_add, new device streams" \
		--hotplug --vfu "--device-id 42 --backend capture" --vfu "--device-id 42 --backend capture"
}
check_test lifecycle-device-del t_lifecycle_device_del

t_lifecycle_suspend() {
	lifecycle_guest lifecycle-suspend lifecycle-suspend.sh \
		"suspend-resume=suspend to idle and resume;suspend-streamer=suspend: streaming program goes on or fails;suspend-session=suspend: open session answers;suspend-new=suspend: new session streams" \
		--host-actions --vfu "--device-id 42 --backend capture"
}
check_test lifecycle-suspend t_lifecycle_suspend
