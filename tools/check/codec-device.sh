# Guest tests of the test device's codec backends (virtio-media-vfu
# --backend decoder and encoder) on the driver's other memory types:
# v4l2-compliance -s with 0 failures and its streaming tests run, with MMAP
# buffers in guest memory (guest_mmap=1), on a device without shared
# memory, and (encoder) with DMABUF buffers that vivid exports. The plain
# MMAP/USERPTR compliance runs and the tests with real programs are in
# codec.sh.

# A 10-frame H.264 stream (B-frames, a key frame every 5) for the
# decoder's --stream-from, made by the host's FFmpeg.
codec_device_stream="" codec_device_guest_envs=()
need_codec_device_stream() {
	[ -n "$codec_device_stream" ] && return 0
	local log=$results/codec-device-stream.log
	apt_install_missing ffmpeg > "$log" 2>&1 || return 1
	ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=320x240:rate=30 -frames:v 10 \
		-c:v libx264 -bf 2 -g 5 -y "$results/codec-device-10.h264" >> "$log" 2>&1 || return 1
	codec_device_stream=$results/codec-device-10.h264
}

# codec_device_compliance NAME "DEVICE FLAGS" LABEL ENV FILE MEMORY...:
# v4l2-compliance -s in a guest; MEMORY is each streaming test that must
# have run and passed (MMAP, USERPTR, DMABUF), "guest-mmap" that the
# driver put MMAP buffers in guest memory.
codec_device_compliance() {
	local name=$1 flags=$2 label=$3 env=$4 file=$5 m log totals
	shift 5
	need module && need vfu || return 1
	guest "$name" --ko "$ko" ${file:+--ko "$file"} --modules virtio_media --vfu "$flags" \
		--append "$module_params" --env "$env" "${codec_device_guest_envs[@]}" \
		--test tools/vm/tests/compliance.sh --timeout 600
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
			if grep -q 'MMAP buffers are in guest memory' "$results/$name/dmesg.log" 2>/dev/null; then
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

t_codec_device_decoder() { # VARIANT
	local flags="--device-id 42 --backend decoder" label="decoder"
	need_codec_device_stream || { record "codec device: test stream" FAIL "($results/codec-device-stream.log)"; return; }
	case "$1" in
	guest-mmap) module_params=virtio_media.guest_mmap=1 label="$label, guest_mmap=1" ;;
	no-shm) flags="$flags --no-shm" label="$label, no shared memory" ;;
	esac
	codec_device_compliance "codec-device-decoder-$1" "$flags" "$label" \
		"COMPLIANCE_ARGS=-s --stream-from /extra/$(basename "$codec_device_stream")" "$codec_device_stream" \
		MMAP USERPTR guest-mmap
	module_params=""
}

t_codec_device_encoder() { # VARIANT
	local flags="--device-id 42 --backend encoder" label="encoder" env="COMPLIANCE_ARGS=-s" file="" expect
	expect=(MMAP USERPTR guest-mmap)
	case "$1" in
	guest-mmap) module_params=virtio_media.guest_mmap=1 label="$label, guest_mmap=1" ;;
	no-shm) flags="$flags --no-shm" label="$label, no shared memory" ;;
	dmabuf)
		# vivid has no H.264: its YUYV 1280x720 buffers (1.8 MB) hold a
		# 640x480 NV12 frame and a 1 MiB coded buffer.
		env="EXPORTER=vivid" file=tools/vm/tests/vivid-exporter.sh label="$label, vivid exports (-e)"
		codec_device_guest_envs=(--env "EXPORTER_FORMAT=width=1280,height=720,pixelformat=YUYV")
		expect=(DMABUF) ;;
	esac
	codec_device_compliance "codec-device-encoder-$1" "$flags" "$label" "$env" "$file" "${expect[@]}"
	module_params=""
	codec_device_guest_envs=()
}

for variant in guest-mmap no-shm; do
	check_test "codec-device-decoder-$variant" t_codec_device_decoder "$variant"
done
for variant in guest-mmap no-shm dmabuf; do
	check_test "codec-device-encoder-$variant" t_codec_device_encoder "$variant"
done
