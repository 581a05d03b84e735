#!/usr/bin/env bash
# make bench-c (BENCH_C=1 tools/bench.sh, which builds our module and
# v4l2-bench first): our driver against the C driver (chromeos/virtio-media)
# in one guest boot. Builds the C driver for KDIR (tools/bench/c-driver/
# build.sh), boots a guest with two capture devices that answer at once,
# virtio ID 48 (the C driver's) and ID 42 (ours), and runs
# tools/vm/tests/bench-c.sh there; tools/bench/report-c.py then writes
# build/results/bench-c.txt (the table: medians of the rounds, their
# spread, ours/C) and bench-c.json. The guest's files are in
# build/results/bench-c/.
# Usage: tools/bench/bench-c.sh KO KERNEL_NOTE (KDIR set). Knobs:
# BENCH_RUNS (rounds, 5), BENCH_SECONDS (1), BENCH_STREAM_SECONDS (2),
# BENCH_COUNT (200), BENCH_TIMEOUT (1800), BENCH_PERF (0; 1: perf samples
# each driver's G_FMT, mmap, 640x480 MMAP and 1080p USERPTR stream runs
# once more, perf-{gfmt,mmap,stream,userptr}-{ours,c}-*.txt among the
# guest's files),
# BENCH_C_SELF (0; 1: our driver takes the C driver's device too, so the
# table compares two nodes of ours: the comparison's noise floor),
# BENCH_C_CPU (1: single-session runs pinned to CPU 1, every device
# interrupt goes to CPU 0; 0: pinned with the interrupts; any: unpinned),
# BENCH_C_SWAP (0; 1: the C driver's device first on the PCI bus),
# BENCH_C_SPACER (1: an unbound device in the first slot; 0: none),
# BENCH_TRACE (0; 1: after the rounds, each driver's single-session G_FMT
# traced with scheduler, interrupt and system call events, and
# tools/bench/trace-phases.py splits a call into its phases: submit,
# device, interrupt to wakeup, wakeup to running, return),
# BENCH_ICOUNT (0; 1: QEMU's -icount shift=0: the guest's clocks count its
# instructions, 1 ns each, and a trap into the device takes no guest time:
# every figure is then the guest's own work, the same from run to run,
# without the host's noise and without what the traps cost on this host).
set -euo pipefail
. "$(dirname "$0")/../vm/lib.sh"
cd "$REPO_DIR"
ko=${1:?usage: bench-c.sh KO KERNEL_NOTE} note=${2:?usage: bench-c.sh KO KERNEL_NOTE}
[ -n "${KDIR:-}" ] || die "KDIR must be set"

c_ko=$(tools/bench/c-driver/build.sh)
c_commit=$(basename "$(dirname "$c_ko")" | cut -d- -f3)
runs=${BENCH_RUNS:-5}
name=bench-c
results=$(realpath -m "$BUILD_DIR/results")
out=$results/$name
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "our driver against the C driver ($c_commit), $runs rounds; host load before: $load_before ($(nproc) cores)"
cpio=()
[ "${BENCH_PERF:-0}" = 1 ] && cpio=(--cpio "$(tools/vm/guest-perf.sh)")
# The devices' order on the PCI bus (ours first unless BENCH_C_SWAP=1):
# the first slot was measured up to 8 % slower than the second for the
# same driver (A/A runs of 2026-12-03: 1.08, and 0.97 swapped).
devices=(--vfu "--device-id 42 --backend capture --exit-on-disconnect"
	--vfu "--device-id 48 --backend capture --exit-on-disconnect")
[ "${BENCH_C_SWAP:-0}" = 1 ] && devices=("${devices[@]:2:2}" "${devices[@]:0:2}")
# A device neither driver binds (virtio ID 60) takes the first slot, so
# the two measured devices are second and third: with it an A/A run read
# 0.97 (G_FMT p50), without it 1.08 (BENCH_C_SPACER=0 to leave it out).
[ "${BENCH_C_SPACER:-1}" = 1 ] &&
	devices=(--vfu "--device-id 60 --backend capture --exit-on-disconnect" "${devices[@]}")
