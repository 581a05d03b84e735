# Guest test: the reference driver vivid (video capture and output nodes)
# under v4l2-compliance with streaming, to prove the guest userspace.
modprobe vivid n_devs=1 node_types=0x101 || exit 1
status=0
for dev in /dev/video0 /dev/video1; do
	v4l2-compliance -d "$dev" -s > /tmp/compliance.log 2>&1 || status=1
	export_file "compliance-$(basename "$dev").log" /tmp/compliance.log
	grep "^Total for" /tmp/compliance.log
done
exit $status
