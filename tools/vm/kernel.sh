#!/usr/bin/env bash
# Builds a guest kernel once into the cache, keyed by version + fragment hash.
# Prints the build tree's path (KDIR) on stdout. A second run does nothing.
#   kernel.sh          the test kernel (debug flavour, or $KERNEL_FLAVOUR)
#   kernel.sh debug    the test kernel: sanitizers, lockdep (make check, run)
#   kernel.sh bench    the benchmark kernel: no checkers (make bench)
#   kernel.sh headers  only install the UAPI headers, print their include dir
#   kernel.sh source   only unpack the plain source tree, print its path
set -euo pipefail
. "$(dirname "$0")/lib.sh"

flavour=${KERNEL_FLAVOUR:-debug}
case "${1:-}" in
debug | bench) flavour=$1; shift ;;
esac
case "$flavour" in
debug | bench) ;;
*) die "unknown kernel flavour '$flavour' (debug or bench)" ;;
esac
# The shared fragment, then the flavour's.
fragments=("$VM_DIR/kernel.config" "$VM_DIR/kernel-$flavour.config")
# The key covers what the build tree depends on: the fragments, the source
# version and the toolchain (a Rust module must be built by the same rustc).
kernel_key() {
	{ cat "${fragments[@]}"; echo "$KERNEL_VERSION"; rustc --version; echo "llvm-$LLVM_VERSION"; } |
		sha256sum | cut -c1-12
}
key=$(kernel_key)

# Source: Debian's linux-source-$KERNEL_VERSION (a plain tarball, arch all).
src_tarball() {
	local root tb
	cache_lock
	tb=$(ls "$CACHE_DIR"/linux-source/usr/src/linux-source-$KERNEL_VERSION.tar.xz 2>/dev/null || true)
	if [ -z "$tb" ]; then
		root=$(foreign_apt_root trixie-backports trixie-backports trixie)
		foreign_apt_update "$root"
		mkdir -p "$root/debs"
		(cd "$root/debs" && foreign_apt "$root" apt-get download "linux-source-$KERNEL_VERSION" >&2) ||
			die "cannot download linux-source-$KERNEL_VERSION"
		dpkg-deb -x "$(ls "$root"/debs/linux-source-${KERNEL_VERSION}_*.deb | head -n 1)" \
			"$CACHE_DIR/linux-source"
		tb=$CACHE_DIR/linux-source/usr/src/linux-source-$KERNEL_VERSION.tar.xz
	fi
	echo "$tb"
}

unpack() { # DIR
	local dir=$1 tmp
	[ -f "$dir/Makefile" ] && return 0
	tmp=$dir.tmp
	rm -rf "$tmp"; mkdir -p "$tmp"
	log "unpacking kernel source into $dir"
	tar -xf "$(src_tarball)" -C "$tmp" --strip-components=1
	mv "$tmp" "$dir"
}

src_dir=$CACHE_DIR/kernel-src-$KERNEL_VERSION
if [ "${1:-}" = source ]; then
	cache_lock
	unpack "$src_dir"
	echo "$src_dir"
	exit 0
fi

headers_dir=$CACHE_DIR/headers-$KERNEL_VERSION
if [ "${1:-}" = headers ]; then
	cache_lock
	if [ ! -f "$headers_dir/usr/include/linux/videodev2.h" ]; then
		src=$src_dir
		unpack "$src"
		make -s -C "$src" headers_install INSTALL_HDR_PATH="$headers_dir/usr" >&2
	fi
	echo "$headers_dir/usr/include"
	exit 0
fi

kdir=$CACHE_DIR/kernel-$KERNEL_VERSION-$flavour-$key
cache_lock "kernel-$flavour"
if [ -f "$kdir/.build-done" ]; then
	echo "$kdir"
	exit 0
fi

"$VM_DIR/deps.sh"
unpack "$kdir"
kmake() { make -C "$kdir" LLVM=-$LLVM_VERSION "$@"; }
export LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib
kmake rustavailable >&2 || die "the Rust toolchain does not satisfy the kernel (make rustavailable)"
kmake allnoconfig >&2
(cd "$kdir" && scripts/kconfig/merge_config.sh -m .config "${fragments[@]}" >&2)
kmake olddefconfig >&2
# Every line of the fragment must have survived olddefconfig; a missing
# dependency would silently drop it.
missing=0
while read -r line; do
	case "$line" in
	CONFIG_*=*) grep -qx "$line" "$kdir/.config" || { log "fragment line not in .config: $line"; missing=1; } ;;
	"# CONFIG_"*" is not set") grep -q "^${line#\# }" "$kdir/.config" && true
		sym=${line#\# }; sym=${sym%% *}
		grep -q "^$sym=" "$kdir/.config" && { log "fragment wants $sym off"; missing=1; } ;;
	esac
done < <(cat "${fragments[@]}")
[ "$missing" = 0 ] || die "kernel config does not match ${fragments[*]}"
log "building the $flavour kernel in $kdir (10 to 20 minutes on 2 cores)"
start=$(date +%s)
kmake -j"$(( $(nproc) + 1 ))" bzImage modules >&2
# The build time, for the notes and Documentation/build-and-test.rst.
echo "$(( $(date +%s) - start )) s on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" > "$kdir/.build-time"
touch "$kdir/.build-done"
echo "$kdir"
