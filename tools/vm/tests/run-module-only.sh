# make run without the test device: show that the driver loaded.
echo "=== RUN START ==="
grep virtio_media /proc/modules
ls /sys/bus/virtio/drivers/
test -d /sys/bus/virtio/drivers/virtio_media
