#!/bin/sh
# /init of the test guest. Mounts the basics, loads the modules named on the
# kernel command line (vm.modules=a,b; parameters as m.param=value), runs
# /test.sh, prints the end marker with its exit status and powers off. The
# runner reads the marker.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo 4 > /proc/sys/kernel/printk

status=0
for m in $(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vm\.modules=//p' | tr ',' ' '); do
	if [ -f "/extra/$m.ko" ]; then
		# Parameters as for a built-in module: "m.param=value" on the
		# kernel command line.
		insmod "/extra/$m.ko" $(tr ' ' '\n' < /proc/cmdline | sed -n "s/^$m\.//p") || status=$?
	else
		modprobe "$m" || status=$?
	fi
	[ "$status" = 0 ] || { echo "vm-init: loading $m failed ($status)"; break; }
done
if [ "$status" = 0 ] && [ -x /test.sh ]; then
	sh /test.sh
	status=$?
fi
echo "=== VM-EXIT-STATUS $status ==="
sync
poweroff -f
