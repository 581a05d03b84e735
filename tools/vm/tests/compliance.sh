# Guest test: v4l2-compliance with streaming on the virtio-media node.
# COMPLIANCE_ARGS (from /test.env) adds options, e.g. "-s" or "-s -u".
. /test.env
status=0
v4l2-compliance -d /dev/video0 ${COMPLIANCE_ARGS:--s} > /tmp/compliance.log 2>&1 || status=1
export_file compliance.log /tmp/compliance.log
grep -E "^Total for|fail:" /tmp/compliance.log
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
exit $status
