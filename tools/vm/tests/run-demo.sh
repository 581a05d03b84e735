# make run with the test device: what the driver does with it so far.
echo "=== RUN START ==="
for d in /sys/bus/virtio/devices/*; do
	echo "virtio device $(basename "$d"): device $(cat "$d/device"), driver $(basename "$(readlink "$d/driver")")"
done
dmesg | grep virtio_media
ls /dev/video* 2>/dev/null && v4l2-ctl --all
dmesg | grep -q "virtio_media: device answers"
