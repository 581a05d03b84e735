# Guest test: decodes streams through the driver with FFmpeg and GStreamer
# and exports every frame's MD5 (NV12, visible pixels) for the host to
# compare with its software decode. Needs the media initramfs part
# (tools/vm/guest-media.sh) and the streams in /extra.
#
# /test.env: DECODES="JOB ..." where a JOB is PROGRAM:FILE:CODEC[:SEEK]:
# PROGRAM ffmpeg or gst, FILE a stream in /extra, CODEC h264, hevc, vp8 or
# vp9, SEEK a position in seconds to seek to before decoding; they run one
# after the other. Then the jobs of PARALLEL_DECODES run all at once (each
# program opens its own session), named with a "par-" prefix.
# For each job, exports JOB.md5 (one MD5 per frame, in output order),
# JOB.log (the program's messages) and a line in results.txt:
#     JOB status=N frames=M seconds=S
# where JOB is [par-]PROGRAM-NAME[-seek]. Exits 1 if a program failed.
. /test.env
out=/tmp/decode
mkdir -p $out
export HOME=/tmp
# GST_DEBUG (e.g. "v4l2*:6") reaches the programs; their messages go to
# each job's log.
[ -n "${GST_DEBUG:-}" ] && export GST_DEBUG GST_DEBUG_NO_COLOR=1

# The GStreamer elements and FFmpeg decoder of a codec.
ffmpeg_decoder() { echo "${1}_v4l2m2m"; }
gst_chain() { # FILE CODEC
	local demux="" parse
	case "$1" in *.mkv) demux="matroskademux ! " ;; esac
	case "$2" in
	h264) parse="h264parse ! v4l2h264dec" ;;
	hevc) parse="h265parse ! v4l2h265dec" ;;
	vp8) parse="v4l2vp8dec" ;;
	vp9) parse="vp9parse ! v4l2vp9dec" ;;
	esac
	echo "filesrc location=/extra/$1 ! $demux$parse ! videoconvert ! video/x-raw,format=NV12"
}
uptime_cs() { tr -d . < /proc/uptime | cut -d' ' -f1; }

run_job() { # PREFIX PROGRAM FILE CODEC SEEK
	local prefix=$1 program=$2 file=$3 codec=$4 seek=$5 job status start end
	job=$prefix$program-${file%.*}${seek:+-seek}
	start=$(uptime_cs)
	case "$program" in
	ffmpeg)
		# -noautoscale: frames keep their size across a resolution
		# change; passthrough: none dropped or repeated.
		ffmpeg -hide_banner -nostdin -loglevel warning ${seek:+-ss $seek} \
			-c:v "$(ffmpeg_decoder "$codec")" -i "/extra/$file" -map 0:v \
			-fps_mode passthrough -noautoscale -pix_fmt nv12 -f framemd5 "$out/$job.framemd5" \
			> "$out/$job.log" 2>&1
		status=$?
		grep -v '^#' "$out/$job.framemd5" 2>/dev/null | awk -F', *' '{ print $6 }' > "$out/$job.md5" ;;
	gst)
		gst-framemd5 ${seek:+--seek $seek} --timeout 120 "$(gst_chain "$file" "$codec")" \
			> "$out/$job.out" 2> "$out/$job.log"
		status=$?
		# Without EOS the stream did not end: a drain that never finished.
		grep -q '^EOS$' "$out/$job.out" || { echo "no EOS" >> "$out/$job.log"; status=1; }
		grep -v '^EOS$' "$out/$job.out" | awk '{ print $5 }' > "$out/$job.md5" ;;
	*)
		echo "unknown program $program" > "$out/$job.log"
		status=2 ;;
	esac
	end=$(uptime_cs)
	printf '%s status=%d frames=%d seconds=%d.%02d\n' "$job" "$status" "$(wc -l < "$out/$job.md5")" \
		$(( (end - start) / 100 )) $(( (end - start) % 100 )) >> $out/results.txt
	return $status
}

: > $out/results.txt
status=0
for spec in $DECODES; do
	IFS=: read -r program file codec seek <<-EOF
	$spec
	EOF
	run_job "" "$program" "$file" "$codec" "$seek" || status=1
done
pids=""
for spec in ${PARALLEL_DECODES:-}; do
	IFS=: read -r program file codec seek <<-EOF
	$spec
	EOF
	run_job par- "$program" "$file" "$codec" "$seek" &
	pids="$pids $!"
done
for pid in $pids; do wait "$pid" || status=1; done
cat $out/results.txt
for f in $out/*.md5 $out/*.log $out/results.txt; do
	export_file "$(basename "$f")" "$f"
done
exit $status
