# Guest test: one case of tools/vm/tests/hardening.c (CASE and ARGS in
# /test.env), plus what the kernel log must (not) say afterwards. The
# kernel-report check of /init runs after it, as after every test.
. /test.env
dev=/dev/video0
bin=/extra/hardening
status=0
case "$CASE" in
mmap-unbind)
	$bin mmap-unbind $dev /tmp/go > /tmp/case.log 2>&1 &
	pid=$!
	for _ in $(seq 100); do grep -q waiting /tmp/case.log && break; sleep 0.1; done
	vdev=$(basename "$(readlink -f /sys/bus/virtio/drivers/virtio_media/virtio*)")
	echo "$vdev" > /sys/bus/virtio/drivers/virtio_media/unbind || echo "FAIL: unbind"
	touch /tmp/go
	wait $pid || status=1
	cat /tmp/case.log
	;;
*)
	# shellcheck disable=SC2086 # ARGS is a word list
	timeout 120 $bin "$CASE" $dev $ARGS || status=1
	;;
esac
dmesg > /tmp/dmesg.log
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
