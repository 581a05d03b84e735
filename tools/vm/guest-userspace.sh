#!/usr/bin/env bash
# Builds the cached base initramfs for KDIR: busybox-static from the host,
# v4l-utils (v4l2-compliance, v4l2-ctl) from Debian sid with every library it
# needs, the same tools built for i386 (v4l2-compliance-i386, v4l2-ctl-i386,
# run by the kernel's IA32 emulation) with their own libraries and loader, and
# the kernel's modules. Prints the .cpio.gz path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kdir=${1:?usage: guest-userspace.sh KDIR}

cache_lock
key=$( { basename "$kdir"; cat "$VM_DIR/guest-userspace.sh" "$VM_DIR/guest-init.sh" "$VM_DIR/guest-lib.sh" \
	"$VM_DIR/guest-export-file.sh"; } | sha256sum | cut -c1-12)
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
# The i386 build of the same tools, from its own apt root (APT::Architecture
# i386), so that 32-bit programs go through the kernel's compat ioctl paths.
v4l32=$CACHE_DIR/v4l-utils-sid-i386
if [ ! -x "$v4l32/usr/bin/v4l2-compliance" ]; then
	root=$(foreign_apt_root --arch i386 sid-i386 sid)
	foreign_apt_update "$root"
	rm -rf "$v4l32.tmp"
	foreign_unpack "$root" "$v4l32.tmp" v4l-utils
	rm -rf "$v4l32"; mv "$v4l32.tmp" "$v4l32"
fi
# Both are fetched from sid when missing; if sid moved between the two
# fetches they differ, which the 32-bit test reports (each tool prints its
# version).
deb_version() { zcat "$1/usr/share/doc/v4l-utils/changelog.Debian.gz" | sed -n '1s/.*(\(.*\)).*/\1/p'; }
[ "$(deb_version "$v4l")" = "$(deb_version "$v4l32")" ] ||
	log "warning: v4l-utils amd64 $(deb_version "$v4l") but i386 $(deb_version "$v4l32"); remove $v4l and $v4l32 to fetch both again"

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
install -D -m 644 "$VM_DIR/guest-lib.sh" "$stage/usr/lib/vm/lib.sh"
# Only what the tests run, and the shared objects it needs.
cp -a "$v4l"/usr/bin/v4l2-compliance "$v4l"/usr/bin/v4l2-ctl "$stage/usr/bin/"
cp -a "$v4l"/usr/lib/x86_64-linux-gnu "$stage/usr/lib/"
cp -a "$v4l"/usr/lib64/. "$stage/usr/lib64/" 2>/dev/null || true
[ -e "$stage/usr/lib64/ld-linux-x86-64.so.2" ] ||
	ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/usr/lib64/ld-linux-x86-64.so.2"
rm -rf "$stage"/usr/lib/x86_64-linux-gnu/{gconv,perl*,audit} 2>/dev/null || true
# i386: the libraries in /usr/lib/i386-linux-gnu, where the i386 loader
# looks, and the loader itself as /lib/ld-linux.so.2 (the ELF interpreter
# the binaries name; /lib is usr/lib here).
install -m 755 "$v4l32"/usr/bin/v4l2-compliance "$stage/usr/bin/v4l2-compliance-i386"
install -m 755 "$v4l32"/usr/bin/v4l2-ctl "$stage/usr/bin/v4l2-ctl-i386"
cp -a "$v4l32"/usr/lib/i386-linux-gnu "$stage/usr/lib/"
cp -a "$v4l32"/usr/lib/ld-linux.so.2 "$stage/usr/lib/"
rm -rf "$stage"/usr/lib/i386-linux-gnu/{gconv,perl*,audit} 2>/dev/null || true
make -s -C "$kdir" LLVM=-$LLVM_VERSION modules_install INSTALL_MOD_PATH="$stage/usr" >&2
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
