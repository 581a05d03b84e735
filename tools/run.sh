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

vfu_args=()
V4L2R_VIDEODEV2_H_PATH=$(tools/vm/kernel.sh headers)
export V4L2R_VIDEODEV2_H_PATH
if [ -x tools/virtio-media-vfu/build.sh ] && tools/virtio-media-vfu/build.sh >&2; then
	vfu_args=(--vfu "--device-id ${DEVICE_ID:-42}")
	test=tools/vm/tests/run-demo.sh
else
	log "the test device does not build: booting without it"
	test=tools/vm/tests/run-module-only.sh
fi

set +e
tools/vm/run-guest.sh --name run --ko "$ko" --modules virtio_media --test "$test" \
	"${vfu_args[@]}" --timeout 300
status=$?
set -e
out=$BUILD_DIR/results/run
# Show what the guest printed, from the test's start marker on.
sed -n '/=== RUN START ===/,$p' "$out/console.log" | tr -d '\r'
if [ -f "$out/frame.raw" ] && [ -f "$out/frame.fmt" ]; then
	mkdir -p "$BUILD_DIR/run"
	python3 tools/vm/raw2png.py "$out/frame.fmt" "$out/frame.raw" "$BUILD_DIR/run/frame.png"
	log "captured frame ($(cat "$out/frame.fmt")) written to $BUILD_DIR/run/frame.png"
fi
exit $status
