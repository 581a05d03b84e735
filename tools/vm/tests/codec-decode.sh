# Guest test: decodes streams through the driver with FFmpeg and GStreamer
# and exports every frame's MD5 (NV12, visible pixels) for the host to
# compare with its software decode. Needs the media initramfs part
# (tools/vm/guest-media.sh) and the streams in /extra.
#
# /test.env: DECODES="JOB ..." where a JOB is PROGRAM:FILE:CODEC[:SEEK]:
# PROGRAM ffmpeg or gst, FILE a stream in /extra, CODEC h264, hevc, vp8 or
# vp9, SEEK a position in seconds to seek to before decoding. PARALLEL=1
# runs all the jobs at once (each program opens its own session).
# For each job, exports JOB.md5 (one MD5 per frame, in output order),
# JOB.log (the program's messages) and a line in results.txt:
#     JOB status=N frames=M seconds=S
# where JOB is PROGRAM-NAME[-seek]. Exits 1 if a program failed.
. /test.env
mkdir -p /tmp/out
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

run_job() { # PROGRAM FILE CODEC SEEK
	local program=$1 file=$2 codec=$3 seek=$4 job status start end
	job=$program-${file%.*}${seek:+-seek}
	start=$(uptime_cs)
	case "$program" in
	ffmpeg)
		# -noautoscale: frames keep their size across a resolution
		# change; passthrough: none dropped or repeated.
		ffmpeg -hide_banner -nostdin -loglevel warning ${seek:+-ss $seek} \
			-c:v "$(ffmpeg_decoder "$codec")" -i "/extra/$file" -map 0:v \
			-fps_mode passthrough -noautoscale -pix_fmt nv12 -f framemd5 "/tmp/out/$job.framemd5" \
			> "/tmp/out/$job.log" 2>&1
		status=$?
		grep -v '^#' "/tmp/out/$job.framemd5" 2>/dev/null | awk -F', *' '{ print $6 }' > "/tmp/out/$job.md5" ;;
	gst)
		gst-framemd5 ${seek:+--seek $seek} --timeout 120 "$(gst_chain "$file" "$codec")" \
			> "/tmp/out/$job.out" 2> "/tmp/out/$job.log"
		status=$?
		# Without EOS the stream did not end: a drain that never finished.
		grep -q '^EOS$' "/tmp/out/$job.out" || { echo "no EOS" >> "/tmp/out/$job.log"; status=1; }
		grep -v '^EOS$' "/tmp/out/$job.out" | awk '{ print $5 }' > "/tmp/out/$job.md5" ;;
	*)
		echo "unknown program $program" > "/tmp/out/$job.log"
		status=2 ;;
	esac
	end=$(uptime_cs)
	printf '%s status=%d frames=%d seconds=%d.%02d\n' "$job" "$status" "$(wc -l < "/tmp/out/$job.md5")" \
		$(( (end - start) / 100 )) $(( (end - start) % 100 )) >> /tmp/out/results.txt
	return $status
}

: > /tmp/out/results.txt
status=0
pids=""
for spec in $DECODES; do
	IFS=: read -r program file codec seek <<-EOF
	$spec
	EOF
	if [ "${PARALLEL:-0}" = 1 ]; then
		run_job "$program" "$file" "$codec" "$seek" &
		pids="$pids $!"
	else
		run_job "$program" "$file" "$codec" "$seek" || status=1
	fi
done
for pid in $pids; do wait "$pid" || status=1; done
cat /tmp/out/results.txt
for f in /tmp/out/*.md5 /tmp/out/*.log /tmp/out/results.txt; do
	export_file "$(basename "$f")" "$f"
done
exit $status
