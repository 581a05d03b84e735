# Guest tests of the codec devices through the driver with real programs:
# FFmpeg (*_v4l2m2m) and GStreamer (v4l2*dec, v4l2h264enc, v4l2convert)
# decode, encode and convert; every decoded frame is compared with the
# host's software decode of the same stream (tools/vm/codec-streams.sh),
# encodes are decoded on the host and measured (PSNR). The programs come
# from tools/vm/guest-media.sh, appended to the guest's initramfs.
#
# All of it but v4l2-compliance runs in one guest ("codec-programs", with
# a decoder, an m2m converter and an encoder device): a boot of the debug
# kernel costs about 30 s under TCG. The first codec test that needs it
# starts it; each test then reports its own lines from its files.

# The codecs the test device decodes (virtio-media-vfu --backend decoder).
codec_decoder_codecs="h264 hevc vp8 vp9"
codec_decoder_flags="--device-id 48 --backend decoder"
codec_convert_flags="--device-id 48 --backend m2m"
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
# Two programs at once on the decoder, each in its own session.
codec_parallel="ffmpeg:h264-640x480.mkv:h264 gst:$codec_seek_stream.mkv:h264"
# The encoder tests: 30 raw NV12 frames; the host's decode of what each
# program encoded must reach this PSNR against them.
codec_enc_src=enc-src-640x480.nv12 codec_enc_size=640x480 codec_enc_frames=30
codec_min_psnr=35
codec_convert_frames=30

# need_codec: the media initramfs part and the streams, built once.
codec_media="" codec_streams=""
need_codec() {
	[ -n "$codec_streams" ] && return 0
	codec_media=$(tools/vm/guest-media.sh 2> "$results/guest-media.log") || return 1
	codec_streams=$(tools/vm/codec-streams.sh 2> "$results/codec-streams.log") || return 1
}

# codec_has_backend NAME: the test device was built with that backend.
codec_has_backend() {
	"$vfu_bin" --help 2>/dev/null | grep -q "\"$1\" ="
}

