#!/usr/bin/env bash
# Boots the test guest under QEMU and runs one test script inside it.
#
#   run-guest.sh --name NAME [--test SCRIPT] [--modules m1,m2] [--ko FILE]...
#                [--file FILE]... [--cpio FILE.cpio.gz]... [--vfu "DEVICE ARGS"]... [--env VAR=VALUE]...
#                [--timeout SECONDS] [--smp N] [--mem SIZE]
#                [--append "KERNEL ARGS"]   (e.g. module parameters: virtio_media.guest_mmap=1)
#                [--qmp] [--host-actions] [--hotplug] [--kunit]
#
# KUnit suites of loaded modules (the driver's) run only with --kunit: at
# every insmod they cost the debug kernel about 10 s under TCG.
#
# --ko and --file copy FILE into the guest's /extra; --cpio appends an
# initramfs part (e.g. tools/vm/guest-perf.sh's). Each --vfu attaches one
# test device, in the order given (PCI slots, so probe order, follow it).
# Logs go to $BUILD_DIR/results/NAME/: console.log (serial console), files the
# guest exported with export_file, vfu.log (the first device; vfu1.log, ...
# for the others). A device started with --exit-on-disconnect is given a
# few seconds to finish (and write its --stats) after QEMU ends. The exit status is
# the test script's, 124 on timeout, 125 when the guest ended without a
# verdict, 126 when the test passed but the kernel reported a problem
# (tools/vm/guest-report.sh; the reports are in kernel-report.txt, which
# every run writes, empty when there is none), 123 when the kernel hung in
# its boot (no /init within BOOT_TIMEOUT seconds, default 240). KVM=1 uses
# KVM instead of TCG.
#
# --qmp gives QEMU a QMP socket, qmp.sock in the logs folder (one client at
# a time); the --vfu devices are vfu0, vfu1, ... there. --host-actions lets
# the test ask the host to act while it runs: `host_action VERB ARGS...` in
# the guest (tools/vm/guest-host-action.sh) sends the request over the
# guest's /dev/ttyS2 to tools/vm/host-actions.py, which carries it out
# (through QMP, or on the device processes) and answers when it is done:
# device_del ID, device_add [bus=PORT] DEVICE FLAGS..., kill ID [SIGNAL],
# qmp JSON, after SECONDS VERB ARGS...; its log is host-actions.log. It
# implies --qmp and adds two empty PCIe root ports for device_add.
# --hotplug (implies --host-actions) also puts each --vfu device behind its
# own root port (rp0, rp1, ...; the empty ones follow) so that it can be
# unplugged, and starts these devices with --no-msix: QEMU 11.1.3 aborts
# when it unplugs a vfio-user device that has MSI-X (an assertion in
# vfio_user_msix_teardown). It also aborts when the process of a device
# without MSI-X dies, so a device that a test kills must keep its MSI-X.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

name="" test="" modules="" timeout_s=300 smp=2 mem=1G kos=() envs=() vfus=() cpios=() append=""
qmp=0 host_actions=0 hotplug=0 kunit=kunit.enable=0
while [ $# -gt 0 ]; do
	case "$1" in
	--name) name=$2; shift 2 ;;
	--test) test=$2; shift 2 ;;
	--modules) modules=$2; shift 2 ;;
	--ko | --file) kos+=("$2"); shift 2 ;;
	--vfu) vfus+=("$2"); shift 2 ;;
	--cpio) cpios+=("$2"); shift 2 ;;
	--env) envs+=("$2"); shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--append) append=$2; shift 2 ;;
	--qmp) qmp=1; shift ;;
	--host-actions) host_actions=1 qmp=1; shift ;;
	--hotplug) hotplug=1 host_actions=1 qmp=1; shift ;;
	--kunit) kunit=""; shift ;;
	*) die "unknown argument $1" ;;
	esac
done
[ -n "$name" ] || die "--name is required"

kdir=${KDIR:-$("$VM_DIR/kernel.sh")}
qemu=$("$VM_DIR/qemu.sh")
base=$("$VM_DIR/guest-userspace.sh" "$kdir")
out=$BUILD_DIR/results/$name
rm -rf "$out"; mkdir -p "$out"

