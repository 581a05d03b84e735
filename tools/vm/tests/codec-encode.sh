# Guest test: encodes a raw NV12 sequence to H.264 through the driver with
# FFmpeg (h264_v4l2m2m) and GStreamer (v4l2h264enc), and exports the
# streams (ffmpeg-enc.h264, gst-enc.h264) and logs for the host, which
# decodes them and measures the PSNR against the source.
# /test.env: ENC_SRC (a file in /extra), ENC_SIZE (WIDTHxHEIGHT).
. /test.env
export HOME=/tmp
mkdir -p /tmp/encode
src=/extra/$ENC_SRC
width=${ENC_SIZE%x*}
height=${ENC_SIZE#*x}
status=0

# FFmpeg's default bit rate, 200 kb/s, sets the device's
# V4L2_CID_MPEG_VIDEO_BITRATE; GStreamer leaves the device's default.
ffmpeg -hide_banner -nostdin -loglevel warning -f rawvideo -pix_fmt nv12 -video_size "$ENC_SIZE" \
	-framerate 30 -i "$src" -c:v h264_v4l2m2m -b:v 4M -f h264 /tmp/encode/ffmpeg-enc.h264 \
	> /tmp/encode/ffmpeg-enc.log 2>&1 || { echo "FAIL: ffmpeg exited with $?"; status=1; }
# h264parse to byte-stream: an Annex B file like FFmpeg's.
gst-launch-1.0 -q filesrc location="$src" ! \
	rawvideoparse format=nv12 width="$width" height="$height" framerate=30/1 ! \
	v4l2h264enc ! h264parse ! video/x-h264,stream-format=byte-stream ! \
	filesink location=/tmp/encode/gst-enc.h264 > /tmp/encode/gst-enc.log 2>&1 ||
	{ echo "FAIL: gst-launch-1.0 exited with $?"; status=1; }
ls -l /tmp/encode
for f in /tmp/encode/*; do export_file "$(basename "$f")" "$f"; done
exit $status
