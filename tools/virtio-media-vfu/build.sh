#!/bin/sh
# Build helper for virtio-media-vfu.
#
# v4l2r (pulled in by the virtio-media crate) runs bindgen on videodev2.h in its
# build script. Debian bookworm's /usr/include/linux/videodev2.h is too old, so
# point it at a recent `make headers_install` tree. V4L2R_VIDEODEV2_H_PATH must
# be the directory that *contains* linux/ (it is passed as -I to clang, and the
# wrapper does #include <linux/videodev2.h>).
#
# Usage: ./build.sh [cargo subcommand and args]   (default: build --release -j1)
set -eu
cd "$(dirname "$0")"
: "${V4L2R_VIDEODEV2_H_PATH:=${XDG_CACHE_HOME:-$HOME/.cache}/virtio-media-rs/headers-7.3/usr/include}"
if [ ! -f "$V4L2R_VIDEODEV2_H_PATH/linux/videodev2.h" ]; then
	echo "build.sh: $V4L2R_VIDEODEV2_H_PATH/linux/videodev2.h not found;" >&2
	echo "build.sh: set V4L2R_VIDEODEV2_H_PATH to a headers_install usr/include directory" >&2
	exit 1
fi
# v4l2r's build script also emits rerun-if-changed=$V4L2R_VIDEODEV2_H_PATH/videodev2.h,
# a file that does not exist in a headers_install tree, which would make cargo
# re-run bindgen on every build. Point it at a shim directory that has both
# the include tree (symlinks) and a videodev2.h at its top.
hdrs=$(cd "$V4L2R_VIDEODEV2_H_PATH" && pwd)
# The dependencies take 90 s to build on 2 cores and the crate itself 10:
# every checkout (make check runs in fresh clones) shares one cargo target
# directory in the cache, used by one cargo at a time. The shim's path is
# part of v4l2r's build inputs, so it lives there too, the same for all.
cache=${VIRTIO_MEDIA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-media-rs}
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
	CARGO_TARGET_DIR=$cache/cargo-target
	export CARGO_TARGET_DIR
	mkdir -p "$cache/locks" "$CARGO_TARGET_DIR"
	exec 9> "$cache/locks/cargo-target"
	flock 9
	# Cargo knows this crate by its path within the checkout and judges
	# it by its files' times: another checkout's older files would pass
	# for built. After another checkout built here, this one's are made
	# newer than anything built.
	if [ "$(cat "$CARGO_TARGET_DIR/checkout" 2>/dev/null)" != "$(pwd)" ]; then
		find src tests build.rs Cargo.toml -type f -exec touch {} + 2> /dev/null || true
		pwd > "$CARGO_TARGET_DIR/checkout"
	fi
fi
shim="$CARGO_TARGET_DIR/videodev2-include-$(echo "$hdrs" | cksum | cut -d' ' -f1)"
mkdir -p "$shim"
for e in "$hdrs"/*; do
	ln -sfn "$e" "$shim/"
done
ln -sfn "$hdrs/linux/videodev2.h" "$shim/videodev2.h"
V4L2R_VIDEODEV2_H_PATH="$shim"
export V4L2R_VIDEODEV2_H_PATH
if [ -z "${LIBCLANG_PATH:-}" ] && [ -d /usr/lib/llvm-19/lib ]; then
	export LIBCLANG_PATH=/usr/lib/llvm-19/lib
fi
if [ $# -eq 0 ]; then
	set -- build --release -j1
fi
cargo "$@"
# The tools run the release binary from the checkout: a copy, taken under
# the lock, so another checkout's build cannot change it under them.
if [ "$1" = build ] && [ -f "$CARGO_TARGET_DIR/release/virtio-media-vfu" ] &&
	[ "$CARGO_TARGET_DIR" != "$(pwd)/target" ]; then
	case " $* " in *" --release "* | *" -r "*)
		mkdir -p target/release
		cp "$CARGO_TARGET_DIR/release/virtio-media-vfu" target/release/virtio-media-vfu.new
		mv target/release/virtio-media-vfu.new target/release/virtio-media-vfu ;;
	esac
fi
