# Guest side of make bench-c (tools/bench/bench-c.sh): our driver against
# the C driver (chromeos/virtio-media) in one boot. Two test devices with
# the same backend and no delay: virtio ID 48 and ID 42. The C driver
# (/extra/virtio_media_c.ko) binds ID 48 only, so it is loaded first and
# takes that device; ours then probes the one left, ID 42. The same
# /extra/v4l2-bench runs against both nodes, ours and C's in turn (who goes
# first alternates by round), BENCH_RUNS rounds; each run appends one JSON
# line tagged with its driver to bench-c.jsonl, exported after every round
# so that a crash keeps the rounds before it.
. /test.env
runs=${BENCH_RUNS:-5}
secs=${BENCH_SECONDS:-1}
stream_secs=${BENCH_STREAM_SECONDS:-2}
count=${BENCH_COUNT:-200}
bench=/extra/v4l2-bench
out=/tmp/bench-c.jsonl
: > $out
status=0

# insmod does not load what a module needs: the C driver uses vb2's
# memops (modules in this kernel); ours needs nothing more.
modprobe videobuf2_common && modprobe videobuf2_memops || { echo "FAIL: modprobe videobuf2"; exit 1; }
# BENCH_C_SELF=1: ours on both devices, in the C driver's place too: how
# far apart two nodes of one driver are (the comparison's own noise).
self=${BENCH_C_SELF:-0}
c_driver=virtio-media
if [ "$self" = 1 ]; then
	c_driver=virtio_media
else
	insmod /extra/virtio_media_c.ko || { echo "FAIL: insmod virtio_media_c.ko"; exit 1; }
fi
insmod /extra/virtio_media.ko || { echo "FAIL: insmod virtio_media.ko"; exit 1; }

