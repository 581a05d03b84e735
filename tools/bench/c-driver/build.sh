#!/usr/bin/env bash
# Builds the C virtio-media driver (chromeos/virtio-media, its driver/
# folder, at a pinned commit) for the kernel in KDIR, out of this
# repository, for make bench-c. Prints the module's path.
#
# The source comes from https://github.com/chromeos/virtio-media (a bare
# clone cached in $CACHE_DIR/c-driver.git); without network, from a local
# copy of that repository when one exists: C_DRIVER_GIT (a git directory
# or URL), else /work/.mirror/chromeos+virtio-media/repo. The build tree is
# $CACHE_DIR/c-driver-COMMIT-KDIRNAME/, patched with the *.patch files next
# to this script (their changes to build it here, each explained in its
# file); it is rebuilt when they change.
set -euo pipefail
. "$(dirname "$0")/../../vm/lib.sh"
here=$REPO_DIR/tools/bench/c-driver

commit=924f3515123d907072f6ecbd770e65d4b5592d7c	# v0.0.8
url=https://github.com/chromeos/virtio-media
mirror=/work/.mirror/chromeos+virtio-media/repo
[ -n "${KDIR:-}" ] || die "KDIR must name the kernel build tree"

cache_lock
git_dir=$CACHE_DIR/c-driver.git
has_commit() { git --git-dir="$1" cat-file -e "$commit^{commit}" 2>/dev/null; }
if ! has_commit "$git_dir"; then
	rm -rf "$git_dir.tmp"
	sources=("${C_DRIVER_GIT:-$url}")
	[ -z "${C_DRIVER_GIT:-}" ] && [ -d "$mirror" ] && sources+=("$mirror")
	for src in "${sources[@]}"; do
		log "fetching the C driver from $src"
		# A quick try: a machine without network fails in seconds.
		if timeout 120 git clone -q --bare "$src" "$git_dir.tmp" >&2 && has_commit "$git_dir.tmp"; then
			rm -rf "$git_dir"; mv "$git_dir.tmp" "$git_dir"
			break
		fi
		rm -rf "$git_dir.tmp"
	done
	has_commit "$git_dir" || die "cannot get commit $commit of $url (tried: ${sources[*]}); set C_DRIVER_GIT"
fi

dir=$CACHE_DIR/c-driver-${commit:0:12}-$(basename "$KDIR")
patches=("$here"/*.patch)
stamp=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
ko=$dir/virtio_media_c.ko
if [ -f "$ko" ] && [ "$(cat "$dir/.build-done" 2>/dev/null)" = "$stamp" ]; then
	echo "$ko"
	exit 0
fi
rm -rf "$dir"; mkdir -p "$dir"
git --git-dir="$git_dir" archive "$commit" driver | tar -x -C "$dir" --strip-components=1
for p in "${patches[@]}"; do
	patch -s -p1 -d "$dir" < "$p" || die "$p does not apply to the C driver at ${commit:0:12}"
done
log "building the C driver (${commit:0:12}) in $dir"
make -s -C "$KDIR" M="$dir" LLVM=-"$LLVM_VERSION" modules >&2
[ -f "$ko" ] || die "no $ko after the build"
echo "$stamp" > "$dir/.build-done"
echo "$ko"
