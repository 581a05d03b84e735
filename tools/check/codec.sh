# Guest tests of the codec devices through the driver with real programs:
# FFmpeg (*_v4l2m2m) and GStreamer (v4l2*dec, v4l2h264enc) decode and
# encode; every decoded frame is compared with the host's software decode
# of the same stream (tools/vm/codec-streams.sh), encodes are decoded on
# the host and measured (PSNR). The programs come from
# tools/vm/guest-media.sh, appended to the guest's initramfs.

# The codecs the test device decodes (virtio-media-vfu --backend decoder).
codec_decoder_codecs="h264 hevc vp8 vp9"
codec_decoder_flags="--device-id 48 --backend decoder"
codec_encoder_flags="--device-id 48 --backend encoder"
# The seek tests: 2 s stream at 30 frames per second, keyframes at 0 and
# 1 s; both programs must continue from frame 45 (between keyframes).
# FFmpeg's -ss T gives the frames whose timestamp is T or later: T is that
# frame's timestamp, 1.5 s. A GStreamer accurate seek gives the frame on
# screen at T first, and Matroska's millisecond durations make frame 44
# (1.467 s) last until 1.5 s or 1.501 s: T is the middle of frame 45.
codec_seek_stream=h264-320x240-bframes
codec_seek_frame=45
declare -A codec_seek_s=([ffmpeg]=1.5 [gst]=1.517)

# need_codec: the media initramfs part and the streams, built once.
codec_media="" codec_streams=""
need_codec() {
	[ -n "$codec_streams" ] && return 0
	codec_media=$(tools/vm/guest-media.sh 2> "$results/guest-media.log") || return 1
	codec_streams=$(tools/vm/codec-streams.sh 2> "$results/codec-streams.log") || return 1
}

