# Guest test: v4l2-compliance with streaming on the virtio-media node.
# COMPLIANCE_ARGS (from /test.env) adds options, e.g. "-s" or "-s -u".
# EXPORTER=vivid also tests DMABUF, with vivid exporting the buffers (-e).
# If it is still running after COMPLIANCE_WATCHDOG seconds (default 150),
# every task's stack goes to the kernel log, which is exported.
. /test.env
if [ "${EXPORTER:-}" = vivid ]; then
	. /extra/vivid-exporter.sh
	COMPLIANCE_ARGS="${COMPLIANCE_ARGS:--s} -e $exporter"
fi
(
	sleep "${COMPLIANCE_WATCHDOG:-150}"
	echo "compliance.sh: still running, dumping task stacks" > /dev/kmsg
	echo t > /proc/sysrq-trigger
	dmesg > /tmp/dmesg-stuck.log
	export_file dmesg-stuck.log /tmp/dmesg-stuck.log
	cp /tmp/compliance.log /tmp/compliance-partial.log
	export_file compliance-partial.log /tmp/compliance-partial.log
) &
watchdog=$!
status=0
v4l2-compliance -d "${VIDEO:-/dev/video0}" ${COMPLIANCE_ARGS:--s} > /tmp/compliance.log 2>&1 || status=1
kill $watchdog 2>/dev/null
export_file compliance.log /tmp/compliance.log
grep -E "^Total for|fail:" /tmp/compliance.log
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
exit $status
