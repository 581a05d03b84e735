#!/usr/bin/env bash
# Two cache fillers at once, as two make check lanes booting their first
# guests on a fresh machine: with cache_lock (tools/vm/lib.sh) both find
# the part whole. Without it one removes the other's half-unpacked
# directory, which broke a fresh make check on 2026-12-02 ("dpkg-deb:
# failed to create directory", then "the unpacked QEMU does not start").
# Then: every script of tools/ that fills the cache takes the lock.
# Prints one line; the status says whether both held.
set -uo pipefail
cd "$(dirname "$0")/../.."
VIRTIO_MEDIA_CACHE=$(mktemp -d)
export VIRTIO_MEDIA_CACHE
trap 'rm -rf "$VIRTIO_MEDIA_CACHE"' EXIT
unset CACHE_LOCKED_fill

files=40
# The shape of qemu.sh: look, unpack into DIR.tmp, move it into place.
fill() {
	set -e
	. tools/vm/lib.sh
	cache_lock
	local dir=$CACHE_DIR/part i
	[ -f "$dir/done" ] && return 0
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	for i in $(seq 1 $files); do
		echo "$i" > "$dir.tmp/$i"
		sleep 0.01
	done
	touch "$dir.tmp/done"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
}
(fill) 2> /dev/null & a=$!
(fill) 2> /dev/null & b=$!
wait $a; sa=$?
wait $b; sb=$?
have=$(find "$VIRTIO_MEDIA_CACHE/part" -type f 2> /dev/null | wc -l)
if [ $sa != 0 ] || [ $sb != 0 ] || [ "$have" != $((files + 1)) ]; then
	echo "two fillers at once: exit $sa and $sb, $have of $((files + 1)) files"
	exit 1
fi

# Fillers: scripts that move a .tmp directory into place or mark a build
# done.
missing=$(grep -lE 'mv "\$[A-Za-z_]+\.tmp"|\.build-done' tools/vm/*.sh tools/bench/*/*.sh |
	xargs grep -L 'cache_lock' | tr '\n' ' ')
if [ -n "$missing" ]; then
	echo "cache fillers without cache_lock: $missing"
	exit 1
fi
echo "two fillers at once both found $have files; every filler takes the lock"
