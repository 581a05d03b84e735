# Guest tests of the test device's codec backends (virtio-media-vfu
# --backend decoder and encoder) on the driver's other memory types:
# v4l2-compliance -s with 0 failures and its streaming tests run, with MMAP
# buffers in guest memory (guest_mmap=1), on a device without shared
# memory, and (encoder) with DMABUF buffers that vivid exports. The plain
# MMAP/USERPTR compliance runs and the tests with real programs are in
# codec.sh.

# A 10-frame H.264 stream (B-frames, a key frame every 5) for the
# decoder's --stream-from, made by the host's FFmpeg.
codec_device_stream=""
need_codec_device_stream() {
	[ -n "$codec_device_stream" ] && return 0
	local log=$results/codec-device-stream.log
	apt_install_missing ffmpeg > "$log" 2>&1 || return 1
	ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=320x240:rate=30 -frames:v 10 \
		-c:v libx264 -bf 2 -g 5 -y "$results/codec-device-10.h264" >> "$log" 2>&1 || return 1
	codec_device_stream=$results/codec-device-10.h264
}

# codec_device_compliance NAME "DEVICE FLAGS" LABEL FILE MEMORY... [VAR=VALUE...]:
# adds to the batch v4l2-compliance -s; MEMORY is each streaming test that
# must have run and passed (MMAP, USERPTR, DMABUF), "guest-mmap" that the
# driver put MMAP buffers in guest memory; VAR=VALUE go to the guest.
codec_device_compliance() {
	local name=$1 flags=$2 label=$3 file=$4 arg expect=() envs=()
	shift 4
	for arg in "$@"; do
		if [[ $arg == *=* ]]; then envs+=("$arg"); else expect+=("$arg"); fi
	done
	batch_case "$name" "$flags" tools/vm/tests/compliance.sh 400 \
		"codec_device_judge $(printf '%q ' "$name" "$label" "${expect[@]}")" "${envs[@]}" "$file"
}
codec_device_judge() { # NAME LABEL MEMORY..., after batch_run
	local name=$1 label=$2 m log totals
	shift 2
	log=$results/$name/compliance.log
	cp "$log" "$results/$name.compliance.log" 2>/dev/null
	totals=$(grep '^Total for' "$log" 2>/dev/null | tail -n 1)
	if [ -n "$totals" ] && echo "$totals" | grep -q 'Failed: 0,'; then
		record "codec device: v4l2-compliance -s, $label" OK "$totals"
	else
		record "codec device: v4l2-compliance -s, $label" FAIL "${totals:-no totals} ($log)"
	fi
	for m in "$@"; do
		case "$m" in
		guest-mmap)
			# The driver names the device (the batch's guest has several).
			if grep -q "virtio_media $case_virtio: MMAP buffers are in guest memory" \
				"$results/$name/dmesg.log" 2>/dev/null; then
				record "codec device: MMAP in guest memory, $label" OK
			else
				record "codec device: MMAP in guest memory, $label" FAIL "($results/$name/dmesg.log)"
			fi ;;
		*)
			# v4l2-compliance names the MMAP tests "(select, REQBUFS)" and so on.
			if grep -qE "test $m \((select|select, REQBUFS)\): OK\$" "$log" 2>/dev/null; then
				record "codec device: $m streaming, $label" OK
			else
				record "codec device: $m streaming, $label" FAIL "($log)"
			fi ;;
		esac
	done
}

codec_device_decoder() { # VARIANT
	local flags="--device-id 42 --backend decoder" label="decoder"
	case "$1" in
	guest-mmap) label="$label, guest_mmap=1" ;;
	no-shm) flags="$flags --no-shm" label="$label, no shared memory" ;;
	esac
	codec_device_compliance "codec-device-decoder-$1" "$flags" "$label" "$codec_device_stream" \
		MMAP USERPTR guest-mmap "COMPLIANCE_ARGS=-s --stream-from /extra/$(basename "$codec_device_stream")"
}

codec_device_encoder() { # VARIANT
	local flags="--device-id 42 --backend encoder" label="encoder"
	case "$1" in
	guest-mmap) label="$label, guest_mmap=1" ;;
	no-shm) flags="$flags --no-shm" label="$label, no shared memory" ;;
	dmabuf)
		# vivid has no H.264: its YUYV 1280x720 buffers (1.8 MB) hold a
		# 640x480 NV12 frame and a 1 MiB coded buffer.
		codec_device_compliance codec-device-encoder-dmabuf "$flags" "$label, vivid exports (-e)" \
			tools/vm/tests/vivid-exporter.sh DMABUF EXPORTER=vivid \
			"EXPORTER_FORMAT=width=1280,height=720,pixelformat=YUYV"
		return ;;
	esac
	codec_device_compliance "codec-device-encoder-$1" "$flags" "$label" "" MMAP USERPTR guest-mmap \
		"COMPLIANCE_ARGS=-s"
}

# One boot, each case with its own device: the codec compliance runs of
# codec.sh, then the cases without guest_mmap=1, then those with it (the
# batch loads the module again once for them).
t_codec_device() {
	# Before the stream check: these cases do not need the stream.
	codec_compliance
	need_codec_device_stream || { record "codec device: test stream" FAIL "($results/codec-device-stream.log)"; batch_run codec-device; return; }
	codec_device_decoder no-shm
	codec_device_encoder no-shm
	codec_device_encoder dmabuf
	case_params=guest_mmap=1
	codec_device_decoder guest-mmap
	codec_device_encoder guest-mmap
	case_params=""
	batch_run codec-device
}
check_test codec-device t_codec_device
