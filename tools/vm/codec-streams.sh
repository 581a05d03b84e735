#!/usr/bin/env bash
# Makes (once, cached) the test streams of the codec tests with the host's
# FFmpeg (x264, x265, libvpx), and their references: the host's software
# decode of each stream, one MD5 per frame in NV12 (FFmpeg's framemd5), the
# pixel format the guest asks the decoder for. Prints the folder, which holds:
#   NAME.mkv or NAME.h264     the stream
#   NAME.framemd5             the reference decode (ffmpeg -f framemd5)
#   NAME.md5                  its MD5 column, one line per frame
#   streams.txt               NAME FILE CODEC WIDTHxHEIGHT FRAMES, one a line
#   enc-src-640x480.nv12      the encoder tests' source, 30 raw frames
#   h264-320x240-short.h264   10 frames for v4l2-compliance --stream-from
#
# The pictures are testsrc2 (moving colour bars, a moving gradient and a
# frame counter), so a repeated, dropped or misplaced frame changes the MD5.
# The streams are short because TCG guests are slow: 2 s for the B-frame
# stream (the seek tests need two keyframes), 1 s at 640x480, 1/3 s at
# 1280x720 and 1920x1080, 2/3 s for the other codecs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

apt_install_missing ffmpeg
cache_lock
key=$( { cat "$VM_DIR/codec-streams.sh"; ffmpeg -version | head -n 1; } | sha256sum | cut -c1-12)
out=$CACHE_DIR/codec-streams-$key
if [ -f "$out/streams.txt" ]; then
	echo "$out"
	exit 0
fi
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cd "$out.tmp"

ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
# pattern SIZE FRAMES: the moving test pattern at 30 frames per second.
pattern() { echo "testsrc2=size=$1:rate=30,trim=end_frame=$2"; }
# x264 with a keyframe every second; extra options after the size.
h264() { # NAME SIZE FRAMES X264-OPTIONS...
	local name=$1 size=$2 frames=$3
	shift 3
	ff -f lavfi -i "$(pattern "$size" "$frames")" -pix_fmt yuv420p -c:v libx264 -g 30 \
		-preset veryfast "$@" "$name.mkv"
	echo "$name $name.mkv h264 $size $frames" >> streams.txt
}

# B-frames (x264's default of 3, high profile) and the seek tests' stream.
h264 h264-320x240-bframes 320x240 60 -bf 3
# Without B-frames (main profile), at the sizes programs use.
h264 h264-640x480 640x480 30 -bf 0 -profile:v main
h264 h264-1280x720 1280x720 10 -bf 0
h264 h264-1920x1080 1920x1080 10 -bf 0
# A resolution change mid-stream: two encodes at two sizes, one after the
# other in an Annex B stream (the second starts with its own SPS and IDR).
ff -f lavfi -i "$(pattern 320x240 10)" -pix_fmt yuv420p -c:v libx264 -bf 0 -preset veryfast part1.h264
ff -f lavfi -i "$(pattern 640x480 10)" -pix_fmt yuv420p -c:v libx264 -bf 0 -preset veryfast part2.h264
cat part1.h264 part2.h264 > h264-reschange.h264
rm part1.h264 part2.h264
echo "h264-reschange h264-reschange.h264 h264 320x240,640x480 20" >> streams.txt
# A short Annex B stream for v4l2-compliance --stream-from, which puts the
# whole file in each OUTPUT buffer it streams (60 by default): 10 frames.
ff -f lavfi -i "$(pattern 320x240 10)" -pix_fmt yuv420p -c:v libx264 -bf 0 -preset veryfast \
	h264-320x240-short.h264
ff -f lavfi -i "$(pattern 320x240 20)" -pix_fmt yuv420p -c:v libx265 -x265-params log-level=error \
	-g 30 hevc-320x240.mkv
echo "hevc-320x240 hevc-320x240.mkv hevc 320x240 20" >> streams.txt
ff -f lavfi -i "$(pattern 320x240 20)" -pix_fmt yuv420p -c:v libvpx -b:v 1M -g 30 vp8-320x240.mkv
echo "vp8-320x240 vp8-320x240.mkv vp8 320x240 20" >> streams.txt
ff -f lavfi -i "$(pattern 320x240 20)" -pix_fmt yuv420p -c:v libvpx-vp9 -b:v 1M -g 30 vp9-320x240.mkv
echo "vp9-320x240 vp9-320x240.mkv vp9 320x240 20" >> streams.txt
# The benchmark's streams (make bench): longer, without B-frames.
for size in 640x480:150 1920x1080:60; do
	ff -f lavfi -i "$(pattern "${size%:*}" "${size#*:}")" -pix_fmt yuv420p -c:v libx264 -g 30 \
		-bf 0 -preset veryfast "bench-${size%:*}.mkv"
done
# The encoder tests' source: 30 raw NV12 frames.
ff -f lavfi -i "$(pattern 640x480 30)" -pix_fmt nv12 -f rawvideo enc-src-640x480.nv12

# The references: every frame at its own size (-noautoscale: the resolution
# change is not scaled away), none dropped or repeated (passthrough).
while read -r name file _; do
	ff -i "$file" -map 0:v -fps_mode passthrough -noautoscale -pix_fmt nv12 -f framemd5 "$name.framemd5"
	grep -v '^#' "$name.framemd5" | awk -F', *' '{ print $6 }' > "$name.md5"
done < streams.txt
# Each reference has the frames the stream was made with.
while read -r name _ _ _ frames; do
	[ "$(wc -l < "$name.md5")" = "$frames" ] ||
		die "$name: the host decodes $(wc -l < "$name.md5") frames, not $frames"
done < streams.txt
cd /
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