# /dev/videoN bound to the virtio driver $1 ("virtio-media": C,
# "virtio_media": ours), which must be on the device with virtio ID $2.
node_of() {
	local want=$1 id=$2 v drv dev
	for v in /sys/class/video4linux/video*; do
		drv=$(basename "$(readlink -f "$v/device/driver")")
		[ "$drv" = "$want" ] || continue
		dev=$(cat "$v/device/device")
		[ "$((dev))" = "$id" ] || continue
		echo "bench-c: /dev/$(basename "$v"): driver $drv, virtio device $dev" >&2
		echo "/dev/$(basename "$v")"
		return 0
	done
	echo "FAIL: no video node of device $id bound to $want" >&2
	return 1
}
ours=$(node_of virtio_media 42) && c=$(node_of $c_driver 48) || {
	ls -l /sys/class/video4linux/ /sys/bus/virtio/drivers/*/
	exit 1
}
echo "bench-c: ours $ours, C $c, $runs rounds"
# Which CPU each device's interrupts reach: a wakeup from the other vCPU
# costs an IPI, so a difference here is a difference of the comparison.
# The kernel spreads new vectors over the CPUs, so the two devices' queues
# land on different ones (ours commandq CPU0, eventq CPU1, C's the other
# way round, on 2026-12-03): all of them go to CPU 0 for both drivers.
for irq in $(awk '/virtio[0-9]+-/ { sub(":", "", $1); print $1 }' /proc/interrupts); do
	echo 0 > /proc/irq/$irq/smp_affinity_list ||
		echo "bench-c: note: cannot move IRQ $irq to CPU 0"
done
cat /proc/interrupts > /tmp/interrupts-before.txt

# Where the program runs: a wakeup from the interrupts' CPU costs an IPI
# when the program is on the other one, so both drivers get the same
# placement: BENCH_C_CPU (1: away from the interrupts; 0: with them; any:
# the scheduler's choice). Runs of several sessions are never pinned.
pin=
case "${BENCH_C_CPU:-1}" in
any) ;;
*) pin="busybox taskset -c ${BENCH_C_CPU:-1}" ;;
esac
echo "bench-c: program pinned: ${pin:-no}"

# run DRIVER DEV ARGS...: one run of v4l2-bench, tagged (as bench.sh's).
run() {
	local drv=$1 dev=$2 line p=$pin
	shift 2
	case "$1 $3" in
	"ioctl 1") ;;
	ioctl*) p= ;; # several sessions
	esac
	if line=$($p $bench -d "$dev" "$@"); then
		echo "{\"driver\": \"$drv\", \"run\": $r, ${line#\{}" >> $out
	else
		echo "FAIL: $drv: v4l2-bench -d $dev $*"
		status=1
	fi
}

# alternate OP SECONDS: OP on both nodes in turn from one thread (pairs
# ab, ba, ...), so that both see the same moments of the host: the
# comparison least moved by the host's noise.
alternate() {
	local line
	if line=$($pin $bench -d "$ours" alternate "$c" "$@"); then
		echo "{\"driver\": \"both\", \"run\": $r, ${line#\{}" >> $out
	else
		echo "FAIL: v4l2-bench -d $ours alternate $c $*"
		status=1
	fi
}

# both ARGS...: the same run on both nodes; odd rounds ours first.
both() {
	if [ $((r % 2)) = 1 ]; then
		run ours "$ours" "$@"; run c "$c" "$@"
	else
		run c "$c" "$@"; run ours "$ours" "$@"
	fi
}

userptr_param=/sys/module/virtio_media_c/parameters/allow_userptr
r=1
while [ "$r" -le "$runs" ]; do
	echo "bench-c: round $r of $runs"
	both ioctl G_FMT 1 threads "$secs"
	both ioctl G_FMT 4 threads "$secs"
	alternate G_FMT "$secs"
	both openclose "$count"
	alternate openclose "$count"
	both mmap "$count"
	both stream mmap 640 480 "$stream_secs"
	both stream mmap 1920 1080 "$stream_secs"
	# The C driver refuses USERPTR unless allow_userptr is set (off by
	# default): on for this run only, so every other run sees its default.
	[ "$self" = 1 ] || echo Y > $userptr_param
	both stream userptr 1920 1080 "$stream_secs"
	[ "$self" = 1 ] || echo N > $userptr_param
	export_file bench-c.jsonl $out
	r=$((r + 1))
done

# BENCH_PERF=1: where each driver's time goes, perf sampling the whole
# guest while one run of each kind goes on each node (single-thread G_FMT,
# mmap/munmap pairs, a 640x480 MMAP stream, a 1920x1080 USERPTR stream).
perf_run() { # DRIVER DEV NAME ARGS...
	local drv=$1 dev=$2 name=$3 base f
	shift 3
	base=/tmp/perf-$name-$drv
	perf record -q -e cpu-clock -F 4000 -a -g -o $base.data -- \
		$pin $bench -d "$dev" "$@" > $base-run.json 2> $base-record.log ||
		{ echo "FAIL: perf record of $drv: $*"; status=1; }
	perf report -i $base.data --stdio --no-children --sort dso,sym --percent-limit 0.2 \
		> $base-self.txt 2> $base-report.log
	perf report -i $base.data --stdio --children --sort sym -g none --percent-limit 1 \
		> $base-children.txt 2>> $base-report.log
	rm -f $base.data
	for f in run.json record.log report.log self.txt children.txt; do
		export_file perf-$name-$drv-$f $base-$f
	done
}
# BENCH_TRACE=1: where a single-session G_FMT's time goes, as events
# (tools/bench/trace-phases.py reads them): the program's ioctl entry and
# exit, its sleep and wakeup, and the device interrupts, which run in
# whatever task they interrupt (so every task's events are kept).
trace_run() { # DRIVER DEV
	local t=/sys/kernel/debug/tracing e
	echo 0 > $t/tracing_on
	echo 8192 > $t/buffer_size_kb
	echo > $t/trace
	echo 'id == 16' > $t/events/raw_syscalls/sys_enter/filter
	echo 'id == 16' > $t/events/raw_syscalls/sys_exit/filter
	for e in raw_syscalls/sys_enter raw_syscalls/sys_exit sched/sched_switch sched/sched_waking \
		irq/irq_handler_entry; do
		echo 1 > $t/events/$e/enable
	done
	# BENCH_TRACE=2: the notification's trap timed too (function_graph).
	# BENCH_TRACE=3: the calls under each driver's ioctl handler, timed.
	# BENCH_TRACE=4: the calls under each driver's release, 100 open/close
	# pairs (the files keep their trace-gfmt names).
	case "${BENCH_TRACE:-0}" in
	2)
		echo vp_notify > $t/set_ftrace_filter
		echo function_graph > $t/current_tracer
		echo 1 > $t/options/funcgraph-abstime
		;;
	3)
		# (Rust functions have no ftrace entry: what the module calls
		# shows, under the core's v4l_g_fmt.)
		echo v4l_g_fmt > $t/set_graph_function
		echo 6 > $t/max_graph_depth
		echo function_graph > $t/current_tracer
		;;
	4)
		# The same for close(): what runs under the core's release.
		echo v4l2_release > $t/set_graph_function
		echo 5 > $t/max_graph_depth
		echo function_graph > $t/current_tracer
		;;
	esac
	echo 1 > $t/tracing_on
	if [ "${BENCH_TRACE:-0}" = 4 ]; then
		$pin $bench -d "$2" openclose 100 > /tmp/trace-gfmt-$1-run.json
	else
		$pin $bench -d "$2" ioctl G_FMT 1 threads 0.5 > /tmp/trace-gfmt-$1-run.json
	fi
	echo 0 > $t/tracing_on
	echo 0 > $t/events/enable
	grep -m 1 entries-in-buffer $t/trace
	gzip -1 < $t/trace > /tmp/trace-gfmt-$1.txt.gz
	# After the copy: changing the tracer empties the buffer.
	echo nop > $t/current_tracer
	echo > $t/trace
	export_file trace-gfmt-$1.txt.gz /tmp/trace-gfmt-$1.txt.gz
	export_file trace-gfmt-$1-run.json /tmp/trace-gfmt-$1-run.json
}
if [ "${BENCH_TRACE:-0}" != 0 ]; then
	trace_run ours "$ours"
	trace_run c "$c"
	trace_run ours2 "$ours"
	trace_run c2 "$c"
	grep -h virtio /proc/interrupts
fi

if [ "${BENCH_PERF:-0}" = 1 ]; then
	echo 0 > /proc/sys/kernel/kptr_restrict
	echo -1 > /proc/sys/kernel/perf_event_paranoid
	for drv in ours c; do
		dev=$ours
		[ $drv = c ] && dev=$c
		perf_run $drv "$dev" gfmt ioctl G_FMT 1 threads 3
		perf_run $drv "$dev" mmap mmap "$count"
		perf_run $drv "$dev" stream stream mmap 640 480 5
		[ "$self" = 1 ] || [ $drv = ours ] || echo Y > $userptr_param
		perf_run $drv "$dev" userptr stream userptr 1920 1080 5
		[ "$self" = 1 ] || [ $drv = ours ] || echo N > $userptr_param
	done
fi

cat /proc/interrupts > /tmp/interrupts-after.txt
# Both must unload; a C driver that does not is worth knowing, not a
# failure of ours.
rmmod virtio_media || { echo "FAIL: rmmod virtio_media"; status=1; }
[ "$self" = 1 ] || rmmod virtio_media_c || echo "bench-c: note: rmmod virtio_media_c failed"
export_file interrupts-before.txt /tmp/interrupts-before.txt
export_file interrupts-after.txt /tmp/interrupts-after.txt
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
if grep -E "BUG:|WARNING:|possible circular|possible recursive|INFO: task|Oops" /tmp/dmesg.log; then
	echo "FAIL: kernel problem in dmesg"
	status=1
fi
exit $status
