#!/usr/bin/env bash
# make bench, decoding figures (called by tools/bench.sh): H.264 at
# 640x480 and 1920x1080 (tools/vm/codec-streams.sh's bench streams),
#   - through the driver: FFmpeg's h264_v4l2m2m in a guest, with the test
#     device's decoder (tools/vm/tests/bench-codec.sh);
#   - the guest decoding in software: FFmpeg's h264 decoder, same guest;
#   - the floor: the host's libavcodec (the library the device decodes
#     with) decoding the same stream alone, with the device's thread count.
# Usage: tools/bench/codec.sh NAME KO: the guest's files go to
# build/results/NAME/, all runs to build/results/NAME/codec.jsonl (one
# JSON line each, read by tools/bench/report.py). KDIR must be set.
set -euo pipefail
. "$(dirname "$0")/../vm/lib.sh"
cd "$REPO_DIR"
name=${1:?usage: codec.sh NAME KO} ko=${2:?usage: codec.sh NAME KO}
runs=${BENCH_RUNS:-5}
# The decoder device's libavcodec threads (virtio-media-vfu
# --codec-threads); the floor decodes with as many.
device_threads=${BENCH_CODEC_DEVICE_THREADS:-1}
streams="bench-640x480.mkv:640:480 bench-1920x1080.mkv:1920:1080"

media=$(tools/vm/guest-media.sh)
dir=$(tools/vm/codec-streams.sh)
out=$(realpath -m "$BUILD_DIR/results/$name")
files=()
for spec in $streams; do files+=(--file "$dir/${spec%%:*}"); done
# Measures the guest's CPU time around each FFmpeg run (built by tools/bench.sh).
files+=(--file "$BUILD_DIR/bench/v4l2-bench")
set +e
tools/vm/run-guest.sh --name "$name" --ko "$ko" --modules virtio_media --cpio "$media" "${files[@]}" \
	--vfu "--device-id 48 --backend decoder --codec-threads $device_threads" --env "BENCH_RUNS=$runs" \
	--env "BENCH_CODEC_STREAMS=$streams" --test tools/vm/tests/bench-codec.sh --timeout "${BENCH_TIMEOUT:-2400}"
status=$?
set -e
[ "$status" = 0 ] || log "the codec guest run failed (status $status); see $out/console.log"
touch "$out/codec.jsonl"

# The floor: ffmpeg -benchmark prints "bench: utime=Us stime=Ss rtime=Rs"
# for the decode; frames from its last progress line.
for r in $(seq "$runs"); do
	for spec in $streams; do
		IFS=: read -r stream width height <<< "$spec"
		ffmpeg -nostdin -hide_banner -benchmark -threads "$device_threads" -c:v h264 -i "$dir/$stream" \
			-map 0:v -fps_mode passthrough -f null - > "$out/floor.log" 2>&1 || die "host decode of $stream failed"
		tr '\r' '\n' < "$out/floor.log" | awk -v stream="$stream" -v w="$width" -v h="$height" -v r="$r" \
			-v threads="$device_threads" '
			/^frame=/ { sub(/^frame= */, ""); frames = $1 + 0 }
			/^bench: utime=/ {
				for (i = 2; i <= NF; i++) { split($i, kv, "="); t[kv[1]] = kv[2] + 0 }
			}
			END {
				if (frames == 0 || t["rtime"] == 0) exit 1
				printf "{\"test\": \"codec\", \"path\": \"device-alone\", \"stream\": \"%s\", \"width\": %d, \"height\": %d, ", stream, w, h
				printf "\"run\": %d, \"frames\": %d, \"seconds\": %.3f, \"fps\": %.2f, \"threads\": %d, ", r, frames, t["rtime"], frames / t["rtime"], threads
				printf "\"host_cpu_us_per_frame\": %.0f}\n", (t["utime"] + t["stime"]) * 1000000 / frames
			}' >> "$out/codec.jsonl" || die "no figures in $out/floor.log"
	done
done
exit "$status"
