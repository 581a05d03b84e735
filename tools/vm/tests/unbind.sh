# Guest test: unbind the driver while a program streams, rebind it, unload
# the module. Passes when the program gets errors instead of hanging, the
# node comes back, and the kernel logged no BUG, WARNING or lockdep report.
status=0
dev=$(basename "$(readlink -f /sys/bus/virtio/drivers/virtio_media/virtio*)")
[ -n "$dev" ] || { echo "FAIL: no bound device"; exit 1; }
timeout 60 v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=100000 --stream-to=/dev/null \
	> /tmp/stream.log 2>&1 &
streamer=$!
sleep 2
echo "$dev" > /sys/bus/virtio/drivers/virtio_media/unbind || { echo "FAIL: unbind"; status=1; }
wait $streamer
rc=$?
echo "streamer exited with $rc after unbind"
[ "$rc" = 124 ] && { echo "FAIL: streamer hung after unbind"; status=1; }
tail -n 3 /tmp/stream.log
[ -e /dev/video0 ] && { echo "FAIL: /dev/video0 still exists"; status=1; }
echo "$dev" > /sys/bus/virtio/drivers/virtio_media/bind || { echo "FAIL: rebind"; status=1; }
sleep 1
timeout 30 v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=10 --stream-to=/dev/null ||
	{ echo "FAIL: streaming after rebind"; status=1; }
rmmod virtio_media || { echo "FAIL: rmmod"; status=1; }
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
if grep -E "BUG:|WARNING:|possible circular|INFO: task|Oops" /tmp/dmesg.log; then
	echo "FAIL: kernel reported a problem"
	status=1
fi
[ $status = 0 ] && echo "PASS: unbind while streaming, rebind, rmmod"
exit $status
