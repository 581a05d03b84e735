#!/usr/bin/env bash
# Installs what the build and the VM rig need on the host, when missing.
# Idempotent: a second run checks and returns quickly.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

apt_pkgs="flex bison bc libelf-dev libssl-dev cpio busybox-static xz-utils zstd
	libclang-$LLVM_VERSION-dev clang-$LLVM_VERSION llvm-$LLVM_VERSION lld-$LLVM_VERSION
	python3 kmod rsync gcc libc6-dev file"
missing=""
for p in $apt_pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends $missing >&2
fi

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "adding rust-src"
	rustup component add rust-src >&2
fi

if ! command -v bindgen >/dev/null || ! bindgen --version | grep -q " $BINDGEN_VERSION\$"; then
	log "installing bindgen-cli $BINDGEN_VERSION"
	LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib \
		cargo install bindgen-cli --version "$BINDGEN_VERSION" --locked >&2
fi
