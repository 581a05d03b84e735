# Guest test: v4l2-compliance from the amd64 and from the i386 build of
# v4l-utils on the same node, one after the other, so a 32-bit program's
# ioctls go through the kernel's compat layer into the driver. Exports
# compliance-64.log and compliance-32.log, and the first 4 KiB of each binary
# (elf-64.bin, elf-32.bin: ELF header and program headers, for `file` on the
# host). COMPLIANCE_ARGS (from /test.env) is passed to both, e.g. "-s".
# A run still going after COMPLIANCE_WATCHDOG seconds (default 150) has every
# task's stack dumped to the kernel log, which is exported.
. /test.env
status=0
for bits in 64 32; do
	bin=v4l2-compliance
	[ $bits = 32 ] && bin=v4l2-compliance-i386
	path=$(command -v $bin) || { echo "FAIL: no $bin in the guest"; status=1; continue; }
	head -c 4096 "$path" > /tmp/elf-$bits.bin
	export_file elf-$bits.bin /tmp/elf-$bits.bin
	(
		sleep "${COMPLIANCE_WATCHDOG:-150}"
		echo "compliance-32bit.sh: $bin still running, dumping task stacks" > /dev/kmsg
		echo t > /proc/sysrq-trigger
		dmesg > /tmp/dmesg-stuck-$bits.log
		export_file dmesg-stuck-$bits.log /tmp/dmesg-stuck-$bits.log
	) &
	watchdog=$!
	$bin -d "${VIDEO:-/dev/video0}" ${COMPLIANCE_ARGS:--s} > /tmp/compliance-$bits.log 2>&1 || status=1
	kill $watchdog 2>/dev/null
	export_file compliance-$bits.log /tmp/compliance-$bits.log
	echo "== $bin ($bits-bit)"
	grep -E "^v4l2-compliance .*bits|^Total for|fail:" /tmp/compliance-$bits.log
done
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
exit $status
