#!/usr/bin/env bash
# make run: builds everything, boots a guest with the virtio-media test
# device, loads the driver and uses it like a V4L2 program would.
set -euo pipefail
. "$(dirname "$0")/vm/lib.sh"
cd "$REPO_DIR"

tools/vm/deps.sh
KDIR=${KDIR:-$(tools/vm/kernel.sh)}
export KDIR
make -s modules
ko=drivers/media/virtio/virtio_media.ko
# The clip the guest decodes (tools/vm/codec-streams.sh): H.264 640x480,
# 30 frames of a moving test pattern.
demo_clip=h264-640x480.mkv

vfu_args=() media=()
V4L2R_VIDEODEV2_H_PATH=$(tools/vm/kernel.sh headers)
export V4L2R_VIDEODEV2_H_PATH
if [ -x tools/virtio-media-vfu/build.sh ] && tools/virtio-media-vfu/build.sh >&2; then
	# A camera (moving frames through mmap, as v4l2-ctl streams them) and
	# a video decoder, which FFmpeg and GStreamer use.
	vfu_args=(--vfu "--device-id ${DEVICE_ID:-42} --backend capture" --vfu "--device-id 48 --backend decoder")
	media=(--cpio "$(tools/vm/guest-media.sh)" --file "$(tools/vm/codec-streams.sh)/$demo_clip")
	test=tools/vm/tests/run-demo.sh
else
	log "the test device does not build: booting without it"
	test=tools/vm/tests/run-module-only.sh
fi

set +e
tools/vm/run-guest.sh --name run --ko "$ko" --modules virtio_media --test "$test" \
	"${vfu_args[@]}" "${media[@]}" --env "DEMO_CLIP=$demo_clip" --timeout 600
status=$?
set -e
out=$BUILD_DIR/results/run
# Show what the guest printed, from the test's start marker on.
sed -n '/=== RUN START ===/,$p' "$out/console.log" | tr -d '\r'
mkdir -p "$BUILD_DIR/run"
rm -f "$BUILD_DIR"/run/*.png
pngs=$(find "$out" -maxdepth 1 -name 'decoded-*.png' | sort)
if [ -n "$pngs" ]; then
	# shellcheck disable=SC2086 # file names without spaces
	cp $pngs "$BUILD_DIR/run/"
	log "decoded frames written to $BUILD_DIR/run/: $(cd "$BUILD_DIR/run" && echo decoded-*.png)"
fi
exit $status
