# Reference: vivid under v4l2-compliance -s proves the guest user space; a
# case of the driver-streams batch (tools/check/driver.sh), whose
# devices it leaves alone.

vivid_case() {
	batch_case vivid "--device-id 42 --backend capture" tools/vm/tests/vivid-compliance.sh 500 vivid_judge
}
vivid_judge() {
	local f totals nfail node seen=0
	for f in "$results"/vivid/compliance-*.log; do
		[ -f "$f" ] || continue
		seen=$((seen + 1))
		totals=$(grep '^Total for' "$f" | tail -n 1)
		nfail=$(echo "$totals" | sed -n 's/.*Failed: \([0-9]*\).*/\1/p')
		node=$(basename "$f" .log)
		if [ -n "$totals" ] && [ "$nfail" = 0 ]; then
			record "vivid: v4l2-compliance -s ${node#compliance-}" OK "$totals"
		else
			record "vivid: v4l2-compliance -s ${node#compliance-}" FAIL "${totals:-no totals} ($f)"
		fi
	done
	[ "$case_status" = 0 ] && [ "$seen" = 1 ] ||
		record "vivid: guest run" FAIL "status $case_status, $seen logs ($results/vivid/console.log)"
}
