#!/usr/bin/env bash
# Builds (once, cached) a small FFmpeg for the test guest from the source of
# Debian sid's ffmpeg package: the ffmpeg and ffprobe programs, linked
# statically, with only what the codec tests use: the V4L2 mem2mem decoders
# and encoders (the driver's path), H.264/HEVC/VP8/VP9 software decoders
# (the guest's own decode, for the benchmark), their parsers, the Matroska,
# IVF and raw demuxers, and the framemd5, rawvideo, H.264 and PNG muxers.
# Debian's own binary loads 190 libraries (216 MB); this one is a single
# file that the guest starts at once. Prints the folder holding bin/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cache_lock
key=$(sha256sum "$VM_DIR/guest-ffmpeg.sh" | cut -c1-12)
out=$CACHE_DIR/ffmpeg-guest-$key
if [ -x "$out/bin/ffmpeg" ]; then
	echo "$out"
	exit 0
fi
# nasm: the x86 assembly of the software decoders, which the benchmark
# compares against.
apt_install_missing nasm pkg-config zlib1g-dev xz-utils

# The upstream tarball of sid's source package (apt verifies it against
# the signed Sources index). Debian's patches are about packaging and the
# libraries it links, none of which this build uses.
src=$CACHE_DIR/ffmpeg-src
if ! ls "$src"/ffmpeg_*.orig.tar.xz > /dev/null 2>&1; then
	root=$(foreign_apt_root --src sid-src sid)
	foreign_apt_update "$root"
	rm -rf "$src.tmp"; mkdir -p "$src.tmp"
	(cd "$src.tmp" && foreign_apt "$root" apt-get source --download-only --tar-only ffmpeg >&2) ||
		die "apt-get source ffmpeg failed"
	rm -rf "$src"; mv "$src.tmp" "$src"
fi
tarball=$(ls "$src"/ffmpeg_*.orig.tar.xz | sort -V | tail -n 1)

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -xf "$tarball" -C "$build" --strip-components=1
# The 7.3 UAPI headers: videodev2.h newer than bookworm's.
headers=$("$VM_DIR/kernel.sh" headers)
log "building FFmpeg $(basename "$tarball" .orig.tar.xz) for the guest (a few minutes)"
components=(
	--enable-decoder=h264_v4l2m2m,hevc_v4l2m2m,vp8_v4l2m2m,vp9_v4l2m2m,h264,hevc,vp8,vp9,rawvideo,png
	--enable-encoder=h264_v4l2m2m,rawvideo,png,wrapped_avframe
	--enable-parser=h264,hevc,vp8,vp9,png
	--enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe_split,null
	--enable-demuxer=matroska,ivf,h264,hevc,rawvideo,image2
	--enable-muxer=framemd5,md5,rawvideo,h264,hevc,matroska,image2,null
	--enable-protocol=file,pipe
	--enable-filter=scale,format,null,trim,copy,fps,setpts,psnr,buffer,buffersink
)
(
	cd "$build"
	nice -n 10 ./configure --prefix="$out.tmp" --disable-everything --disable-autodetect \
		--disable-doc --disable-network --disable-debug --disable-ffplay --disable-avdevice \
		--disable-shared --enable-static --extra-ldflags=-static --pkg-config-flags=--static \
		--enable-v4l2-m2m --enable-zlib --enable-pthreads \
		--extra-cflags="-I$headers" "${components[@]}" > configure.log 2>&1 ||
		{ tail -n 30 configure.log >&2; exit 1; }
	nice -n 10 make -j2 > make.log 2>&1 || { tail -n 30 make.log >&2; exit 1; }
	make install > install.log 2>&1 || { tail -n 30 install.log >&2; exit 1; }
) || die "the FFmpeg build failed"
# What the guest needs: the two programs.
rm -rf "$out"
mkdir -p "$out/bin"
install -m 755 "$out.tmp/bin/ffmpeg" "$out.tmp/bin/ffprobe" "$out/bin/"
strip "$out/bin/ffmpeg" "$out/bin/ffprobe"
rm -rf "$out.tmp"
echo "$out"
