# The fuzzers (Documentation/fuzzing.rst): a hostile device
# (virtio-media-vfu --fuzz) under a guest workload, and hostile programs
# (tools/fuzz/v4l2-fuzz). make check runs a fixed, bounded amount; make fuzz
# (tools/fuzz.sh) runs the same tests longer by setting
#   DEVICE_SEEDS  device seeds in all (make check: 20), in boots of two
#                 devices and up to ROUNDS_PER_BOOT rounds (make check: 10),
#                 each round one seed per device
#   FIRST_SEED    the first device seed (make check: 1)
#   ROUND_SECONDS how long a round's programs may run (make check: 6)
#   STUCK_AFTER   seconds a killed program may take to exit (10; more to
#                 look past a known slow release)
#   IOCTL_SEED, IOCTL_RUNS (runs, one seed each), IOCTL_CALLS (calls per
#                 worker), IOCTL_SECONDS (0: no time limit), IOCTL_FAULTS
#                 (per mille of calls with fail-nth)

fuzz_device_seeds=${DEVICE_SEEDS:-20}
fuzz_first_seed=${FIRST_SEED:-1}
fuzz_round_seconds=${ROUND_SECONDS:-6}
fuzz_rounds_per_boot=${ROUNDS_PER_BOOT:-10}
fuzz_ioctl_seed=${IOCTL_SEED:-1}
fuzz_ioctl_calls=${IOCTL_CALLS:-400}
fuzz_ioctl_seconds=${IOCTL_SECONDS:-0}
fuzz_ioctl_faults=${IOCTL_FAULTS:-100}
fuzz_bin=$BUILD_DIR/tests/v4l2-fuzz

# The mutations devices made, by kind, from their logs on stdin:
# "RespField 12, ...".
fuzz_mutations() {
	grep -o 'fuzz: round [0-9]* [A-Za-z]*:' | awk '{ n[$4]++ } END {
		for (k in n) { printf "%s%s %d", sep, substr(k, 1, length(k) - 1), n[k]; sep = ", " } }'
}

