# Guest test: unbind the driver while a program streams, rebind it, unload
# the module. Passes when the program gets errors instead of hanging, the
# node goes and comes back, and the kernel logged no BUG, WARNING or
# lockdep report. In a batch ($VIRTIO_DEV and $VIDEO set) only that device
# is unbound, and the module is left loaded: /init unloads it at the end
# of the run, and a failure to unload fails the run.
. /test.env
status=0
dev=${VIRTIO_DEV:-$(basename "$(readlink -f /sys/bus/virtio/drivers/virtio_media/virtio*)")}
node=${VIDEO:-/dev/video0}
[ -n "$dev" ] || { echo "FAIL: no bound device"; exit 1; }
timeout 60 v4l2-ctl -d "$node" --stream-mmap --stream-count=100000 --stream-to=/dev/null \
	> /tmp/stream.log 2>&1 &
streamer=$!
sleep 2
echo "$dev" > /sys/bus/virtio/drivers/virtio_media/unbind || { echo "FAIL: unbind"; status=1; }
wait $streamer
rc=$?
echo "streamer exited with $rc after unbind"
[ "$rc" = 124 ] && { echo "FAIL: streamer hung after unbind"; status=1; }
tail -n 3 /tmp/stream.log
[ -e "$node" ] && { echo "FAIL: $node still exists"; status=1; }
echo "$dev" > /sys/bus/virtio/drivers/virtio_media/bind || { echo "FAIL: rebind"; status=1; }
sleep 1
# The node it has now (its number may have changed).
node=""
for v in /sys/bus/virtio/devices/"$dev"/video4linux/video*; do
	[ -e "$v" ] && node=/dev/$(basename "$v")
done
[ -n "$node" ] || { echo "FAIL: no node after rebind"; status=1; }
timeout 30 v4l2-ctl -d "${node:-/dev/null}" --stream-mmap --stream-count=10 --stream-to=/dev/null ||
	{ echo "FAIL: streaming after rebind"; status=1; }
if [ -z "${VIRTIO_DEV:-}" ]; then
	rmmod virtio_media || { echo "FAIL: rmmod"; status=1; }
fi
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
if grep -E "BUG:|WARNING:|possible circular|INFO: task|Oops" /tmp/dmesg.log; then
	echo "FAIL: kernel reported a problem"
	status=1
fi
[ $status = 0 ] && echo "PASS: unbind while streaming, rebind$([ -z "${VIRTIO_DEV:-}" ] && echo ", rmmod")"
exit $status
