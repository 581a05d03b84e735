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
shim="$(pwd)/target/videodev2-include"
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
exec cargo "$@"
