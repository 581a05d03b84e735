#!/bin/sh
# host_action VERB [ARGS...]: asks the host to act now and waits for it to
# be done (run-guest.sh --host-actions; the verbs are in
# tools/vm/host-actions.py: device_del ID, device_add FLAGS..., kill ID
# [SIGNAL], qmp JSON). Prints the host's answer. Exit status 0 when the host
# did it, 1 when it failed, 2 when no answer came within
# $HOST_ACTION_TIMEOUT seconds (default 120).
port=/dev/ttyS2
[ -c $port ] || { echo "host_action: no $port" >&2; exit 2; }
seq=$$.$(date +%s)
# The line stays open until the answer: a serial port closed by its last
# user drops what arrives.
exec 3<> $port
# Raw and without echo, or the tty would send the answer back to the host.
stty -F $port raw -echo
printf '=== VM-HOST-ACTION %s %s ===\n' "$seq" "$*" >&3
end=$(($(date +%s) + ${HOST_ACTION_TIMEOUT:-120}))
while [ "$(date +%s)" -lt $end ]; do
	read -r -t 5 line <&3 || continue
	case "$line" in
	"=== VM-HOST-DONE $seq ok "*)
		line=${line#=== VM-HOST-DONE $seq ok }
		echo "${line% ===}"
		exit 0 ;;
	"=== VM-HOST-DONE $seq fail "*)
		line=${line#=== VM-HOST-DONE $seq fail }
		echo "host_action $1: ${line% ===}" >&2
		exit 1 ;;
	esac
done
echo "host_action $1: no answer from the host in ${HOST_ACTION_TIMEOUT:-120} s" >&2
exit 2
