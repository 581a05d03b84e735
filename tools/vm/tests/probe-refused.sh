# Guest test, a batch case with NO_NODE=1: the driver refused its device
# ($VIRTIO_DEV) at probe. Passes when the device has no driver and no
# node, the kernel log has EXPECT_LOG (the driver's reason), and no
# WARNING or BUG.
. /test.env
status=0
dir=/sys/bus/virtio/devices/$VIRTIO_DEV
[ -d "$dir" ] || { echo "FAIL: no virtio device $VIRTIO_DEV"; exit 1; }
if [ -e "$dir/driver" ]; then
	echo "FAIL: $VIRTIO_DEV is bound to $(basename "$(readlink "$dir/driver")")"
	status=1
fi
if ls "$dir"/video4linux/* > /dev/null 2>&1; then
	echo "FAIL: $VIRTIO_DEV has a node"
	status=1
fi
line=$(dmesg | grep "$VIRTIO_DEV" | grep -m 1 -F "$EXPECT_LOG" | sed 's/^\[[^]]*\] //')
[ -n "$line" ] || { echo "FAIL: no log line for $VIRTIO_DEV with \"$EXPECT_LOG\""; status=1; }
if dmesg | grep -E "WARNING:|BUG:"; then
	echo "FAIL: the kernel reported a problem"
	status=1
fi
[ $status = 0 ] && echo "PASS: not bound; the driver said: $line"
exit $status
