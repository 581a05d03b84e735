#!/usr/bin/env bash
# Builds (once, cached) an initramfs part with the media programs of the
# codec tests, to append to the guest's initramfs (run-guest.sh --cpio):
#   - GStreamer 1.28 from Debian sid: gst-launch-1.0, gst-inspect-1.0 and
#     the plugins below, with the shared objects they load (their NEEDED
#     closure, resolved in the unpacked packages, the loader and libc
#     included, as guest-perf.sh does);
#   - gst-framemd5 (tools/vm/tests/gst-framemd5.c), built here against the
#     host's GStreamer headers (GStreamer 1.x keeps its ABI);
#   - ffmpeg and ffprobe from tools/vm/guest-ffmpeg.sh.
# Prints the .cpio.gz path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# The packages that hold the programs, plugins and libraries they load:
# downloaded one by one, not with their Depends closure (970 MB with the
# plugins' dependencies, most of which these plugins never load). A
# missing library is reported by the closure check below: add its package.
gst_packages="gstreamer1.0-tools libgstreamer1.0-0 gstreamer1.0-plugins-base
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad libgstreamer-plugins-base1.0-0
	libgstreamer-plugins-bad1.0-0 libc6 libglib2.0-0t64 libgudev-1.0-0 liborc-0.4-0t64
	libv4l-0t64 libv4lconvert0t64 libudev1 libpng16-16t64 zlib1g libbz2-1.0 libgcc-s1
	libpcre2-8-0 libffi8 libmount1 libblkid1 libselinux1 libcap2 liblzma5 libzstd1
	libatomic1 libdrm2 libgcrypt20 libgpg-error0 libjpeg62-turbo liblz4-1 libsystemd0"
# coreelements: filesrc, filesink, queue; app: appsink (gst-framemd5);
# video4linux2: the stateful V4L2 codecs (v4l2h264dec, v4l2h264enc, ...);
# videoparsersbad: h264parse, h265parse, vp9parse; matroska: the streams'
# container; rawparse: rawvideoparse (the encoder's input); videotestsrc
# and videoconvertscale: generated and converted pictures.
gst_plugins="coreelements app video4linux2 videoparsersbad matroska rawparse videotestsrc
	videoconvertscale"

cache_lock
ffmpeg=$("$VM_DIR/guest-ffmpeg.sh")
key=$( { cat "$VM_DIR/guest-media.sh" "$VM_DIR/tests/gst-framemd5.c"; echo "$ffmpeg"; } |
	sha256sum | cut -c1-12)
out=$CACHE_DIR/initramfs-media-$key.cpio.gz
if [ -f "$out" ]; then
	echo "$out"
	exit 0
fi
apt_install_missing gcc pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev

tree=$CACHE_DIR/gstreamer-sid-$(echo $gst_packages | sha256sum | cut -c1-12)
if [ ! -x "$tree/usr/bin/gst-launch-1.0" ]; then
	root=$(foreign_apt_root sid sid)
	foreign_apt_update "$root"
	rm -rf "$tree.tmp" "$tree.debs"
	mkdir -p "$tree.tmp" "$tree.debs"
	# shellcheck disable=SC2086 # a word list of packages
	(cd "$tree.debs" && foreign_apt "$root" apt-get download $gst_packages >&2) ||
		die "download of the GStreamer packages failed"
	for deb in "$tree.debs"/*.deb; do dpkg-deb -x "$deb" "$tree.tmp"; done
	rm -rf "$tree.debs" "$tree"
	mv "$tree.tmp" "$tree"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
libdir=usr/lib/x86_64-linux-gnu
mkdir -p "$stage/usr/bin" "$stage/$libdir/gstreamer-1.0" "$stage/$libdir/gstreamer1.0/gstreamer-1.0"
gcc -Wall -Wextra -Werror -O2 -o "$stage/usr/bin/gst-framemd5" "$VM_DIR/tests/gst-framemd5.c" \
	$(pkg-config --cflags --libs gstreamer-1.0 gstreamer-app-1.0 gstreamer-video-1.0) ||
	die "gst-framemd5 does not build"
cp "$tree/usr/bin/gst-launch-1.0" "$tree/usr/bin/gst-inspect-1.0" "$stage/usr/bin/"
# GStreamer forks its plugin scanner to build the registry.
cp "$tree/$libdir/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner" "$stage/$libdir/gstreamer1.0/gstreamer-1.0/"
objects=("$stage/usr/bin/gst-framemd5" "$stage/usr/bin/gst-launch-1.0" "$stage/usr/bin/gst-inspect-1.0"
	"$stage/$libdir/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner")
for plugin in $gst_plugins; do
	cp "$tree/$libdir/gstreamer-1.0/libgst$plugin.so" "$stage/$libdir/gstreamer-1.0/" ||
		die "no GStreamer plugin $plugin"
	objects+=("$stage/$libdir/gstreamer-1.0/libgst$plugin.so")
done
# Every object's NEEDED closure, resolved inside the sid tree only.
for object in "${objects[@]}"; do
	"$tree/$libdir/ld-linux-x86-64.so.2" --library-path "$tree/$libdir" --list "$object" ||
		die "$(basename "$object"): a library is missing from the sid tree (add its package)"
done | sed -n 's/.* => \(\/[^ ]*\) (.*/\1/p' | sort -u | while read -r lib; do
	case "$lib" in "$tree"/*) ;; *) die "a GStreamer object needs $lib from outside the sid tree (add its package)" ;; esac
	cp -L "$lib" "$stage/$libdir/"
done
cp -L "$tree/$libdir/ld-linux-x86-64.so.2" "$stage/$libdir/"
cp "$ffmpeg/bin/ffmpeg" "$ffmpeg/bin/ffprobe" "$stage/usr/bin/"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
