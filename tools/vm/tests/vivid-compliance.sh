# Guest test: the reference driver vivid (video capture and output nodes)
# under v4l2-compliance with streaming, to prove the guest userspace. Its
# nodes are found by name: other drivers' may be there too.
modprobe vivid n_devs=1 node_types=0x101 || exit 1
status=0
found=0
for d in /sys/class/video4linux/video*; do
	name=$(cat "$d/name")
	case "$name" in vivid-*) ;; *) continue ;; esac
	found=$((found + 1))
	v4l2-compliance -d "/dev/$(basename "$d")" -s > /tmp/compliance.log 2>&1 || status=1
	# By vivid's name of the node (vivid-000-vid-cap, ...-vid-out).
	export_file "compliance-$name.log" /tmp/compliance.log
	grep "^Total for" /tmp/compliance.log
done
[ "$found" = 2 ] || { echo "FAIL: $found vivid nodes, expected 2"; status=1; }
exit $status
