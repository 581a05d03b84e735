# Guest test: the module, installed under /lib/modules/$(uname -r) and
# indexed by depmod, is loaded by modprobe of a device's modalias (what
# udev or mdev run when a device appears) and binds the device. The guest
# has two test devices, IDs 42 and 48: one alias each.
status=0
fail() { echo "FAIL: $*"; status=1; }

dir=/lib/modules/$(uname -r)
mkdir -p "$dir/extra"
cp /extra/virtio_media.ko "$dir/extra/"
depmod || fail "depmod"
echo "$dir/modules.alias:"
grep virtio_media "$dir/modules.alias"

for id in 42 48; do
	dev=""
	for d in /sys/bus/virtio/devices/*; do
		[ "$(($(cat "$d/device")))" = "$id" ] && dev=$d
	done
	[ -n "$dev" ] || { fail "no virtio device with ID $id"; continue; }
	alias=$(cat "$dev/modalias")
	grep -q "^virtio_media " /proc/modules && fail "virtio_media loaded before modprobe"
	[ -e "$dev/driver" ] && fail "$dev bound before modprobe"
	echo "modprobe $alias"
	modprobe "$alias" || fail "modprobe $alias"
	grep -q "^virtio_media " /proc/modules || fail "modprobe $alias did not load virtio_media"
	driver=$(basename "$(readlink "$dev/driver")")
	echo "device $id ($(basename "$dev")): driver ${driver:-none}"
	[ "$driver" = virtio_media ] || fail "device $id not bound to virtio_media"
	rmmod virtio_media || fail "rmmod virtio_media"
done
[ "$status" = 0 ] && echo "PASS: modprobe of both modaliases loaded virtio_media, which bound the device"
exit $status
