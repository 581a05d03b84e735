# The driver against programs and devices that misbehave on purpose
# (tools/vm/tests/hardening.c, the test device's --fault modes): each case
# is a defect the driver had, and fails without its fix.

# hardening_case ID "DEVICE FLAGS" CASE "ARGS" LABEL [VAR=VALUE...]: adds
# one case of the hardening program to the batch; extra VAR=VALUE go to
# the guest's environment (EXPECT_LOG, REFUSE_LOG).
hardening_case() {
	local id=$1 flags=$2 case=$3 args=$4 label=$5
	shift 5
	batch_case "$id" "--device-id 42 $flags" tools/vm/tests/hardening.sh 180 \
		"hardening_judge $(printf '%q ' "$id" "$label")" "CASE=$case" "ARGS=$args" "$@" "$hardening_bin"
}
hardening_judge() { # ID LABEL, after batch_run
	local log=$results/$1/console.log
	if [ "$case_status" = 0 ]; then
		record "hardening: $2" OK "$(grep -o 'PASS: .*' "$log" | tail -n 1)"
	else
		record "hardening: $2" FAIL "$(grep -o 'FAIL: .*' "$log" | head -n 1) ($log)"
	fi
}
hardening_bin=""
hardening_build() {
	hardening_bin=$(guest_program hardening tools/vm/tests/hardening.c) && return 0
	record "hardening: the test program builds" FAIL "($results/hardening.build.log)"
	return 1
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

# All cases in one boot, each with its own device (see batch_case).
t_hardening() {
	# Its cases race threads (QBUF against STREAMOFF, close against events).
	local guest_smp=2
	hardening_build || return
	hardening_case hardening-qbuf-race "--backend capture" qbuf-race 20 \
		"QBUF racing STREAMOFF/REQBUFS keeps pages held" REFUSE_LOG="dropped: Not(Queued|Held)"
	hardening_case hardening-open-close "--backend capture --fault event-flood" \
		open-close 300 "open/close while the device floods events"
	hardening_case hardening-mmap-unbind "--backend capture" mmap-unbind "" \
		"SIGBUS on a mapping of a removed device"
	hardening_case hardening-mprotect "--backend capture" mprotect "" \
		"read-only mappings stay read-only"
	hardening_case hardening-flood "--backend capture --fault event-flood" \
		flood-ioctls 10 "ioctls return under an event flood"
	hardening_case hardening-dqbuf-repeat "--backend capture --fault dqbuf-repeat" \
		stream-once 60 "a repeated DQBUF event is refused" EXPECT_LOG="dropped: NotQueued"
	hardening_case hardening-stall "--backend capture --fault silent --fault-every 4" \
		stall 300 "a silent device: EIO, then reset" EXPECT_LOG="device broken"
	hardening_case hardening-killed-close "--backend capture --fault silent --fault-every 4" \
		killed-close "" "a killed process's close is bounded in time" EXPECT_LOG="device broken"
	hardening_case hardening-signals "--backend capture --response-delay-ms 100" signals 10 \
		"open and mmap interrupted by signals"
	hardening_case hardening-big-controls "--backend capture" big-controls "" \
		"control payloads are bounded" EXPECT_LOG="control payloads of"
	hardening_case hardening-huge-count "--backend capture --fault huge-count" \
		reqbufs "4 userptr 5" "buffer counts are bounded" EXPECT_LOG="buffers beyond the driver's"
	hardening_case hardening-dup-session "--backend capture --fault dup-session" \
		dup-session "" "a duplicate session id closes nothing"
	hardening_case hardening-error-pins "--backend capture --fault error-event --fault-every 11" \
		error-pins "" "a failed session releases its pages"
	# The device answers CLOSE with ENOMEM: an answer, so no second CLOSE
	# (which could close a new session given the same id).
	hardening_case hardening-close-pins "--backend capture --fault close-error" \
		close-pins "" "a failed CLOSE's pages come back when the device is reset" \
		EXPECT_LOG="stay with the device until its reset" REFUSE_LOG="not sent"
	hardening_case hardening-bytesused "--backend capture --fault bytesused-overrun --fault-every 3" \
		bytesused 12 "DQBUF shows no plane size beyond the plane" \
		EXPECT_LOG="device reports [0-9]+ bytes used from offset"
	hardening_case hardening-kernel-status "--backend capture --fault kernel-status --fault-every 1" \
		kernel-status "" "a kernel-internal status from the device is EIO" \
		EXPECT_LOG="which is no errno a program may see"
	hardening_case hardening-unknown-format "--backend capture --fault unknown-format" \
		enum-fmt "" "a format unknown to the kernel gets a description" \
		EXPECT_LOG="with an empty string"
	# A device with no capabilities (the V4L2 core WARNs at registration:
	# device fuzz seed 7040+, boot fuzz-device-7040, round 1).
	batch_case hardening-no-caps "--device-id 42 --backend capture --fault no-caps" \
		tools/vm/tests/probe-refused.sh 60 \
		"hardening_judge hardening-no-caps $(printf '%q' 'a device with no capabilities is refused')" \
		NO_NODE=1 EXPECT_LOG="a node needs capabilities; not binding"
	batch_run hardening
	[[ hardening-signals =~ ${BATCH_CASES:-.} ]] &&
		device_left_nothing hardening-signals "interrupted opens and mmaps leave nothing on the device"
}
check_test hardening t_hardening

# Guest-backed MMAP buffers are a module parameter: a case of the
# driver-streams batch, among its guest_mmap=1 cases (tools/check/driver.sh).
hardening_guest_mmap() {
	hardening_build || return
	hardening_case hardening-huge-format "--backend capture --fault huge-format" \
		reqbufs "8 mmap 12" "guest MMAP memory is bounded" EXPECT_LOG="would exceed the"
}
