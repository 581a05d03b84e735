# Guest test: 1000 USERPTR life cycles (REQBUFS / QBUF / STREAMON / DQBUF /
# STREAMOFF / REQBUFS(0)); the pinned-page and memory counters must come
# back to where they started.
. /test.env
. /extra/memory-lib.sh
dev=${VIDEO:-/dev/video0}
cycles=${CYCLES:-1000}
acquired() { awk '/^nr_foll_pin_acquired/ { print $2 }' /proc/vmstat; }
kib() { # used memory in KiB: MemTotal - MemFree, caches dropped
	sync; echo 3 > /proc/sys/vm/drop_caches
	awk '/^MemTotal/ { t = $2 } /^MemFree/ { f = $2 } END { print t - f }' /proc/meminfo
}
grep -q nr_foll_pin_acquired /proc/vmstat || { echo "FAIL: no nr_foll_pin counters"; exit 1; }
# One short run first, so one-time allocations do not count as leaks.
/extra/userptr-cycles $dev 5 || { echo "FAIL: warm-up run"; exit 1; }
pins0=$(pins) acq0=$(acquired) mem0=$(kib) slab0=$(slab)
cp /proc/meminfo /tmp/meminfo0
echo "before: pinned pages $pins0, used memory $mem0 KiB, unreclaimable slab $slab0 KiB"
/extra/userptr-cycles $dev "$cycles" || { echo "FAIL: userptr-cycles"; exit 1; }
pins1=$(pins) acq1=$(acquired) mem1=$(kib) slab1=$(slab)
cp /proc/meminfo /tmp/meminfo1
echo "after: pinned pages $pins1, used memory $mem1 KiB, unreclaimable slab $slab1 KiB"
echo "pages pinned during the run: $((acq1 - acq0))"
status=0
if [ "$pins1" != "$pins0" ]; then
	echo "FAIL: $((pins1 - pins0)) pages still pinned"; status=1
fi
if [ $((acq1 - acq0)) -lt "$cycles" ]; then
	echo "FAIL: only $((acq1 - acq0)) pages pinned in $cycles cycles"; status=1
fi
# A leaked page per buffer would be 4 KiB x 4 buffers x cycles: fail above
# half of that. Used memory moves by several MiB over this run without
# pins or slab moving (-10 MiB to +4 MiB on the debug kernel on
# 2026-12-03; which counters move is not known yet, the meminfo line below
# says), so the 1 MiB of before failed on noise, not on a leak.
limit=$((cycles * 8))
if [ $((mem1 - mem0)) -gt "$limit" ]; then
	echo "FAIL: used memory grew by $((mem1 - mem0)) KiB (limit $limit KiB)"; status=1
fi
echo "meminfo, after - before (KiB):$(awk 'NR == FNR { b[$1] = $2; next }
	$1 in b && $2 != b[$1] { printf " %s %+d", $1, $2 - b[$1] }' /tmp/meminfo0 /tmp/meminfo1)"
# A leak of even 64 bytes per buffer would be 256 KiB over the run.
if [ $((slab1 - slab0)) -gt 256 ]; then
	echo "FAIL: unreclaimable slab grew by $((slab1 - slab0)) KiB"; status=1
fi
# Kernel reports (WARNING, BUG, kmemleak after the run) are judged by
# make check (guest-report.sh); a bare "leak" also matched kmemleak's boot
# line ("Kernel memory leak detector initialized").
if dmesg | grep -E "WARNING:|BUG:"; then
	echo "FAIL: the kernel reported a problem"; status=1
fi
[ $status = 0 ] && echo "PASS: pins back to $pins0, memory $mem0 -> $mem1 KiB, slab $slab0 -> $slab1 KiB"
exit $status
