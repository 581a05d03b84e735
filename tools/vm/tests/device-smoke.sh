# Guest test: the test device is a virtio device with the expected ID, has a
# shared-memory region, and the driver bound to it after an OPEN/CLOSE round
# trip. Expects EXPECT_ID (decimal) in the environment file /test.env.
. /test.env
status=0
found=""
for d in /sys/bus/virtio/devices/*; do
	id=$(cat "$d/device")
	echo "virtio device $(basename "$d"): device $id vendor $(cat "$d/vendor")"
	[ "$((id))" = "$EXPECT_ID" ] && found=$d
done
[ -n "$found" ] || { echo "FAIL: no virtio device with ID $EXPECT_ID"; status=1; }
if [ -n "$found" ]; then
	drv=$(basename "$(readlink "$found/driver")")
	echo "bound driver: $drv"
	[ "$drv" = virtio_media ] || { echo "FAIL: driver not bound"; status=1; }
fi
dmesg | grep virtio_media
dmesg | grep -q "virtio_media virtio[0-9]*: device id $EXPECT_ID:.*shm 0x[0-9a-f]*+0x[1-9a-f]" ||
	{ echo "FAIL: no shared-memory region reported"; status=1; }
dmesg | grep -q "virtio_media: device answers: opened and closed session" ||
	{ echo "FAIL: no OPEN/CLOSE round trip"; status=1; }
exit $status
