# Guest test: the ioctl fuzzer (tools/fuzz/v4l2-fuzz, in /extra) against
# every video node of the driver, then the driver unloaded.
# Passes when v4l2-fuzz reports no stuck call and no dead worker, the module
# unloads, and the pinned-page count is back to where it was before, exactly,
# and unreclaimable slab within SLAB_TOLERANCE_KIB of where it was after a
# short warm-up run. Pins still held once the
# fuzzer's files are all closed (before the unload) are reported.
# Variables (test.env): SEED, CALLS (per worker), SECONDS_LIMIT (0: none),
# PROCS, THREADS, FAULTS (per mille of calls with fail-nth), LIMIT (s a
# call may take), INTERRUPT_MS (when a long call gets SIGUSR1; 0: never),
# SLAB_TOLERANCE_KIB.
. /test.env
seed=${SEED:-1}
calls=${CALLS:-1000}
seconds=${SECONDS_LIMIT:-0}
procs=${PROCS:-2}
threads=${THREADS:-3}
faults=${FAULTS:-100}
limit=${LIMIT:-15}
interrupt=${INTERRUPT_MS:-2000}
slab_tolerance=${SLAB_TOLERANCE_KIB:-1024}

. /extra/memory-lib.sh # pins, slab

# A task killed by a signal it did not handle leaves the kernel's account
# of it (the signal, the registers) in the log (F3 in
# Documentation/fuzzing.rst).
echo 1 > /proc/sys/kernel/print-fatal-signals

nodes=$(for d in /sys/bus/virtio/drivers/virtio_media/virtio*/video4linux/*; do
	[ -e "$d" ] && echo "/dev/${d##*/}"; done)
[ -n "$nodes" ] || { echo "FAIL: no video node of the driver"; exit 1; }
echo "nodes: $(echo $nodes)"
# A short run first: what the driver and the V4L2 core allocate once is
# not a leak.
/extra/v4l2-fuzz -s 0 -n 50 -p 1 -j 2 $nodes > /dev/null 2>&1
pins0=$(pins) slab0=$(slab)
status=0
# The fuzzer's own limit is LIMIT s per call; this one only catches a
# fuzzer that cannot end at all.
total_limit=$((seconds > 0 ? seconds + limit + 120 : 3600))
timeout -s KILL $total_limit /extra/v4l2-fuzz -s "$seed" -n "$calls" -t "$seconds" -p "$procs" -j "$threads" \
	-f "$faults" -l "$limit" -i "$interrupt" $nodes > /tmp/v4l2-fuzz.log 2>&1
rc=$?
cat /tmp/v4l2-fuzz.log
export_file v4l2-fuzz.log /tmp/v4l2-fuzz.log
case $rc in
0) ;;
137) echo "FAIL: v4l2-fuzz did not end within $total_limit s"; status=1 ;;
*) echo "FAIL: v4l2-fuzz exited with $rc"; status=1 ;;
esac
# Forked children of a worker that died outlive the run, with its files
# open: wait for them (each makes a few dozen calls), then kill them.
left=0
while pidof v4l2-fuzz > /dev/null && [ $left -lt 60 ]; do
	sleep 1
	left=$((left + 1))
done
if pidof v4l2-fuzz > /dev/null; then
	echo "FAIL: fuzzer processes $(pidof v4l2-fuzz) still running 60 s after the run; killed"
	kill -9 $(pidof v4l2-fuzz)
	status=1
fi
# Give processes killed above time to be reaped before counting.
sleep 1
pins1=$(pins)
[ "$pins1" = "$pins0" ] || echo "NOTE: $((pins1 - pins0)) pages still pinned with every file closed"
if ! timeout 60 rmmod virtio_media; then
	echo "FAIL: rmmod virtio_media failed"
	status=1
fi
pins2=$(pins) slab2=$(slab)
echo "pinned pages: $pins0 before, $pins1 with the files closed, $pins2 after rmmod; slab $slab0 -> $slab2 KiB"
if [ "$pins2" != "$pins0" ]; then
	echo "FAIL: $((pins2 - pins0)) pages still pinned after rmmod"
	status=1
fi
if [ $((slab2 - slab0)) -gt "$slab_tolerance" ]; then
	echo "FAIL: unreclaimable slab grew by $((slab2 - slab0)) KiB"
	status=1
fi
[ $status = 0 ] && echo "PASS: v4l2-fuzz seed $seed"
exit $status
