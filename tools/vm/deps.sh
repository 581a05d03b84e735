#!/usr/bin/env bash
# Installs what the build and the VM rig need on the host, when missing.
# Idempotent: a second run checks and returns quickly.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# pkg-config and the libav*-dev packages: the codec backends of
# tools/virtio-media-vfu (ffmpeg-next links Debian's FFmpeg; it does not
# build without its "format" feature, hence libavformat).
apt_pkgs="flex bison bc libelf-dev libssl-dev cpio busybox-static xz-utils zstd
	libclang-$LLVM_VERSION-dev clang-$LLVM_VERSION llvm-$LLVM_VERSION lld-$LLVM_VERSION
	python3 kmod rsync gcc libc6-dev file
	pkg-config libavcodec-dev libavformat-dev libavutil-dev libswscale-dev"
# shellcheck disable=SC2086 # a word list of packages
apt_install_missing $apt_pkgs

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "adding rust-src"
	rustup component add rust-src >&2
fi

if ! command -v bindgen >/dev/null || ! bindgen --version | grep -q " $BINDGEN_VERSION\$"; then
	log "installing bindgen-cli $BINDGEN_VERSION"
	LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib \
		cargo install bindgen-cli --version "$BINDGEN_VERSION" --locked >&2
fi
