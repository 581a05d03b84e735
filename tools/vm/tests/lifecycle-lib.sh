# What the life-cycle guest tests share; they source it from /extra
# (run-guest.sh --file tools/vm/tests/lifecycle-lib.sh, with memory-lib.sh).
#
# Each test prints one line per result, which tools/check/lifecycle.sh
# records:  RESULT KEY OK|FAIL DETAIL
# and exits non-zero when any result failed.
. /test.env
. /extra/memory-lib.sh
failures=0

result() { # KEY OK|FAIL DETAIL...
	local key=$1 verdict=$2
	shift 2
	echo "RESULT $key $verdict $*"
	[ "$verdict" = OK ] || failures=$((failures + 1))
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s; fails after SECONDS.
wait_until() {
	local end=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt $end ] || return 1
		sleep 0.1
	done
}

# The modules and how many users each has, virtio_media left out.
module_users() {
	awk '$1 != "virtio_media" { print $1, $3 }' /proc/modules | sort
}

# The driver's parameters from the kernel command line, as /init passes them.
module_params() {
	. /usr/lib/vm/lib.sh
	cmdline_params virtio_media
	echo "$params"
}

# The virtio device names bound to the driver, one a line.
bound_devices() {
	local d
	for d in /sys/bus/virtio/drivers/virtio_media/virtio*; do
		[ -e "$d" ] && basename "$d"
	done
}

# The /dev/videoN of virtio device DEV, empty if it has none.
video_node() {
	local v
	for v in /sys/bus/virtio/devices/"$1"/video4linux/video*; do
		[ -e "$v" ] && echo "/dev/$(basename "$v")" && return
	done
}

# Frames v4l2-ctl reported in LOG... (one '<' per dequeued buffer).
frames_in() {
	cat "$@" 2> /dev/null | tr -cd '<' | wc -c
}

# is_running PID: alive and not a zombie.
is_running() {
	[ -e /proc/$1 ] && ! grep -q '^State:.*Z' /proc/$1/status 2> /dev/null
}

# Where task PID waits, for a failure message (needs CONFIG_STACKTRACE).
stack_of() {
	echo "task $1 ($(cat /proc/$1/comm 2> /dev/null)) state $(sed -n 's/^State:\t//p' /proc/$1/status 2> /dev/null), wchan $(cat /proc/$1/wchan 2> /dev/null)"
	cat /proc/$1/stack 2> /dev/null | head -n 12
}

# The blocked (D state) tasks and where they wait, on one line.
blocked_tasks() {
	local t
	for t in /proc/[0-9]*; do
		grep -q '^State:.*D' $t/status 2> /dev/null || continue
		printf '%s ' "$(cat $t/comm) [$(cat $t/stack 2> /dev/null | head -n 6 | sed 's/^\[<0>\] //; s/+0x.*//' | tr '\n' ' ')]"
	done
}

finish() {
	dmesg > /tmp/dmesg.log
	export_file dmesg.log /tmp/dmesg.log
	echo "lifecycle: $failures failed"
	[ "$failures" = 0 ]
}
