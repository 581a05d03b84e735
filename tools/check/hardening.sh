# The driver against programs and devices that misbehave on purpose
# (tools/vm/tests/hardening.c, the test device's --fault modes): each case
# is a defect the driver had, and fails without its fix.

# hardening_case ID "DEVICE FLAGS" CASE "ARGS" LABEL [VAR=VALUE...]: runs one
# case of the hardening program in a guest; extra VAR=VALUE go to the
# guest's environment (EXPECT_LOG, REFUSE_LOG) or, for MODULE=..., to the
# driver's parameters.
hardening_case() {
	local id=$1 flags=$2 case=$3 args=$4 label=$5 bin envs=() extra
	shift 5
	# No stale results of an earlier run may count for this one.
	rm -rf "${results:?}/$id"
	for extra in "$@"; do
		case "$extra" in
		MODULE=*) module_params=${extra#MODULE=} ;;
		*) envs+=(--env "$extra") ;;
		esac
	done
	if ! bin=$(guest_program hardening tools/vm/tests/hardening.c); then
		record "hardening: $label" FAIL "($results/hardening.build.log)"
		module_params=""
		return
	fi
	need module && need vfu || { record "hardening: $label" FAIL "(no module or device)"; return; }
	guest "$id" --ko "$ko" --ko "$bin" --modules virtio_media --vfu "--device-id 42 $flags" \
		--append "$module_params" --env "CASE=$case" --env "ARGS=$args" "${envs[@]}" \
		--test tools/vm/tests/hardening.sh --timeout "${GUEST_TIMEOUT:-600}"
	local status=$? log=$results/$id/console.log
	module_params=""
	if [ "$status" = 0 ]; then
		record "hardening: $label" OK "$(grep -o 'PASS: .*' "$log" | tail -n 1)"
	else
		record "hardening: $label" FAIL "$(grep -o 'FAIL: .*' "$log" | head -n 1) ($log)"
	fi
}

# The device's own account, at every reset (the driver's unbind causes
# one, QEMU's shutdown another), of what the guest left open on it: each
# must find nothing.
device_left_nothing() { # ID LABEL
	local log=$results/$1/vfu.log resets left
	resets=$(grep -c 'device reset: ' "$log" 2>/dev/null)
	left=$(grep -o 'device reset: .*' "$log" 2>/dev/null | grep -v '^device reset: 0 sessions open, 0 MMAP buffers' | head -n 1)
	if [ "${resets:-0}" -gt 0 ] && [ -z "$left" ]; then
		record "hardening: $2" OK "$resets resets, each with 0 sessions and 0 MMAP buffers open"
	else
		record "hardening: $2" FAIL "${left:-no reset logged} ($log)"
	fi
}

check_test hardening-qbuf-race hardening_case hardening-qbuf-race "--backend capture" qbuf-race 20 \
	"QBUF racing STREAMOFF/REQBUFS keeps pages held" REFUSE_LOG="dropped: Not(Queued|Held)"
check_test hardening-open-close hardening_case hardening-open-close "--backend capture --fault event-flood" \
	open-close 300 "open/close while the device floods events"
check_test hardening-mmap-unbind hardening_case hardening-mmap-unbind "--backend capture" mmap-unbind "" \
	"SIGBUS on a mapping of a removed device"
check_test hardening-mprotect hardening_case hardening-mprotect "--backend capture" mprotect "" \
	"read-only mappings stay read-only"
check_test hardening-flood hardening_case hardening-flood "--backend capture --fault event-flood" \
	flood-ioctls 10 "ioctls return under an event flood"
check_test hardening-dqbuf-repeat hardening_case hardening-dqbuf-repeat "--backend capture --fault dqbuf-repeat" \
	stream-once 60 "a repeated DQBUF event is refused" EXPECT_LOG="dropped: NotQueued"
check_test hardening-stall hardening_case hardening-stall "--backend capture --fault silent --fault-every 4" \
	stall 300 "a silent device: EIO, then reset" EXPECT_LOG="device broken"
check_test hardening-killed-close hardening_case hardening-killed-close \
	"--backend capture --fault silent --fault-every 4" killed-close "" \
	"a killed process's close is bounded in time" EXPECT_LOG="device broken"
t_hardening_signals() {
	hardening_case hardening-signals "--backend capture --response-delay-ms 100" signals 10 \
		"open and mmap interrupted by signals"
	device_left_nothing hardening-signals "interrupted opens and mmaps leave nothing on the device"
}
check_test hardening-signals t_hardening_signals
check_test hardening-big-controls hardening_case hardening-big-controls "--backend capture" big-controls "" \
	"control payloads are bounded" EXPECT_LOG="control payloads of"
check_test hardening-huge-format hardening_case hardening-huge-format "--backend capture --fault huge-format" \
	reqbufs "8 mmap 12" "guest MMAP memory is bounded" MODULE=virtio_media.guest_mmap=1 \
	EXPECT_LOG="would exceed the"
check_test hardening-huge-count hardening_case hardening-huge-count "--backend capture --fault huge-count" \
	reqbufs "4 userptr 5" "buffer counts are bounded" EXPECT_LOG="buffers beyond the driver's"
check_test hardening-dup-session hardening_case hardening-dup-session "--backend capture --fault dup-session" \
	dup-session "" "a duplicate session id closes nothing"
check_test hardening-error-pins hardening_case hardening-error-pins \
	"--backend capture --fault error-event --fault-every 11" error-pins "" \
	"a failed session releases its pages"
check_test hardening-close-pins hardening_case hardening-close-pins "--backend capture --fault close-error" \
	close-pins "" "a failed CLOSE's pages come back when the device is reset" \
	EXPECT_LOG="stay with the device until its reset"
