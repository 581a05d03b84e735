# Guest test: one case of tools/vm/tests/hardening.c (CASE and ARGS in
# /test.env), plus what the kernel log must (not) say afterwards. The
# kernel-report check of /init runs after it, as after every test.
. /test.env
dev=${VIDEO:-/dev/video0}
# The device of the node (a batch has several).
vdev=${VIRTIO_DEV:-$(basename "$(readlink -f /sys/bus/virtio/drivers/virtio_media/virtio*)")}
bin=/extra/hardening
status=0
# Pages pinned by FOLL_PIN and not released yet.
pinned_pages() {
	echo 1 > /proc/sys/vm/stat_refresh
	awk '$1 == "nr_foll_pin_acquired" { a = $2 } $1 == "nr_foll_pin_released" { r = $2 }
		END { print a - r }' /proc/vmstat
}
case "$CASE" in
close-pins)
	# The device keeps the pages of a session whose CLOSE failed until it
	# is reset: unbinding it must give every one back.
	before=$(pinned_pages)
	timeout 120 $bin close-pins $dev || status=1
	echo "$vdev" > /sys/bus/virtio/drivers/virtio_media/unbind || { echo "FAIL: unbind"; status=1; }
	after=$(pinned_pages)
	echo "close-pins: pinned pages $before before, $after after the device was unbound"
	if [ "$after" != "$before" ]; then
		echo "FAIL: pages stay pinned after the device was reset"
		status=1
	elif [ "$status" = 0 ]; then
		echo "PASS: $before pinned pages before, $after after the unbind"
	fi
	;;
mmap-unbind)
	$bin mmap-unbind $dev /tmp/go > /tmp/case.log 2>&1 &
	pid=$!
	for _ in $(seq 100); do grep -q waiting /tmp/case.log && break; sleep 0.1; done
	echo "$vdev" > /sys/bus/virtio/drivers/virtio_media/unbind || echo "FAIL: unbind"
	touch /tmp/go
	wait $pid || status=1
	cat /tmp/case.log
	;;
enum-fmt)
	# The device reports a format the kernel does not know, with an empty
	# description: the driver names it, where the V4L2 core would WARN.
	out=$(timeout 60 v4l2-ctl -d $dev --list-formats 2>&1) || status=1
	echo "$out"
	if echo "$out" | grep -q 'VMZZ (0x5a5a4d56)'; then
		echo "PASS: the unknown format is listed as 'VMZZ (0x5a5a4d56)'"
	else
		echo "FAIL: the unknown format is not named"
		status=1
	fi
	;;
*)
	# shellcheck disable=SC2086 # ARGS is a word list
	timeout 120 $bin "$CASE" $dev $ARGS || status=1
	;;
esac
# The kernel log since the case began (in a batch, the earlier cases' lines
# must not count).
dmesg > /tmp/all.log
from=$(grep -n 'batch: case .* begins' /tmp/all.log | tail -n 1 | cut -d: -f1)
tail -n +"${from:-1}" /tmp/all.log > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
# Lines the driver must have logged (EXPECT_LOG) or must not have (REFUSE_LOG).
if [ -n "${EXPECT_LOG:-}" ] && ! grep -qE "$EXPECT_LOG" /tmp/dmesg.log; then
	echo "FAIL: the driver did not log /$EXPECT_LOG/"
	status=1
fi
if [ -n "${REFUSE_LOG:-}" ] && grep -E "$REFUSE_LOG" /tmp/dmesg.log; then
	echo "FAIL: the driver logged /$REFUSE_LOG/"
	status=1
fi
exit $status
