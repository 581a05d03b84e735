#!/usr/bin/env bash
# make bench: boots one guest with two test devices (capture backend): ID 42
# answers every command at once ("direct"), ID 48 after BENCH_DELAY_MS
# ("delayed", default 2 ms). tools/bench/v4l2-bench runs in the guest
# (tools/vm/tests/bench.sh); the devices time every command themselves
# (--stats); perf samples the guest (BENCH_PERF=0 to skip). Then
# tools/bench/report.py writes build/results/bench.json, bench.png and
# bench.txt and prints the summary table.
#
# Knobs (environment): BENCH_RUNS (5), BENCH_SECONDS per ioctl run (1),
# BENCH_STREAM_SECONDS per stream run (2), BENCH_COUNT open/close and mmap pairs
# per run (200), BENCH_DELAY_MS (2), BENCH_PERF (1), BENCH_QUICK=1 (only
# the delayed device's G_FMT from 1 and 4 threads, no perf, no chart: the
# smoke test of make check, which passes when the device held 4 commands
# at once), BENCH_NAME (bench: results in build/results/NAME.* and the
# guest's files in build/results/NAME/), BENCH_CODEC=0 (no decoding
# figures: tools/bench/codec.sh, a second guest, NAME-codec/). BENCH_C=1
# (make bench-c): our driver against the C driver instead
# (tools/bench/bench-c.sh: build/results/bench-c.txt).
set -euo pipefail
. "$(dirname "$0")/vm/lib.sh"
cd "$REPO_DIR"

tools/vm/deps.sh
# What only the benchmark needs on the host: a static C build, the chart.
apt_install_missing gcc libc6-dev python3-matplotlib

# The benchmark kernel (no lockdep, no sanitizers), unless KDIR names one
# (make check's smoke test runs on its test kernel, with BENCH_KO).
flavour=bench
[ -n "${KDIR:-}" ] && flavour="the kernel in $KDIR"
KDIR=${KDIR:-$(tools/vm/kernel.sh bench)}
export KDIR
kernel_note="non-debug kernel (no lockdep, no sanitizers)"
grep -qE '^CONFIG_(KASAN|PROVE_LOCKING)=y' "$KDIR/.config" && kernel_note="debug kernel (sanitizers, lockdep)"
# BENCH_KO: a module already built for KDIR (make check's), else build one
# from a copy of the sources, so the work tree's build (for the test kernel)
# stays as it is.
ko=${BENCH_KO:-}
if [ -z "$ko" ]; then
	copy=$BUILD_DIR/bench/module
	mkdir -p "$copy"
	rsync -a --delete --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' \
		Kbuild Kconfig drivers include "$copy/"
	make -s -C "$KDIR" M="$copy" CONFIG_VIRTIO_MEDIA=m LLVM=-"$LLVM_VERSION" modules
	ko=$copy/drivers/media/virtio/virtio_media.ko
fi
log "benchmarking on $flavour: $kernel_note"
V4L2R_VIDEODEV2_H_PATH=$(tools/vm/kernel.sh headers)
export V4L2R_VIDEODEV2_H_PATH
tools/virtio-media-vfu/build.sh >&2
mkdir -p "$BUILD_DIR/bench"
gcc -O2 -Wall -Wextra -Werror -static -pthread -o "$BUILD_DIR/bench/v4l2-bench" tools/bench/v4l2-bench.c
# BENCH_C=1 (make bench-c): our driver against the C driver in one boot
# instead, with the module and program just built (tools/bench/bench-c.sh).
[ "${BENCH_C:-0}" = 1 ] && exec tools/bench/bench-c.sh "$ko" "$kernel_note"

runs=${BENCH_RUNS:-5} secs=${BENCH_SECONDS:-1} delay=${BENCH_DELAY_MS:-2} perf=${BENCH_PERF:-1}
quick=${BENCH_QUICK:-0}
[ "$quick" = 1 ] && perf=0
cpio=()
[ "$perf" = 1 ] && cpio=(--cpio "$(tools/vm/guest-perf.sh)")
results=$(realpath -m "$BUILD_DIR/results")
name=${BENCH_NAME:-bench}
out=$results/$name
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "host load before: $load_before ($(nproc) cores)"
set +e
tools/vm/run-guest.sh --name "$name" --ko "$ko" --modules virtio_media \
	--file "$BUILD_DIR/bench/v4l2-bench" "${cpio[@]}" \
	--vfu "--device-id 42 --backend capture --exit-on-disconnect --stats $out/device-direct.json" \
	--vfu "--device-id 48 --backend capture --response-delay-ms $delay --exit-on-disconnect --stats $out/device-delayed.json" \
	--env "BENCH_RUNS=$runs" --env "BENCH_SECONDS=$secs" --env "BENCH_STREAM_SECONDS=${BENCH_STREAM_SECONDS:-2}" \
	--env "BENCH_COUNT=${BENCH_COUNT:-200}" --env "BENCH_PERF=$perf" --env "BENCH_QUICK=$quick" \
	--test tools/vm/tests/bench.sh --timeout "${BENCH_TIMEOUT:-2400}"
status=$?
set -e
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[ "$status" = 0 ] || log "the guest run failed (status $status); see $out/console.log"
[ -s "$out/bench.jsonl" ] || die "no bench.jsonl from the guest ($out/console.log)"
# Decoding H.264 through the driver, in software and on the host alone
# (a second guest, with the decoder device); BENCH_CODEC=0 skips it.
if [ "$quick" != 1 ] && [ "${BENCH_CODEC:-1}" = 1 ]; then
	codec_status=0
	tools/bench/codec.sh "$name-codec" "$ko" || codec_status=$?
	cp "$results/$name-codec/codec.jsonl" "$out/codec.jsonl" 2>/dev/null || true
	[ "$codec_status" = 0 ] || status=$codec_status
	load_after=$(cut -d' ' -f1-3 /proc/loadavg)
fi

meta=$(/usr/bin/python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
	note "$kernel_note under QEMU TCG, 2 vCPUs" \
	date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	host_load_before "$load_before" host_load_after "$load_after" host_cores "$(nproc)" \
	runs "$runs" seconds_per_ioctl_run "$secs" delay_ms "$delay")
report_status=0
report=(--dir "$out" --out "$out" --meta "$meta")
# The smoke test's stream: the driver announces returned event buffers in
# batches, not one notification (a trap) per event.
[ "$quick" = 1 ] && report+=(--gate in-flight --no-chart --max-eventq-notify 0.5)
# Debian's python3 (its matplotlib), whatever else is first on PATH.
/usr/bin/python3 tools/bench/report.py "${report[@]}" || report_status=$?
for f in bench.json bench.png bench.txt; do
	[ -f "$out/$f" ] && cp "$out/$f" "$results/$name.${f#bench.}"
done
log "written: $results/$name.json $results/$name.png $results/$name.txt (and in $out/)"
[ "$status" = 0 ] && [ "$report_status" = 0 ]
