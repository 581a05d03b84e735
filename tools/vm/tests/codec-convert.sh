# Guest test: GStreamer's v4l2convert (the V4L2 mem2mem converter element)
# through the driver on the test device's m2m backend. The same generated
# frames go once straight to gst-framemd5 and once through the device
# (NV12 in, NV12 out: a lossless round trip through its planar 4:2:0);
# both MD5 lists are exported for the host to compare (ref.md5,
# convert.md5). /test.env: CONVERT_FRAMES, CONVERT_SIZE (WIDTHxHEIGHT).
. /test.env
export HOME=/tmp
mkdir -p /tmp/convert
src="videotestsrc num-buffers=$CONVERT_FRAMES pattern=ball ! video/x-raw,format=NV12,width=${CONVERT_SIZE%x*},height=${CONVERT_SIZE#*x},framerate=30/1"
status=0
gst-framemd5 "$src" > /tmp/convert/ref.out 2> /tmp/convert/ref.log || status=1
gst-framemd5 "$src ! v4l2convert disable-passthrough=true ! video/x-raw,format=NV12" \
	> /tmp/convert/convert.out 2> /tmp/convert/convert.log || status=1
for f in ref convert; do
	grep -q '^EOS$' /tmp/convert/$f.out || { echo "FAIL: $f: no end of stream"; status=1; }
	grep -v '^EOS$' /tmp/convert/$f.out | awk '{ print $5 }' > /tmp/convert/$f.md5
	echo "$f: $(wc -l < /tmp/convert/$f.md5) frames"
	export_file $f.md5 /tmp/convert/$f.md5
	export_file $f.log /tmp/convert/$f.log
done
exit $status
