#!/usr/bin/env bash
# Builds (once, cached) an initramfs part holding Debian sid's perf
# (linux-perf) and the shared objects it loads, for profiling in the test
# guest: append it to the guest's initramfs (run-guest.sh --cpio). Prints
# the .cpio.gz path. The guest kernel has CONFIG_PERF_EVENTS but no PMU
# under TCG: use software events (perf record -e cpu-clock).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cache_lock
key=$(sha256sum "$VM_DIR/guest-perf.sh" | cut -c1-12)
out=$CACHE_DIR/initramfs-perf-$key.cpio.gz
if [ -f "$out" ]; then
	echo "$out"
	exit 0
fi

tree=$CACHE_DIR/linux-perf-sid
if [ ! -x "$tree/usr/bin/perf" ]; then
	root=$(foreign_apt_root sid sid)
	foreign_apt_update "$root"
	rm -rf "$tree.tmp"
	foreign_unpack "$root" "$tree.tmp" linux-perf
	rm -rf "$tree"; mv "$tree.tmp" "$tree"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/usr/bin" "$stage/usr/lib/x86_64-linux-gnu"
cp "$tree/usr/bin/perf" "$stage/usr/bin/perf"
# Only the objects perf loads (its NEEDED closure, resolved inside the
# unpacked sid tree), libc and the loader included: appended after the base
# initramfs, they replace its (older or equal) sid copies, which is safe for
# the programs there.
libdir=$tree/usr/lib/x86_64-linux-gnu
"$libdir/ld-linux-x86-64.so.2" --library-path "$libdir" --list "$tree/usr/bin/perf" |
	sed -n 's/.* => \(\/[^ ]*\) (.*/\1/p' | while read -r lib; do
		case "$lib" in "$tree"/*) ;; *) die "perf needs $lib from outside the sid tree" ;; esac
		cp -L "$lib" "$stage/usr/lib/x86_64-linux-gnu/"
	done
[ -n "$(ls "$stage/usr/lib/x86_64-linux-gnu")" ] || die "no library found for perf"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
