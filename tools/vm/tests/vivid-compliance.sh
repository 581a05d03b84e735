# Guest test: the reference driver vivid (its video capture node) under
# v4l2-compliance with streaming, to prove the guest userspace. Its node is
# found by name: other drivers' may be there too. (The output node took
# another 50 s of make check for what the driver's own output runs show.)
modprobe vivid n_devs=1 node_types=0x1 || exit 1
status=0
found=0
for d in /sys/class/video4linux/video*; do
	name=$(cat "$d/name")
	case "$name" in vivid-*) ;; *) continue ;; esac
	found=$((found + 1))
	v4l2-compliance -d "/dev/$(basename "$d")" -s > /tmp/compliance.log 2>&1 || status=1
	# By vivid's name of the node (vivid-000-vid-cap).
	export_file "compliance-$name.log" /tmp/compliance.log
	grep "^Total for" /tmp/compliance.log
done
[ "$found" = 1 ] || { echo "FAIL: $found vivid nodes, expected 1"; status=1; }
exit $status