# codec_programs: the shared guest run, once per make check; its files are
# in $results/codec-programs/. Every test that reads them counts its
# kernel reports.
codec_programs_status=""
codec_programs() {
	guest_runs+=("$results/codec-programs")
	[ -n "$codec_programs_status" ] && return "$codec_programs_status"
	codec_programs_status=1
	need module && need vfu && need_codec || return 1
	local decodes="" stream file codec program args=() vfus=()
	for program in ffmpeg gst; do
		while read -r stream file codec _; do
			[[ " $codec_decoder_codecs " == *" $codec "* ]] || continue
			decodes="$decodes $program:$file:$codec"
			[ "$program" = ffmpeg ] && args+=(--file "$codec_streams/$file")
		done < "$codec_streams/streams.txt"
		decodes="$decodes $program:$codec_seek_stream.mkv:h264:${codec_seek_s[$program]}"
	done
	# Device order is PCI order: the decoder is /dev/video0.
	vfus=(--vfu "$codec_decoder_flags" --vfu "$codec_convert_flags")
	args+=(--file tools/vm/tests/codec-decode.sh --file tools/vm/tests/codec-convert.sh
		--env "DECODES=${decodes# }" --env "PARALLEL_DECODES=$codec_parallel"
		--env "CONVERT_FRAMES=$codec_convert_frames" --env CONVERT_SIZE=320x240)
	if codec_has_backend encoder; then
		vfus+=(--vfu "$codec_encoder_flags")
		args+=(--file tools/vm/tests/codec-encode.sh --file "$codec_streams/$codec_enc_src"
			--env "ENC_SRC=$codec_enc_src" --env "ENC_SIZE=$codec_enc_size")
	fi
	# 8 minutes with the host loaded 10 on its 2 cores; at 16 it ran past
	# 15 (the boot alone took 70 s).
	guest codec-programs --ko "$ko" --modules virtio_media --cpio "$codec_media" "${vfus[@]}" \
		"${args[@]}" --test tools/vm/tests/codec-programs.sh --timeout 1800
	codec_programs_status=$?
	return "$codec_programs_status"
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

# record_decode LABEL JOB REF [FIRST]: one decode job of codec-decode.sh
# against its reference; OK when every frame is there and equal.
record_decode() {
	local label=$1 job=$2 ref=$3 first=${4:-1} dir=$results/codec-programs got expected differ missing seconds
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

# Every stream of the device's codecs decoded by PROGRAM, then the seek;
# each stream's result is its own line, and the last frame of every stream
# (the drain at end of stream) has its own.
t_codec_decode() { # PROGRAM
	local program=$1 dir=$results/codec-programs stream file codec drained=0 streams=0 undrained=""
	codec_programs || [ -s "$dir/results.txt" ] ||
		{ record "codec: $program decodes" FAIL "no results ($results/codec-programs.run.log)"; return; }
	while read -r stream file codec _; do
		[[ " $codec_decoder_codecs " == *" $codec "* ]] || continue
		record_decode "codec: $program decodes $stream" "$program-$stream" "$codec_streams/$stream.md5"
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
	record_decode "codec: $program seek to ${codec_seek_s[$program]} s, frames from $codec_seek_frame" \
		"$program-$codec_seek_stream-seek" "$codec_streams/$codec_seek_stream.md5" $((codec_seek_frame + 1))
}
check_test codec-decode-ffmpeg t_codec_decode ffmpeg
check_test codec-decode-gst t_codec_decode gst

# Two programs decode at once, each in its own session of one device.
t_codec_two_sessions() {
	local spec program file
	codec_programs
	for spec in $codec_parallel; do
		IFS=: read -r program file _ <<< "$spec"
		record_decode "codec: two at once, $program ${file%.*}" "par-$program-${file%.*}" \
			"$codec_streams/${file%.*}.md5"
	done
}
check_test codec-two-sessions t_codec_two_sessions

# GStreamer's V4L2 mem2mem plumbing on the m2m converter backend: frames
# through v4l2convert (NV12 to NV12) must equal the frames without it.
t_codec_gst_convert() {
	local dir=$results/codec-programs got expected differ missing frames=$codec_convert_frames
	codec_programs
	read -r got expected differ missing < <(compare_frames "$dir/convert.md5" "$dir/ref.md5")
	if [ "$got" = "$frames" ] && [ "$expected" = "$frames" ] && [ "$differ" = 0 ]; then
		record "codec: gst v4l2convert through the driver" OK "$got of $expected frames, $differ differ"
	else
		record "codec: gst v4l2convert through the driver" FAIL \
			"$got of $expected frames (of $frames), $differ differ, $missing missing ($dir/convert.log)"
	fi
}
check_test codec-gst-convert t_codec_gst_convert

# The encoder: FFmpeg and GStreamer encode the same raw sequence through
# the driver; the host decodes each stream and compares it with the source.
t_codec_encode() {
	local dir=$results/codec-programs program stream frames psnr average min
	if ! codec_has_backend encoder; then
		record "codec: encode (ffmpeg, gst)" FAIL "the test device has no encoder backend ($vfu_bin --help)"
		return
	fi
	codec_programs
	for program in ffmpeg gst; do
		stream=$dir/$program-enc.h264
		frames=$(ffmpeg -nostdin -v error -i "$stream" -f framemd5 - 2>/dev/null | grep -vc '^#')
		# psnr prints "PSNR y:.. u:.. v:.. average:A min:M max:.." for
		# the frames both inputs have, paired by timestamp: frame N of
		# each gets timestamp N (a raw H.264 stream has none of its own;
		# the demuxer's guess differs from the raw input's).
		psnr=$(ffmpeg -nostdin -hide_banner -i "$stream" -f rawvideo -pix_fmt nv12 \
			-video_size "$codec_enc_size" -i "$codec_streams/$codec_enc_src" \
			-lavfi '[0:v]settb=1/30,setpts=N[a];[1:v]settb=1/30,setpts=N[b];[a][b]psnr' \
			-f null - 2>&1 | grep -o 'PSNR y:.*' | tail -n 1)
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

# v4l2-compliance -s on both codec devices, added to the batch of
# codec-device.sh (a boot of its own cost about 35 s): the decoder streams
# a real H.264 stream (--stream-from, Annex B; the whole file goes in every
# OUTPUT buffer, so a short one); 0 failures.
codec_compliance_judge() { # decoder|encoder, after batch_run
	local log=$results/codec-compliance-$1/compliance.log totals
	totals=$(grep '^Total for' "$log" 2>/dev/null | tail -n 1)
	if [ -n "$totals" ] && echo "$totals" | grep -q 'Failed: 0,'; then
		record "codec: v4l2-compliance -s, $1" OK "$totals"
	else
		record "codec: v4l2-compliance -s, $1" FAIL "${totals:-no totals} ($log)"
	fi
}
codec_compliance() {
	need module && need vfu && need_codec ||
		{ record "codec: v4l2-compliance -s (prerequisites)" FAIL; return; }
	batch_case codec-compliance-decoder "$codec_decoder_flags" tools/vm/tests/compliance.sh 400 \
		"codec_compliance_judge decoder" "COMPLIANCE_ARGS=-s --stream-from=/extra/h264-320x240-short.h264" \
		"$codec_streams/h264-320x240-short.h264"
	if codec_has_backend encoder; then
		batch_case codec-compliance-encoder "$codec_encoder_flags" tools/vm/tests/compliance.sh 400 \
			"codec_compliance_judge encoder" "COMPLIANCE_ARGS=-s"
	else
		record "codec: v4l2-compliance -s, encoder" FAIL "the test device has no encoder backend"
	fi
}
