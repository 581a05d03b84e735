# Guest side of make bench's decoding figures (tools/bench.sh): FFmpeg
# decodes each stream of BENCH_CODEC_STREAMS (files in /extra) BENCH_RUNS
# times through the driver (h264_v4l2m2m, the decoder device) and in
# software (FFmpeg's own h264 decoder, in the guest), the runs interleaved.
# Each run appends one JSON line to codec.jsonl, which goes to the host:
#     {"test": "codec", "path": "driver"|"guest-software", "stream": ...,
#      "width": W, "height": H, "run": R, "frames": N, "seconds": S,
#      "fps": F, "guest_cpu_us_per_frame": C}
# Guest CPU is what /extra/v4l2-bench cpu reports: FFmpeg's own CPU time
# and every other task's meanwhile (the driver's included), from the
# scheduler's clocks. Not /proc/stat's busy ticks: under TCG they miss the
# time vCPUs spend in traps (Documentation/benchmark.rst, Guest CPU).
. /test.env
export HOME=/tmp
runs=${BENCH_RUNS:-3}
out=/tmp/codec.jsonl
: > $out
status=0

run() { # PATH DECODER STREAM WIDTH HEIGHT
	local path=$1 decoder=$2 stream=$3 width=$4 height=$5 frames cpu secs
	# -f null: frames are decoded and dropped, nothing is converted.
	/extra/v4l2-bench cpu ffmpeg -hide_banner -nostdin -loglevel info -c:v "$decoder" \
		-i "/extra/$stream" -map 0:v -fps_mode passthrough -f null - > /tmp/run.log 2>&1 ||
		{ echo "FAIL: $path $stream"; tail -n 5 /tmp/run.log; status=1; return; }
	frames=$(tr '\r' '\n' < /tmp/run.log | sed -n 's/^frame= *\([0-9]*\).*/\1/p' | tail -n 1)
	[ "${frames:-0}" -gt 0 ] || { echo "FAIL: $path $stream: no frame count"; status=1; return; }
	cpu=$(sed -n 's/^{"test": "cpu".*"guest_cpu_us": \([0-9.]*\).*/\1/p' /tmp/run.log)
	secs=$(sed -n 's/^{"test": "cpu", "seconds": \([0-9.]*\).*/\1/p' /tmp/run.log)
	[ -n "$cpu" ] && [ -n "$secs" ] || { echo "FAIL: $path $stream: no CPU figure"; status=1; return; }
	awk -v path="$path" -v stream="$stream" -v w="$width" -v h="$height" -v r="$r" -v n="$frames" \
		-v s="$secs" -v cpu="$cpu" 'BEGIN {
		printf "{\"test\": \"codec\", \"path\": \"%s\", \"stream\": \"%s\", \"width\": %d, \"height\": %d, ", path, stream, w, h
		printf "\"run\": %d, \"frames\": %d, \"seconds\": %.2f, \"fps\": %.2f, ", r, n, s, (s > 0 ? n / s : 0)
		printf "\"guest_cpu_us_per_frame\": %.0f}\n", cpu / n
	}' >> $out
	tail -n 1 $out
}

r=1
while [ $r -le "$runs" ]; do
	for spec in $BENCH_CODEC_STREAMS; do
		IFS=: read -r stream width height <<-EOF
		$spec
		EOF
		run driver h264_v4l2m2m "$stream" "$width" "$height"
		run guest-software h264 "$stream" "$width" "$height"
	done
	r=$((r + 1))
done
export_file codec.jsonl $out
exit $status