# fuzz_device NAME "FLAGS0" "FLAGS1" FIRST_SEED ROUNDS: one guest with two
# hostile devices, ROUNDS rounds; device 0 plays seeds FIRST_SEED...,
# device 1 the ROUNDS seeds after those. Each round loads the driver, runs
# the workload of tests/fuzz-device.sh on both nodes and unloads it.
fuzz_device() {
	# Several programs and threads race each other on the nodes.
	local guest_smp=2
	local name=$1 flags0=$2 flags1=$3 seed=$4 rounds=$5 status label
	local dir=$results/$1 seed1=$(($4 + $5)) last=$(($4 + 2 * $5 - 1))
	local backends
	backends=$(for f in "$flags0" "$flags1"; do set -- $f; echo "${2:-capture}"; done | paste -sd,)
	label="fuzz: device seeds $seed-$last ($flags0; $flags1)"
	label=${label//--backend /}
	if ! need module || ! need vfu; then
		record "$label" FAIL "(no module or no device build)"
		return
	fi
	guest "$name" --ko "$ko" --file tools/vm/tests/memory-lib.sh \
		--vfu "$flags0 --fuzz $seed" --vfu "$flags1 --fuzz $seed1" \
		--env ROUNDS="$rounds" --env ROUND_SECONDS="$fuzz_round_seconds" --env BACKENDS="$backends" \
		--env COMPLIANCE_EVERY=2 --env GUEST_MMAP_EVERY=2 --env STUCK_AFTER="${STUCK_AFTER:-10}" \
		--test tools/vm/tests/fuzz-device.sh --timeout $((rounds * (fuzz_round_seconds + 75) + 180))
	status=$?
	local ok bad played0 played1 failed_seeds
	ok=$(grep -c '^OK round' "$dir/fuzz-rounds.txt" 2>/dev/null)
	bad=$(grep -c '^FAIL round' "$dir/fuzz-rounds.txt" 2>/dev/null)
	played0=$(grep -c 'fuzz: round [0-9]* seed' "$dir/vfu.log" 2>/dev/null)
	played1=$(grep -c 'fuzz: round [0-9]* seed' "$dir/vfu1.log" 2>/dev/null)
	failed_seeds=$(sed -n 's/^FAIL round \([0-9]*\).*/\1/p' "$dir/fuzz-rounds.txt" 2>/dev/null |
		awk -v a="$seed" -v b="$seed1" '{ printf "%s%d+%d", sep, a + $1, b + $1; sep = " " }')
	local detail="${ok:-0} of $rounds rounds passed; mutations: $(cat "$dir/vfu.log" "$dir/vfu1.log" 2>/dev/null | fuzz_mutations)"
	if [ "$status" = 0 ] && [ "${ok:-0}" = "$rounds" ] && [ "${played0:-0}" -ge "$rounds" ] &&
		[ "${played1:-0}" -ge "$rounds" ]; then
		record "$label" OK "$detail"
	else
		record "$label" FAIL "status $status, ${bad:-0} rounds failed${failed_seeds:+ (seeds $failed_seeds)}, devices played ${played0:-0}+${played1:-0} rounds; $detail ($dir/console.log)"
	fi
}

# build_v4l2_fuzz: the static ioctl fuzzer, against the kernel's UAPI headers.
build_v4l2_fuzz() {
	need headers || return 1
	mkdir -p "$(dirname "$fuzz_bin")"
	gcc -O2 -static -pthread -Wall -Wextra -Werror -I"$V4L2R_VIDEODEV2_H_PATH" -o "$fuzz_bin" \
		tools/fuzz/v4l2-fuzz.c tools/fuzz/v4l2-args.c > "$results/v4l2-fuzz.build.log" 2>&1
}

# fuzz_ioctl NAME SEED: v4l2-fuzz against a capture and an m2m device (two
# nodes), with fault injection, then the driver unloaded.
fuzz_ioctl() {
	local guest_smp=2 # its workers race each other
	local name=$1 seed=$2 dir=$results/$1 label status totals
	label="fuzz: ioctl seed $seed, 2 x 3 workers x $fuzz_ioctl_calls calls"
	[ "$fuzz_ioctl_seconds" -gt 0 ] && label="$label or ${fuzz_ioctl_seconds} s"
	if ! need module || ! need vfu || ! build_v4l2_fuzz; then
		record "$label" FAIL "(no module, device or fuzzer build: $results/v4l2-fuzz.build.log)"
		return
	fi
	local timeout=$((fuzz_ioctl_seconds > 0 ? fuzz_ioctl_seconds + 400 : 900 + fuzz_ioctl_calls))
	guest "$name" --ko "$ko" --file tools/vm/tests/memory-lib.sh --file "$fuzz_bin" --modules virtio_media \
		--vfu "--backend capture" --vfu "--backend m2m" \
		--env SEED="$seed" --env CALLS="$fuzz_ioctl_calls" --env SECONDS_LIMIT="$fuzz_ioctl_seconds" \
		--env PROCS=2 --env THREADS=3 --env FAULTS="$fuzz_ioctl_faults" \
		--test tools/vm/tests/fuzz-ioctl.sh --timeout "$timeout"
	status=$?
	totals=$(grep -m 1 '^v4l2-fuzz: [0-9]* calls in' "$dir/v4l2-fuzz.log" 2>/dev/null | cut -d: -f2 | cut -d, -f1)
	totals="$totals; $(grep -m 1 'faults armed' "$dir/v4l2-fuzz.log" 2>/dev/null | sed 's/^v4l2-fuzz: //')"
	if [ "$status" = 0 ] && grep -q '^PASS' "$dir/console.log"; then
		record "$label" OK "$totals"
	else
		record "$label" FAIL "status $status: $(grep -m 1 -E '^(FAIL|HANG)' "$dir/console.log")${totals:+; $totals} ($dir/console.log)"
	fi
}

# The device seeds, cut into boots (test fuzz-device-FIRSTSEED each) of two
# devices each, in turn: capture and m2m without shared memory (every MMAP
# buffer guest-backed); output and m2m; capture without shared memory and
# the virtio-media crate's simple device.
fuzz_pairs=("--backend capture" "--backend m2m --no-shm" "--backend output" "--backend m2m"
	"--backend capture --no-shm" "--backend simple")
# DEVICE_PAIRS (e.g. 1,2) picks the pairs to cycle through.
IFS=, read -ra fuzz_pair_list <<< "${DEVICE_PAIRS:-0,1,2}"
fuzz_seed=$fuzz_first_seed fuzz_left=$fuzz_device_seeds fuzz_boot=0
while [ "$fuzz_left" -gt 0 ]; do
	fuzz_n=$(((fuzz_left + 1) / 2))
	[ "$fuzz_n" -gt "$fuzz_rounds_per_boot" ] && fuzz_n=$fuzz_rounds_per_boot
	fuzz_pair=${fuzz_pair_list[fuzz_boot % ${#fuzz_pair_list[@]}]}
	check_test "fuzz-device-$fuzz_seed" fuzz_device "fuzz-device-$fuzz_seed" "${fuzz_pairs[fuzz_pair * 2]}" \
		"${fuzz_pairs[fuzz_pair * 2 + 1]}" "$fuzz_seed" "$fuzz_n"
	fuzz_seed=$((fuzz_seed + 2 * fuzz_n)) fuzz_left=$((fuzz_left - 2 * fuzz_n)) fuzz_boot=$((fuzz_boot + 1))
done
# The ioctl fuzzer, IOCTL_RUNS runs from IOCTL_SEED (test fuzz-ioctl-SEED).
for ((fuzz_i = 0; fuzz_i < ${IOCTL_RUNS:-1}; fuzz_i++)); do
	check_test "fuzz-ioctl-$((fuzz_ioctl_seed + fuzz_i))" fuzz_ioctl "fuzz-ioctl-$((fuzz_ioctl_seed + fuzz_i))" \
		"$((fuzz_ioctl_seed + fuzz_i))"
done
