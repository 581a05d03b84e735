# Guest test: v4l2-compliance and a stream against a device that injects
# faults (set on the device's command line). Results may fail; the kernel
# must not: no BUG, WARNING, lockdep report or hang, and the driver logs
# what the device did wrong.
. /test.env
timeout 200 v4l2-compliance -d "${VIDEO:-/dev/video0}" -s > /tmp/compliance.log 2>&1
echo "v4l2-compliance exited with $?"
grep "^Total" /tmp/compliance.log
timeout 60 v4l2-ctl -d "${VIDEO:-/dev/video0}" --stream-mmap --stream-count=50 --stream-to=/dev/null > /dev/null 2>&1
rc=$?
echo "stream exited with $rc"
status=0
[ "$rc" = 124 ] && { echo "FAIL: stream hung"; status=1; }
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
grep virtio_media /tmp/dmesg.log | grep -v "Subtest\|ok \|# virtio" | sort | uniq -c | sort -rn | head -8
if grep -E "BUG:|WARNING:|possible circular|INFO: task|Oops" /tmp/dmesg.log; then
	echo "FAIL: kernel reported a problem"
	status=1
fi
[ $status = 0 ] && echo "PASS: no kernel problem under faults"
exit $status
