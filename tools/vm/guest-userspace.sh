#!/usr/bin/env bash
# Builds the cached base initramfs for KDIR: busybox-static from the host,
# v4l-utils (v4l2-compliance, v4l2-ctl) from Debian sid with every library it
# needs, and the kernel's modules. Prints the .cpio.gz path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kdir=${1:?usage: guest-userspace.sh KDIR}

key=$( { basename "$kdir"; cat "$VM_DIR/guest-userspace.sh" "$VM_DIR/guest-init.sh" "$VM_DIR/guest-export-file.sh"; } | sha256sum | cut -c1-12)
out=$CACHE_DIR/initramfs-base-$key.cpio.gz
if [ -f "$out" ]; then
	echo "$out"
	exit 0
fi

v4l=$CACHE_DIR/v4l-utils-sid
if [ ! -x "$v4l/usr/bin/v4l2-compliance" ]; then
	root=$(foreign_apt_root sid sid)
	foreign_apt_update "$root"
	rm -rf "$v4l.tmp"
	foreign_unpack "$root" "$v4l.tmp" v4l-utils
	rm -rf "$v4l"; mv "$v4l.tmp" "$v4l"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,extra,usr/lib,usr/lib64,usr/bin}
# sid is merged-/usr: the loader is looked up as /lib64/ld-linux-x86-64.so.2.
ln -s usr/lib "$stage/lib"
ln -s usr/lib64 "$stage/lib64"
cp /bin/busybox "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
cp "$VM_DIR/guest-init.sh" "$stage/init"
chmod +x "$stage/init"
install -m 755 "$VM_DIR/guest-export-file.sh" "$stage/usr/bin/export_file"
# Only what the tests run, and the shared objects it needs.
cp -a "$v4l"/usr/bin/v4l2-compliance "$v4l"/usr/bin/v4l2-ctl "$stage/usr/bin/"
cp -a "$v4l"/usr/lib/x86_64-linux-gnu "$stage/usr/lib/"
cp -a "$v4l"/usr/lib64/. "$stage/usr/lib64/" 2>/dev/null || true
[ -e "$stage/usr/lib64/ld-linux-x86-64.so.2" ] ||
	ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/usr/lib64/ld-linux-x86-64.so.2"
rm -rf "$stage"/usr/lib/x86_64-linux-gnu/{gconv,perl*,audit} 2>/dev/null || true
make -s -C "$kdir" LLVM=-$LLVM_VERSION modules_install INSTALL_MOD_PATH="$stage/usr" >&2
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
