# The module's KUnit suites, run in the guest when it loads: a case of the
# driver-compliance batch (tools/check/driver.sh) hands the kernel log over.

kunit_case() {
	batch_case kunit "--device-id 42 --backend capture" tools/vm/tests/kunit.sh 60 kunit_judge
}
kunit_judge() {
	local parsed=$results/kunit/kunit-parse.log line p f c
	if [ -f "$results/kunit/dmesg.log" ]; then
		# Only the module's KTAP output: the kernel's own suites ran at boot.
		sed -n '/virtio_media: loading/,$p' "$results/kunit/dmesg.log" > "$results/kunit/module-ktap.log"
		python3 "$KDIR/tools/testing/kunit/kunit.py" parse "$results/kunit/module-ktap.log" \
			> "$parsed" 2>&1
	else
		echo "no dmesg from the guest (case status $case_status)" > "$parsed"
	fi
	line=$(grep -o 'Ran [0-9]* tests.*' "$parsed" | tail -n 1)
	p=$(echo "$line" | sed -n 's/.*passed: \([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*failed: \([0-9]*\).*/\1/p')
	c=$(echo "$line" | sed -n 's/.*crashed: \([0-9]*\).*/\1/p')
	f=$(( ${f:-0} + ${c:-0} ))
	[ "$case_status" = 0 ] || f=$((f + 1))
	record_counts "kunit: module suites in the guest" "${p:-0}" "$f" "($parsed)"
}
