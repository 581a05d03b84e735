# Guest test: several test cases in one boot, each against its own test
# device (tools/check/lib.sh's batch_run writes the list). A boot costs
# 30 to 50 s of make check's time (kernel start, module unload, kmemleak
# scan); a case alone often less.
#
# /extra/batch-cases.txt has one case a line, "ID SCRIPT SECONDS": the
# case of line K runs /extra/SCRIPT against the K-th test device in PCI
# order, with /extra/ID.env as its /test.env, under a limit of SECONDS.
# Its /test.env also gets VIDEO (the device's node) and VIRTIO_DEV (its
# virtio device), and export_file puts its files in results/ID/. The
# console shows "=== CASE ID BEGIN virtioN videoM ===" and "=== CASE ID
# STATUS N ===" around the case's output. Between cases everything a case started is killed and
# /tmp is emptied; the kernel log is kept whole for the end-of-run checks.
cases=/extra/batch-cases.txt
status=0

. /usr/lib/vm/lib.sh

# Each device's node, found before any case can unbind one: "virtioN
# videoM", or "virtioN none" when the driver did not bind it. (Builtins
# only: a fork costs up to 200 ms here, and a batch has a dozen devices.)
find_devices() {
	devices=""
	for pci in /sys/bus/pci/devices/*; do
		read -r vendor < "$pci/vendor"
		[ "$vendor" = 0x1af4 ] || continue
		for virtio in "$pci"/virtio*; do
			[ -d "$virtio" ] || continue
			node=none
			for v in "$virtio"/video4linux/video*; do
				[ -d "$v" ] && node=${v##*/}
			done
			devices="$devices${devices:+
}${virtio##*/} $node"
		done
	done
	echo "batch: devices in PCI order:"
	while read -r line; do echo "  $line"; done <<DEVICES
$devices
DEVICES
}
find_devices

# The driver's parameters as /init loaded it ("virtio_media.p=v" on the
# kernel command line). A case whose env sets MODULE_PARAMS ("p=v ...")
# runs with those instead: the module is loaded again when a case's
# parameters differ from the loaded ones, so that cases with different
# parameters share a boot (order them to reload once: a reload probes
# every device again).
cmdline_params virtio_media
boot_params=$params
loaded_params=$params
reload_driver() { # PARAMS
	echo "batch: loading virtio_media again with '$1'"
	rmmod virtio_media && insmod /extra/virtio_media.ko $1 || return 1
	loaded_params=$1
	find_devices
}

k=0
while read -r id script seconds; do
	k=$((k + 1))
	# The case's env (upper-case names only, batch_case's rule) read here
	# for MODULE_PARAMS; its script sources it again as /test.env.
	MODULE_PARAMS=$boot_params
	. "/extra/$id.env"
	params=$MODULE_PARAMS
	if [ "$params" != "$loaded_params" ] && ! reload_driver "$params"; then
		echo "=== CASE $id BEGIN none none ==="
		echo "FAIL: loading virtio_media with '$params' failed"
		echo "=== CASE $id STATUS 1 ==="
		status=1
		continue
	fi
	# The k-th line of $devices.
	virtio=none node=none i=0
	while read -r dev_virtio dev_node; do
		i=$((i + 1))
		[ "$i" = "$k" ] && virtio=$dev_virtio node=$dev_node
	done <<DEVICES
$devices
DEVICES
	echo "=== CASE $id BEGIN $virtio $node ==="
	echo "batch: case $id on $virtio ($node) begins" > /dev/kmsg
	{ cat "/extra/$id.env"; echo "VIDEO='/dev/$node'"; echo "VIRTIO_DEV='$virtio'"; } > /test.env
	# A case about a device the driver refuses says so (NO_NODE=1).
	if [ "$node" = none ] && ! grep -q "^NO_NODE=" "/extra/$id.env"; then
		echo "FAIL: the case's device (number $k) has no video node"
		rc=1
	else
		EXPORT_DIR=$id timeout "$seconds" sh "/extra/$script" < /dev/null
		rc=$?
		[ "$rc" = 124 ] || [ "$rc" = 143 ] && echo "FAIL: case $id still running after $seconds s"
	fi
	# What the case left running would hold its device or disturb the next:
	# killed, and waited for (2 s at most).
	kill_user_tasks
	rm -rf /tmp/* 2>/dev/null
	echo "batch: case $id ended with $rc" > /dev/kmsg
	echo "=== CASE $id STATUS $rc ==="
	[ "$rc" = 0 ] || status=1
done < "$cases"
exit $status
