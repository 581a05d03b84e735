#!/bin/sh
# /init of the test guest. Mounts the basics, loads the modules named on the
# kernel command line (vm.modules=a,b; parameters as m.param=value), runs
# /test.sh, then checks the kernel after it: the modules must unload and, on
# a kernel with kmemleak, a scan must find no new leak. The whole kernel log
# goes to the host (kernel.log), which looks for reports in it
# (tools/vm/guest-report.sh). Prints the end marker with the test's exit
# status and powers off; the runner reads the marker.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin:/sbin
. /usr/lib/vm/lib.sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo 4 > /proc/sys/kernel/printk

kmemleak=/sys/kernel/debug/kmemleak
# Leaks count from here on: kmemleak dates each object in jiffies, which
# start 300 s before 0 (INITIAL_JIFFIES) and tick at CONFIG_HZ=1000. (A
# scan now, to clear what boot left, would cost 20 s of every run.)
# (Shell arithmetic, not a program: see guest-lib.sh. /proc/uptime has
# two decimals.)
read -r uptime _ < /proc/uptime
centis=${uptime#*.}
start_jiffies=$((4294667296 + ${uptime%.*} * 1000 + ${centis#0} * 10))

read -r cmdline < /proc/cmdline
modules=""
for arg in $cmdline; do
	case $arg in vm.modules=*) modules=${arg#vm.modules=} ;; esac
done
status=0
loaded=""
IFS=,
set -- $modules
IFS=' 	
'
for m in "$@"; do
	if [ -f "/extra/$m.ko" ]; then
		cmdline_params "$m"
		insmod "/extra/$m.ko" $params || status=$?
	else
		modprobe "$m" || status=$?
	fi
	[ "$status" = 0 ] || { echo "vm-init: loading $m failed ($status)"; break; }
	loaded="$m $loaded"
done
if [ "$status" = 0 ] && [ -x /test.sh ]; then
	sh /test.sh
	status=$?
fi

# After the test: nothing of it may keep the modules busy (a process stuck
# in the driver would), and unloading them must work and leak nothing.
kill_user_tasks
for m in $loaded; do
	grep -q "^$m " /proc/modules || continue
	rmmod "$m" || echo "vm-init: module $m did not unload" > /dev/kmsg
done
if [ -w $kmemleak ]; then
	# kmemleak reports objects at least 5 s old only.
	sleep 5
	echo scan > $kmemleak
	# Only what was allocated since the modules were loaded.
	awk -v start="$start_jiffies" '
		function flush() { if (keep) printf "%s", block; block = ""; keep = 0 }
		/^unreferenced object/ { flush() }
		{ block = block $0 "\n" }
		/jiffies [0-9]+/ {
			match($0, /jiffies [0-9]+/)
			if (substr($0, RSTART + 8, RLENGTH - 8) + 0 >= start) keep = 1
		}
		END { flush() }
	' $kmemleak > /tmp/kmemleak.log
	if [ -s /tmp/kmemleak.log ]; then
		echo "vm-init: kmemleak: $(grep -c '^unreferenced object' /tmp/kmemleak.log) new suspected memory leaks" > /dev/kmsg
		export_file kmemleak.log /tmp/kmemleak.log
	fi
fi
dmesg > /tmp/kernel.log
export_file kernel.log /tmp/kernel.log
echo "=== VM-EXIT-STATUS $status ==="
sync
poweroff -f
