# Guest side of make bench (tools/bench.sh). Two test devices are attached:
# virtio ID 42 answers at once ("direct"), ID 48 answers every command after
# a fixed delay ("delayed"). /extra/v4l2-bench runs every test BENCH_RUNS
# times, the repetitions interleaved; each run appends one JSON line to
# bench.jsonl, which goes to the host. With BENCH_PERF=1 perf then samples
# the whole guest (cpu-clock) during G_FMT from one session.
. /test.env
runs=${BENCH_RUNS:-5}
secs=${BENCH_SECONDS:-1}
stream_secs=${BENCH_STREAM_SECONDS:-2}
count=${BENCH_COUNT:-200}
quick=${BENCH_QUICK:-0}
bench=/extra/v4l2-bench
out=/tmp/bench.jsonl
: > $out
status=0

# /dev/videoN of the device with virtio ID $1 (the node's parent is the
# virtio device, or its PCI function 1af4:1040+ID).
find_dev() {
	local want=$1 v id
	for v in /sys/class/video4linux/video*; do
		for id in $(cat "$v/device/device" "$v/device/../device" 2>/dev/null); do
			if [ "$((id))" = "$want" ] || [ "$((id))" = "$((0x1040 + want))" ]; then
				echo "/dev/$(basename "$v")"
				return 0
			fi
		done
	done
	return 1
}
direct=$(find_dev 42) || { echo "FAIL: no video node for device 42"; ls -l /sys/class/video4linux/; exit 1; }
delayed=$(find_dev 48) || { echo "FAIL: no video node for device 48"; exit 1; }
echo "bench: direct device $direct, delayed device $delayed, $runs runs"

# run LABEL DEV ARGS...: one run of v4l2-bench, tagged.
run() {
	local label=$1 dev=$2 line
	shift 2
	if line=$($bench -d "$dev" "$@"); then
		echo "{\"device\": \"$label\", \"run\": $r, ${line#\{}" >> $out
	else
		echo "FAIL: v4l2-bench -d $dev $*"
		status=1
	fi
}

if [ "$quick" = 1 ]; then
	ops="G_FMT"
	sessions="1 4"
	modes="threads"
else
	ops="G_FMT G_EXT_CTRLS"
	sessions="1 2 4 8"
	modes="threads procs"
fi
r=1
while [ $r -le "$runs" ]; do
	echo "bench: run $r of $runs"
	for mode in $modes; do
		for n in $sessions; do
			run delayed "$delayed" ioctl G_FMT "$n" "$mode" "$secs"
			[ "$quick" = 1 ] && continue
			for op in $ops; do
				run direct "$direct" ioctl "$op" "$n" "$mode" "$secs"
			done
		done
	done
	# The smoke test streams too: the device counts the driver's eventq
	# notifications per event (report.py --max-eventq-notify).
	[ "$quick" = 1 ] && run direct "$direct" stream mmap 640 480 1
	if [ "$quick" != 1 ]; then
		run direct "$direct" ioctl QUERYCAP 1 threads "$secs"
		run direct "$direct" openclose "$count"
		run direct "$direct" mmap "$count"
		for mem in mmap userptr; do
			run direct "$direct" stream $mem 640 480 "$stream_secs"
			run direct "$direct" stream $mem 1920 1080 "$stream_secs"
		done
	fi
	r=$((r + 1))
done
export_file bench.jsonl $out

# Allocations per forwarded ioctl: kmem:kmalloc events with the module
# on their call stack (a frame of the crate virtio_media_main; the event's
# own call site is the allocator's, as Rust reaches it through krealloc),
# during a short single-session G_FMT run on the direct
# device. The driver reuses a finished command's buffers, so after the
# first call there are none.
count_allocs() {
	local t=/sys/kernel/debug/tracing ev line n header
	ev=$t/events/kmem/kmalloc
	if [ ! -d $ev ]; then
		echo "FAIL: no kmem:kmalloc trace event"
		status=1
		return
	fi
	echo 0 > $t/tracing_on
	echo 16384 > $t/buffer_size_kb
	echo > $t/trace
	echo stacktrace > $ev/trigger
	echo 1 > $ev/enable
	echo 1 > $t/tracing_on
	line=$($bench -d "$direct" ioctl G_FMT 1 threads 0.5)
	echo 0 > $t/tracing_on
	echo 0 > $ev/enable
	echo '!stacktrace' > $ev/trigger
	cp $t/trace /tmp/allocs-trace.txt
	echo > $t/trace
	# An event line, then its stack as " => frame" lines.
	n=$(awk '/ kmalloc: / { ev++; counted = 0 }
		/^ *=> .*virtio_media_main/ && !counted { n++; counted = 1 }
		END { print n + 0 }' /tmp/allocs-trace.txt)
	# "entries-in-buffer/entries-written: A/B": A < B means events were
	# lost, and the count would be too low.
	header=$(grep -m 1 'entries-in-buffer/entries-written' /tmp/allocs-trace.txt)
	echo "bench: $n kmalloc calls from the module during: $line (${header#\# })"
	echo "{\"module_kmallocs\": $n, \"trace_header\": \"${header#\# }\", \"run\": ${line:-null}}" > /tmp/allocs.json
	export_file allocs.json /tmp/allocs.json
	gzip -1 /tmp/allocs-trace.txt
	export_file allocs-trace.txt.gz /tmp/allocs-trace.txt.gz
}
count_allocs

if [ "${BENCH_PERF:-0}" = 1 ]; then
	if [ -x /usr/bin/perf ]; then
		echo 0 > /proc/sys/kernel/kptr_restrict
		echo -1 > /proc/sys/kernel/perf_event_paranoid
		perf record -q -e cpu-clock -F 4000 -a -g -o /tmp/perf.data -- \
			$bench -d "$direct" ioctl G_FMT 1 threads 5 > /tmp/perf-run.json 2> /tmp/perf-record.log
		echo "perf record: status $?"
		perf report -i /tmp/perf.data --stdio --no-children --sort dso,sym --percent-limit 0.2 \
			> /tmp/perf-self.txt 2> /tmp/perf-report.log
		perf report -i /tmp/perf.data --stdio --children --sort dso,sym -g none --percent-limit 1 \
			> /tmp/perf-children.txt 2>> /tmp/perf-report.log
		perf report -i /tmp/perf.data --stdio --no-children --sort dso \
			> /tmp/perf-dso.txt 2>> /tmp/perf-report.log
		# Raw samples with the offset of every frame: which call site a
		# sample belongs to (report.py tallies them).
		perf script -i /tmp/perf.data -F ip,sym,symoff > /tmp/perf-script.txt 2>> /tmp/perf-report.log
		gzip -1 /tmp/perf-script.txt
		grep -i virtio_media /proc/kallsyms | head -n 3
		for f in perf-run.json perf-record.log perf-report.log perf-self.txt perf-children.txt perf-dso.txt \
			perf-script.txt.gz; do
			export_file $f /tmp/$f
		done
	else
		echo "FAIL: BENCH_PERF=1 but no /usr/bin/perf in the guest"
		status=1
	fi
fi
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
if grep -E "BUG:|WARNING:|possible circular|possible recursive|INFO: task|Oops" /tmp/dmesg.log; then
	echo "FAIL: kernel problem in dmesg"
	status=1
fi
exit $status
