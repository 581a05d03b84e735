# Reference: vivid under v4l2-compliance -s proves the guest user space.

t_vivid() {
	local status f totals nfail node
	guest vivid --test tools/vm/tests/vivid-compliance.sh --timeout 600
	status=$?
	for f in "$results"/vivid/compliance-*.log; do
		[ -f "$f" ] || continue
		totals=$(grep '^Total for' "$f" | tail -n 1)
		nfail=$(echo "$totals" | sed -n 's/.*Failed: \([0-9]*\).*/\1/p')
		node=$(basename "$f" .log)
		if [ -n "$totals" ] && [ "$nfail" = 0 ]; then
			record "vivid: v4l2-compliance -s ${node#compliance-}" OK "$totals"
		else
			record "vivid: v4l2-compliance -s ${node#compliance-}" FAIL "${totals:-no totals} ($f)"
		fi
	done
	[ "$status" = 0 ] || record "vivid: guest run" FAIL "status $status ($results/vivid.run.log)"
}
check_test vivid t_vivid
