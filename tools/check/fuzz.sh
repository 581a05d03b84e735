# The fuzzers (Documentation/fuzzing.rst): a hostile device
# (virtio-media-vfu --fuzz) under a guest workload, and hostile programs
# (tools/fuzz/v4l2-fuzz). make check runs a fixed, bounded amount; make fuzz
# (tools/fuzz.sh) runs the same tests longer by setting
#   DEVICE_SEEDS  device seeds in all (make check: 20), in boots of up to
#                 ROUNDS_PER_BOOT rounds, one seed per round
#   FIRST_SEED    the first device seed (make check: 1)
#   ROUND_SECONDS how long a round's programs may run (make check: 8)
#   IOCTL_SEED, IOCTL_RUNS (runs, one seed each), IOCTL_CALLS (calls per
#                 worker), IOCTL_SECONDS (0: no time limit), IOCTL_FAULTS
#                 (per mille of calls with fail-nth)

fuzz_device_seeds=${DEVICE_SEEDS:-20}
fuzz_first_seed=${FIRST_SEED:-1}
fuzz_round_seconds=${ROUND_SECONDS:-8}
fuzz_rounds_per_boot=${ROUNDS_PER_BOOT:-12}
fuzz_ioctl_seed=${IOCTL_SEED:-1}
fuzz_ioctl_calls=${IOCTL_CALLS:-600}
fuzz_ioctl_seconds=${IOCTL_SECONDS:-0}
fuzz_ioctl_faults=${IOCTL_FAULTS:-100}
fuzz_bin=$BUILD_DIR/tests/v4l2-fuzz

# The mutations a device made, by kind, from its log: "RespField 12, ...".
fuzz_mutations() {
	grep -o 'fuzz: round [0-9]* [A-Za-z]*:' "$1" 2>/dev/null | awk '{ n[$4]++ } END {
		for (k in n) printf "%s%s %d", sep, substr(k, 1, length(k) - 1), n[k]; sep = ", " }'
}

# fuzz_device NAME BACKEND "DEVICE FLAGS" FIRST_SEED ROUNDS: one guest, one
# hostile device, ROUNDS rounds (seeds FIRST_SEED...); each round loads the
# driver, runs the workload of tests/fuzz-device.sh and unloads it.
fuzz_device() {
	local name=$1 backend=$2 flags=$3 seed=$4 rounds=$5 status label
	local dir=$results/$1 last=$(($4 + $5 - 1))
	label="fuzz: device seeds $seed-$last, $backend"
	if ! need module || ! need vfu; then
		record "$label" FAIL "(no module or no device build)"
		return
	fi
	guest "$name" --ko "$ko" --vfu "$flags --fuzz $seed" \
		--env ROUNDS="$rounds" --env ROUND_SECONDS="$fuzz_round_seconds" --env BACKEND="$backend" \
		--env COMPLIANCE_EVERY=2 --env GUEST_MMAP_EVERY=2 \
		--test tools/vm/tests/fuzz-device.sh --timeout $((rounds * (fuzz_round_seconds + 75) + 120))
	status=$?
	local ok bad played failed_seeds
	ok=$(grep -c '^OK round' "$dir/fuzz-rounds.txt" 2>/dev/null)
	bad=$(grep -c '^FAIL round' "$dir/fuzz-rounds.txt" 2>/dev/null)
	played=$(grep -c 'fuzz: round [0-9]* seed' "$dir/vfu.log" 2>/dev/null)
	failed_seeds=$(sed -n 's/^FAIL round \([0-9]*\).*/\1/p' "$dir/fuzz-rounds.txt" 2>/dev/null |
		awk -v s="$seed" '{ printf "%s%d", sep, s + $1; sep = " " }')
	local detail="${ok:-0} of $rounds rounds passed; mutations: $(fuzz_mutations "$dir/vfu.log")"
	if [ "$status" = 0 ] && [ "${ok:-0}" = "$rounds" ] && [ "${played:-0}" -ge "$rounds" ]; then
		record "$label" OK "$detail"
	else
		record "$label" FAIL "status $status, ${bad:-0} failed${failed_seeds:+ (seeds $failed_seeds)}, device played ${played:-0} rounds; $detail ($dir/console.log)"
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
	local name=$1 seed=$2 dir=$results/$1 label status summary
	label="fuzz: ioctl seed $seed, 2 x 3 workers x $fuzz_ioctl_calls calls"
	[ "$fuzz_ioctl_seconds" -gt 0 ] && label="$label or ${fuzz_ioctl_seconds} s"
	if ! need module || ! need vfu || ! build_v4l2_fuzz; then
		record "$label" FAIL "(no module, device or fuzzer build: $results/v4l2-fuzz.build.log)"
		return
	fi
	local timeout=$((fuzz_ioctl_seconds > 0 ? fuzz_ioctl_seconds + 400 : 900 + fuzz_ioctl_calls))
	guest "$name" --ko "$ko" --file "$fuzz_bin" --modules virtio_media \
		--vfu "--backend capture" --vfu "--backend m2m" \
		--env SEED="$seed" --env CALLS="$fuzz_ioctl_calls" --env SECONDS_LIMIT="$fuzz_ioctl_seconds" \
		--env PROCS=2 --env THREADS=3 --env FAULTS="$fuzz_ioctl_faults" \
		--test tools/vm/tests/fuzz-ioctl.sh --timeout "$timeout"
	status=$?
	summary=$(grep -m 1 '^v4l2-fuzz: [0-9]* calls in' "$dir/v4l2-fuzz.log" 2>/dev/null | cut -d: -f2 | cut -d, -f1)
	summary="$summary; $(grep -m 1 'faults armed' "$dir/v4l2-fuzz.log" 2>/dev/null | sed 's/^v4l2-fuzz: //')"
	if [ "$status" = 0 ] && grep -q '^PASS' "$dir/console.log"; then
		record "$label" OK "$summary"
	else
		record "$label" FAIL "status $status: $(grep -m 1 -E '^(FAIL|HANG)' "$dir/console.log")${summary:+; $summary} ($dir/console.log)"
	fi
}

# The device seeds, cut into boots (test fuzz-device-FIRSTSEED each):
# capture, m2m without shared memory (guest-backed MMAP), output, in turn.
fuzz_backends=(capture m2m output)
fuzz_flags=("--backend capture" "--backend m2m --no-shm" "--backend output")
fuzz_seed=$fuzz_first_seed fuzz_left=$fuzz_device_seeds fuzz_boot=0
while [ "$fuzz_left" -gt 0 ]; do
	fuzz_n=$((fuzz_left < fuzz_rounds_per_boot ? fuzz_left : fuzz_rounds_per_boot))
	check_test "fuzz-device-$fuzz_seed" fuzz_device "fuzz-device-$fuzz_seed" "${fuzz_backends[fuzz_boot % 3]}" \
		"${fuzz_flags[fuzz_boot % 3]}" "$fuzz_seed" "$fuzz_n"
	fuzz_seed=$((fuzz_seed + fuzz_n)) fuzz_left=$((fuzz_left - fuzz_n)) fuzz_boot=$((fuzz_boot + 1))
done
# The ioctl fuzzer, IOCTL_RUNS runs from IOCTL_SEED (test fuzz-ioctl-SEED).
for ((fuzz_i = 0; fuzz_i < ${IOCTL_RUNS:-1}; fuzz_i++)); do
	check_test "fuzz-ioctl-$((fuzz_ioctl_seed + fuzz_i))" fuzz_ioctl "fuzz-ioctl-$((fuzz_ioctl_seed + fuzz_i))" \
		"$((fuzz_ioctl_seed + fuzz_i))"
done