icount=""
[ "${BENCH_ICOUNT:-0}" = 1 ] && icount=0
set +e
ICOUNT=$icount tools/vm/run-guest.sh --name "$name" --ko "$ko" --ko "$c_ko" --file "$BUILD_DIR/bench/v4l2-bench" "${cpio[@]}" \
	"${devices[@]}" \
	--env "BENCH_RUNS=$runs" --env "BENCH_SECONDS=${BENCH_SECONDS:-1}" \
	--env "BENCH_STREAM_SECONDS=${BENCH_STREAM_SECONDS:-2}" --env "BENCH_COUNT=${BENCH_COUNT:-200}" \
	--env "BENCH_PERF=${BENCH_PERF:-0}" --env "BENCH_C_SELF=${BENCH_C_SELF:-0}" --env "BENCH_C_CPU=${BENCH_C_CPU:-1}" \
	--env "BENCH_TRACE=${BENCH_TRACE:-0}" --test tools/vm/tests/bench-c.sh --timeout "${BENCH_TIMEOUT:-1800}"
status=$?
set -e
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[ "$status" = 0 ] || log "the guest run failed (status $status); see $out/console.log"
# How the guest ended goes into the table: a crash keeps the rounds
# exported before it, and where it crashed says whose it was.
guest="ended normally"
if [ "$status" != 0 ]; then
	guest="failed (status $status)"
	if [ -s "$out/kernel-report.txt" ]; then
		guest="$guest, kernel: $(head -n 1 "$out/kernel-report.txt" | sed 's/ ([0-9]* lines* like it.*//')"
		rip=$(grep -m1 -o 'RIP: [^ ]* [^ ]*' "$out/console.log" || true)
		[ -n "$rip" ] && guest="$guest, $rip"
	fi
fi
[ -s "$out/bench-c.jsonl" ] || die "no bench-c.jsonl from the guest ($out/console.log)"

# Which driver was measured: bench.sh builds the work tree's, which may
# differ from HEAD.
driver="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "${BENCH_KO:-}" ]; then
	driver="$driver, module given by BENCH_KO ($BENCH_KO)"
elif ! git diff --quiet HEAD -- Kbuild drivers include 2>/dev/null; then
	driver="$driver with uncommitted driver changes"
fi
c_label="chromeos/virtio-media $c_commit"
[ "${BENCH_C_SELF:-0}" = 1 ] && c_label="BENCH_C_SELF=1: the C column is OUR driver on the ID 48 device"
meta=$(/usr/bin/python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
	note "$note under QEMU TCG$([ -n "$icount" ] && echo " with -icount shift=0 (times are guest instructions, 1 ns each; traps take none)"), 2 vCPUs; device interrupts on CPU 0, single-session runs on CPU ${BENCH_C_CPU:-1}; $([ "${BENCH_C_SPACER:-1}" = 1 ] && echo "an unbound device, then ")$([ "${BENCH_C_SWAP:-0}" = 1 ] && echo "the C driver's device" || echo "our device") first on the PCI bus" \
	date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" commit "$driver" \
	c_driver "$c_label" guest "$guest" \
	host_load_before "$load_before" host_load_after "$load_after" host_cores "$(nproc)" runs "$runs")
report_status=0
/usr/bin/python3 tools/bench/report-c.py --dir "$out" --meta "$meta" || report_status=$?
if [ "${BENCH_TRACE:-0}" = 1 ]; then
	/usr/bin/python3 tools/bench/trace-phases.py "$out"/trace-gfmt-*.txt.gz | tee "$out/bench-c-phases.txt" ||
		report_status=1
fi
for f in bench-c.txt bench-c.json; do
	[ -f "$out/$f" ] && cp "$out/$f" "$results/$f"
done
log "written: $results/bench-c.txt $results/bench-c.json (and the guest's files in $out/)"
[ "$status" = 0 ] && [ "$report_status" = 0 ]