# The per-run part of the initramfs: the test script and extra modules.
overlay=$(mktemp -d)
vfu_pids=() actions_pid="" qemu_pid="" watch_pid=""
cleanup() {
	local pid
	for pid in $watch_pid $qemu_pid $actions_pid "${vfu_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$overlay"
}
trap cleanup EXIT
mkdir -p "$overlay/extra"
[ -n "$test" ] && install -m 755 "$test" "$overlay/test.sh"
install -D -m 755 "$VM_DIR/guest-host-action.sh" "$overlay/usr/bin/host_action"
for ko in "${kos[@]}"; do cp "$ko" "$overlay/extra/"; done
# Sourced by the guest's shell: each VAR=VALUE as VAR='VALUE', so values may
# hold spaces and shell syntax (regular expressions).
for env in "${envs[@]}"; do
	value=${env#*=}
	printf "%s='%s'\n" "${env%%=*}" "${value//\'/\'\\\'\'}"
done > "$overlay/test.env"
(cd "$overlay" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/overlay.cpio.gz"
cat "$base" "${cpios[@]}" "$out/overlay.cpio.gz" > "$out/initramfs.cpio.gz"
rm -f "$out/overlay.cpio.gz"

# No 5-level paging: with it, KASAN reports a wild access in the first
# interrupt of early boot (7.3.4 under TCG), before anything of ours runs.
accel=(-accel tcg -cpu max,la57=off)
# ICOUNT=SHIFT: the guest's clocks count its instructions (2^SHIFT ns
# each), one thread runs every vCPU, and a device's trap takes no guest
# time: the benchmarks' noise-free measure of the guest's own work.
[ -n "${ICOUNT:-}" ] && accel=(-accel tcg,thread=single -icount "shift=$ICOUNT,sleep=on" -cpu max,la57=off)
[ "${KVM:-0}" = 1 ] && accel=(-accel kvm -cpu host)
device=() root_ports=() actions_devices=()
# Hot-pluggable slots: one PCIe root port per device with --hotplug, and
# two empty ones for devices the test adds.
if [ "$host_actions" = 1 ]; then
	ports=2
	[ "$hotplug" = 1 ] && ports=$((ports + ${#vfus[@]}))
	for i in $(seq 0 $((ports - 1))); do
		device+=(-device "pcie-root-port,id=rp$i,chassis=1,slot=$((i + 1))")
		root_ports+=("rp$i")
	done
fi
for i in "${!vfus[@]}"; do
	suffix=$([ "$i" = 0 ] || echo "$i")
	sock=$out/vfu$suffix.sock
	flags=${vfus[$i]}
	[ "$hotplug" = 1 ] && flags="$flags --no-msix"
	# shellcheck disable=SC2086 # a --vfu value is a word list of device flags
	"$REPO_DIR/tools/virtio-media-vfu/target/release/virtio-media-vfu" --socket "$sock" $flags \
		> "$out/vfu$suffix.log" 2>&1 &
	vfu_pids+=($!)
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
	[ -S "$sock" ] || die "the device did not create $sock (see $out/vfu$suffix.log)"
	bus=""
	[ "$hotplug" = 1 ] && bus=",\"bus\":\"rp$i\""
	actions_devices+=(--device "vfu$i:${vfu_pids[$i]}:${bus:+rp$i}")
	device+=(-device "{\"driver\":\"vfio-user-pci\",\"id\":\"vfu$i\"$bus,\"socket\":{\"path\":\"$sock\",\"type\":\"unix\"}}")
done
monitor=()
[ "$qmp" = 1 ] && monitor+=(-qmp "unix:$out/qmp.sock,server=on,wait=off")
if [ "$host_actions" = 1 ]; then
	# It listens on the guest's ttyS2 line before QEMU starts and joins it.
	/usr/bin/python3 "$VM_DIR/host-actions.py" --out "$out" --listen "$out/host-actions.sock" \
		--qmp "$out/qmp.sock" --vfu-bin "$REPO_DIR/tools/virtio-media-vfu/target/release/virtio-media-vfu" \
		--ports "$(IFS=,; echo "${root_ports[*]}")" "${actions_devices[@]}" 2> "$out/host-actions.err" &
	actions_pid=$!
	for _ in $(seq 100); do [ -S "$out/host-actions.sock" ] && break; sleep 0.1; done
	[ -S "$out/host-actions.sock" ] || die "host-actions.py did not start (see $out/host-actions.err)"
	monitor+=(-chardev "socket,id=host-actions,path=$out/host-actions.sock" -serial chardev:host-actions)
fi

# At most GUEST_SLOTS guests at once on this machine (default: one per
# two host threads, at least 2; a TCG guest keeps one to two busy):
# several test runs sharing the machine queue here instead of slowing each
# other's guests down until timeouts fire. The wait does not count against
# the timeout.
slots=${GUEST_SLOTS:-$(( $(nproc) / 2 > 2 ? $(nproc) / 2 : 2 ))}
mkdir -p "$CACHE_DIR/guest-slots"
slot_fd=""
while [ -z "$slot_fd" ]; do
	for i in $(seq "$slots"); do
		exec {fd}> "$CACHE_DIR/guest-slots/$i"
		if flock -n "$fd"; then slot_fd=$fd; break; fi
		exec {fd}>&-
	done
	[ -n "$slot_fd" ] || sleep 1
done

# no_timer_check: on a loaded host, TCG's timer can miss the kernel's
# early IO-APIC timer check, which then panics ("IO-APIC + timer doesn't
# work!") before anything of ours runs.
log "booting guest '$name' (timeout ${timeout_s}s, $smp CPUs)"
set +e
rm -f "$out/boot-hung"
timeout --kill-after=10 "$timeout_s" "$qemu" "${accel[@]}" -nodefaults -display none -no-reboot \
	-machine q35,memory-backend=mem -object "memory-backend-memfd,id=mem,size=$mem,share=on" \
	-m "$mem" -smp "$smp" \
	-kernel "$kdir/arch/x86/boot/bzImage" -initrd "$out/initramfs.cpio.gz" \
	-append "console=ttyS0 no_timer_check panic=-1 oops=panic vm.modules=$modules $kunit $append" \
	-serial "file:$out/console.log" -serial "file:$out/export.log" "${monitor[@]}" \
	"${device[@]}" > "$out/qemu.log" 2>&1 &
qemu_pid=$!
# A kernel that has not started /init after BOOT_TIMEOUT seconds hung in
# its own boot, before anything of ours ran (seen under TCG on a loaded
# host: 2 CPUs, no console line after "vgaarb: loaded" for 30 minutes):
# stopped, with the status below, instead of holding a slot until the
# run's timeout.
boot_timeout=${BOOT_TIMEOUT:-240}
(
	for _ in $(seq "$boot_timeout"); do
		sleep 1
		grep -aq 'Run /init as init process' "$out/console.log" 2>/dev/null && exit 0
	done
	: > "$out/boot-hung"
	kill "$qemu_pid" 2>/dev/null
) &
watch_pid=$!
wait "$qemu_pid"
qemu_status=$?
kill "$watch_pid" 2>/dev/null
wait "$watch_pid" 2>/dev/null
qemu_pid="" watch_pid=""
set -e
rm -f "$out/initramfs.cpio.gz"
# QEMU logs every access to a device whose process died (two lines each,
# thousands a second while the guest polls it): keep the start and the end.
if [ "$(stat -c %s "$out/qemu.log")" -gt $((1 << 20)) ]; then
	lines=$(wc -l < "$out/qemu.log")
	{
		head -n 100 "$out/qemu.log"
		echo "[run-guest.sh: $((lines - 200)) lines left out]"
		tail -n 100 "$out/qemu.log"
	} > "$out/qemu.log.short"
	mv "$out/qemu.log.short" "$out/qemu.log"
fi
# host-actions.py ends with QEMU, after stopping the devices it started.
if [ -n "$actions_pid" ]; then
	for _ in $(seq 150); do kill -0 "$actions_pid" 2>/dev/null || break; sleep 0.1; done
	kill "$actions_pid" 2>/dev/null || true
	wait "$actions_pid" 2>/dev/null || true
	actions_pid=""
fi
# Devices that exit on disconnect finish on their own (they may write files).
for i in "${!vfus[@]}"; do
	case " ${vfus[$i]} " in *" --exit-on-disconnect "*) ;; *) continue ;; esac
	for _ in $(seq 50); do kill -0 "${vfu_pids[$i]}" 2>/dev/null || break; sleep 0.1; done
done

# Files the guest exported over ttyS1.
awk -v dir="$out" '
	/^=== VM-FILE .* ===/ {
		file = dir "/" $3
		if ($3 ~ /\//) { sub(/\/[^\/]*$/, "", $3); system("mkdir -p \"" dir "/" $3 "\"") }
		cmd = "base64 -d > \"" file "\""; next
	}
	/^=== VM-END ===/ { close(cmd); cmd = ""; next }
	cmd != "" { print | cmd }
' "$out/export.log"

# Whatever the test said, the kernel must not have reported a problem.
reported=0
"$VM_DIR/guest-report.sh" "$out" > "$out/kernel-report.txt" || reported=$?
[ "$reported" = 0 ] || { log "guest '$name': the kernel reported problems:"; sed 's/^/  /' "$out/kernel-report.txt" >&2; }

status=$(sed -n 's/.*=== VM-EXIT-STATUS \([0-9]*\) ===.*/\1/p' "$out/console.log" | tail -n 1)
if [ -f "$out/boot-hung" ]; then
	log "guest '$name': the kernel did not start /init within ${boot_timeout}s; its last line: $(tail -n 1 "$out/console.log")"
	exit 123
fi
if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
	log "guest '$name' timed out after ${timeout_s}s"
	exit 124
fi
if [ -z "$status" ]; then
	log "guest '$name' ended without a verdict (qemu status $qemu_status); see $out/console.log"
	exit 125
fi
[ "$status" = 0 ] && [ "$reported" != 0 ] && exit 126
exit "$status"