# codec_guest NAME "DEVICE FLAGS" TEST [--env VAR=VALUE]... [STREAM-FILE]...:
# a guest with the module, the media programs, one test device and the
# stream files in /extra.
codec_guest() {
	local name=$1 flags=$2 test=$3 args=()
	shift 3
	need module && need vfu && need_codec || return 1
	while [ $# -gt 0 ]; do
		if [ "$1" = --env ]; then
			args+=(--env "$2")
			shift 2
		else
			args+=(--file "$codec_streams/$1")
			shift
		fi
	done
	guest "$name" --ko "$ko" --modules virtio_media --cpio "$codec_media" "${args[@]}" \
		--vfu "$flags" --test "$test" --timeout 600
}

# compare_frames GOT REF [FIRST]: prints "GOT EXPECTED DIFFER MISSING" for
# the guest's MD5 list GOT against the reference's lines FIRST.. (1-based);
# a frame differs when its MD5 is not the reference's at its position, and
# frames beyond the reference count as differing.
compare_frames() {
	tail -n +"${3:-1}" "$2" | awk '
		NR == FNR { ref[FNR] = $1; expected = FNR; next }
		{ got++; if (!(FNR in ref) || ref[FNR] != $1) differ++ }
		END {
			missing = expected - got
			print got + 0, expected + 0, differ + 0, (missing > 0 ? missing : 0)
		}' - "$1" 2>/dev/null || echo "0 0 0 0"
}

# record_decode LABEL DIR JOB REF [FIRST]: one decode job of codec-decode.sh
# against its reference; OK when every frame is there and equal.
record_decode() {
	local label=$1 dir=$2 job=$3 ref=$4 first=${5:-1} got expected differ missing seconds
	if [ ! -s "$dir/$job.md5" ]; then
		record "$label" FAIL "no frame: $(grep -m1 "^$job " "$dir/results.txt" 2>/dev/null) ($dir/$job.log)"
		return
	fi
	read -r got expected differ missing < <(compare_frames "$dir/$job.md5" "$ref" "$first")
	seconds=$(sed -n "s/^$job status=.* seconds=\([0-9.]*\)/\1/p" "$dir/results.txt")
	local detail="$got of $expected frames, $differ differ, $missing missing, ${seconds:-?} s"
	if [ "$got" = "$expected" ] && [ "$differ" = 0 ] && [ "$expected" -gt 0 ] &&
		grep -q "^$job status=0 " "$dir/results.txt"; then
		record "$label" OK "$detail"
	else
		record "$label" FAIL "$detail ($dir/$job.log)"
	fi
}

# Every stream of the device's codecs decoded by PROGRAM in one guest, then
# the seek; each stream's result is its own line, and the last frame of
# every stream (the drain at end of stream) has its own.
t_codec_decode() { # PROGRAM
	local program=$1 name=codec-decode-$1 dir decodes="" files=() stream file codec
	local drained=0 streams=0 undrained=""
	need_codec || { record "codec: $program decodes (prerequisites)" FAIL "($results/guest-media.log, $results/codec-streams.log)"; return; }
	while read -r stream file codec _; do
		[[ " $codec_decoder_codecs " == *" $codec "* ]] || continue
		decodes="$decodes $program:$file:$codec"
		files+=("$file")
	done < "$codec_streams/streams.txt"
	decodes="$decodes $program:$codec_seek_stream.mkv:h264:${codec_seek_s[$program]}"
	codec_guest "$name" "$codec_decoder_flags" tools/vm/tests/codec-decode.sh \
		--env "DECODES='${decodes# }'" "${files[@]}"
	dir=$results/$name
	while read -r stream file codec _; do
		[[ " $codec_decoder_codecs " == *" $codec "* ]] || continue
		record_decode "codec: $program decodes $stream" "$dir" "$program-$stream" "$codec_streams/$stream.md5"
		streams=$((streams + 1))
		if [ -s "$dir/$program-$stream.md5" ] &&
			[ "$(tail -n 1 "$dir/$program-$stream.md5")" = "$(tail -n 1 "$codec_streams/$stream.md5")" ]; then
			drained=$((drained + 1))
		else
			undrained="$undrained $stream"
		fi
	done < "$codec_streams/streams.txt"
	if [ "$drained" = "$streams" ] && [ "$streams" -gt 0 ]; then
		record "codec: $program end of stream reaches the last frame" OK "$drained of $streams streams"
	else
		record "codec: $program end of stream reaches the last frame" FAIL "$drained of $streams streams; not:$undrained"
	fi
	record_decode "codec: $program seek to ${codec_seek_s[$program]} s, frames from $codec_seek_frame" "$dir" \
		"$program-$codec_seek_stream-seek" "$codec_streams/$codec_seek_stream.md5" $((codec_seek_frame + 1))
}
check_test codec-decode-ffmpeg t_codec_decode ffmpeg
check_test codec-decode-gst t_codec_decode gst

# Two programs decode at once, each in its own session of one device.
t_codec_two_sessions() {
	local name=codec-two-sessions dir
	need_codec || { record "codec: two sessions (prerequisites)" FAIL; return; }
	codec_guest "$name" "$codec_decoder_flags" tools/vm/tests/codec-decode.sh \
		--env "DECODES='ffmpeg:h264-640x480.mkv:h264 gst:$codec_seek_stream.mkv:h264'" --env PARALLEL=1 \
		h264-640x480.mkv "$codec_seek_stream.mkv"
	dir=$results/$name
	record_decode "codec: two at once, ffmpeg h264-640x480" "$dir" ffmpeg-h264-640x480 \
		"$codec_streams/h264-640x480.md5"
	record_decode "codec: two at once, gst $codec_seek_stream" "$dir" "gst-$codec_seek_stream" \
		"$codec_streams/$codec_seek_stream.md5"
}
check_test codec-two-sessions t_codec_two_sessions

# The encoder: FFmpeg and GStreamer encode the same raw sequence through
# the driver; the host decodes each stream and compares it with the source.
codec_enc_src=enc-src-640x480.nv12 codec_enc_size=640x480 codec_enc_frames=30
codec_min_psnr=35
t_codec_encode() {
	local name=codec-encode dir program stream frames psnr average min
	need_codec || { record "codec: encode (prerequisites)" FAIL; return; }
	codec_guest "$name" "$codec_encoder_flags" tools/vm/tests/codec-encode.sh \
		--env "ENC_SRC=$codec_enc_src" --env "ENC_SIZE=$codec_enc_size" "$codec_enc_src"
	dir=$results/$name
	for program in ffmpeg gst; do
		stream=$dir/$program-enc.h264
		frames=$(ffmpeg -nostdin -v error -i "$stream" -f framemd5 - 2>/dev/null | grep -vc '^#')
		# psnr prints "PSNR y:.. u:.. v:.. average:A min:M max:.." for
		# the frames both inputs have.
		psnr=$(ffmpeg -nostdin -hide_banner -i "$stream" -f rawvideo -pix_fmt nv12 \
			-video_size "$codec_enc_size" -i "$codec_streams/$codec_enc_src" \
			-lavfi '[0:v][1:v]psnr' -f null - 2>&1 | grep -o 'PSNR y:.*' | tail -n 1)
		average=$(echo "$psnr" | sed -n 's/.*average:\([0-9.inf]*\).*/\1/p')
		min=$(echo "$psnr" | sed -n 's/.* min:\([0-9.inf]*\).*/\1/p')
		local detail="$frames of $codec_enc_frames frames, PSNR average ${average:-?} dB, min ${min:-?} dB"
		if [ "$frames" = "$codec_enc_frames" ] && [ -n "$average" ] &&
			awk -v a="$average" -v m="$codec_min_psnr" 'BEGIN { exit !(a == "inf" || a + 0 >= m) }'; then
			record "codec: $program encodes $codec_enc_size, PSNR >= $codec_min_psnr" OK "$detail"
		else
			record "codec: $program encodes $codec_enc_size, PSNR >= $codec_min_psnr" FAIL "$detail ($dir/$program-enc.log)"
		fi
	done
}
check_test codec-encode t_codec_encode

# v4l2-compliance -s on both codec devices: the decoder streams a real
# H.264 stream (--stream-from, Annex B); 0 failures.
t_codec_compliance() { # decoder|encoder
	local kind=$1 name=codec-compliance-$1 log totals flags args="-s" files=()
	need_codec || { record "codec: v4l2-compliance -s, $kind (prerequisites)" FAIL; return; }
	if [ "$kind" = decoder ]; then
		flags=$codec_decoder_flags
		args="-s --stream-from=/extra/$codec_seek_stream.h264"
		files=("$codec_seek_stream.h264")
	else
		flags=$codec_encoder_flags
	fi
	codec_guest "$name" "$flags" tools/vm/tests/compliance.sh --env "COMPLIANCE_ARGS='$args'" "${files[@]}"
	log=$results/$name/compliance.log
	totals=$(grep '^Total for' "$log" 2>/dev/null | tail -n 1)
	if [ -n "$totals" ] && echo "$totals" | grep -q 'Failed: 0,'; then
		record "codec: v4l2-compliance -s, $kind" OK "$totals"
	else
		record "codec: v4l2-compliance -s, $kind" FAIL "${totals:-no totals} ($log)"
	fi
}
check_test codec-compliance-decoder t_codec_compliance decoder
check_test codec-compliance-encoder t_codec_compliance encoder

# GStreamer's V4L2 mem2mem plumbing on the m2m converter backend: frames
# through v4l2convert (NV12 to NV12) must equal the frames without it.
t_codec_gst_convert() {
	local name=codec-gst-convert dir got expected differ missing frames=30
	need_codec || { record "codec: gst v4l2convert (prerequisites)" FAIL; return; }
	codec_guest "$name" "--device-id 48 --backend m2m" tools/vm/tests/codec-convert.sh \
		--env "CONVERT_FRAMES=$frames" --env CONVERT_SIZE=320x240
	dir=$results/$name
	read -r got expected differ missing < <(compare_frames "$dir/convert.md5" "$dir/ref.md5")
	if [ "$got" = "$frames" ] && [ "$expected" = "$frames" ] && [ "$differ" = 0 ]; then
		record "codec: gst v4l2convert through the driver" OK "$got of $expected frames, $differ differ"
	else
		record "codec: gst v4l2convert through the driver" FAIL \
			"$got of $expected frames (of $frames), $differ differ, $missing missing ($dir)"
	fi
}
check_test codec-gst-convert t_codec_gst_convert
