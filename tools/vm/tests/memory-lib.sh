# The pinned-page and slab counters the leak checks of guest tests read
# (userptr-cycles.sh, lifecycle-lib.sh, fuzz-device.sh, fuzz-ioctl.sh);
# sourced from /extra.

# Pages pinned now (acquired - released, per-CPU deltas folded).
pins() {
	echo 1 > /proc/sys/vm/stat_refresh
	awk '/^nr_foll_pin_acquired/ { a = $2 } /^nr_foll_pin_released/ { r = $2 }
		END { print a - r }' /proc/vmstat
}

# Unreclaimable slab in KiB, after the kernel dropped what caches it can
# and every slab cache gave back its empty slabs
# (which also empties KASAN's quarantine of their objects): the least of
# three samples, as what other work allocates for a moment only adds.
# The debug kernel's own bookkeeping does not count: kmemleak_object holds
# one object per allocation anywhere (a leak shows in its objects' own
# cache, and kmemleak reports it), and debug_objects_cache keeps a pool
# sized by the most objects ever tracked at once (a fuzz-device round 19
# failed by 20 KiB, +194 KiB of it there; /tmp/fuzz-6000, 2026-12-02).
slab() {
	local f i least=""
	sync; echo 3 > /proc/sys/vm/drop_caches
	for i in 1 2 3; do
		for f in /sys/kernel/slab/*/shrink; do echo 1 > "$f"; done 2> /dev/null
		f=$(awk '/^SUnreclaim/ { print $2 }' /proc/meminfo)
		f=$((f - $(slab_bookkeeping)))
		[ -z "$least" ] || [ "$f" -lt "$least" ] && least=$f
	done
	echo "$least"
}

# KiB in the slabs of the caches slab leaves out: /proc/slabinfo's
# num_slabs x pagesperslab pages of 4 KiB (the guest is x86-64).
slab_bookkeeping() {
	awk '$1 == "kmemleak_object" || $1 == "debug_objects_cache" { k += $15 * $6 * 4 }
		END { printf "%d\n", k }' /proc/slabinfo
}

# slab_caches FILE: each slab cache's size now ("name KiB live-KiB": its
# slabs, and the objects in use in them), to say later which caches a
# growth is in (slab_growth).
slab_caches() {
	awk 'NR > 2 { printf "%s %d %d\n", $1, $3 * $4 / 1024, $2 * $4 / 1024 }' /proc/slabinfo > "$1"
}

# slab_growth FILE: the ten caches whose slabs grew most since slab_caches
# FILE, "name +KiB (before -> after), objects in use +KiB": slabs that
# grew with no more objects in use are partly empty slabs (fragmentation),
# not objects kept.
slab_growth() {
	awk 'NR > 2 { printf "%s %d %d\n", $1, $3 * $4 / 1024, $2 * $4 / 1024 }' /proc/slabinfo |
		awk 'NR == FNR { before[$1] = $2; live[$1] = $3; next }
			{ d = $2 - before[$1]; if (d > 0) printf "%d %s +%d KiB (%d -> %d), objects in use %+d KiB (%d -> %d)\n",
				d, $1, d, before[$1], $2, $3 - live[$1], live[$1], $3 }' "$1" - |
		sort -rn | head -n 10 | cut -d' ' -f2-
}

# user_tasks: every task but kernel threads (pid 2 and its children), as
# "pid ppid state comm", to tell what holds task and mm slabs.
user_tasks() {
	local p stat pid comm
	for p in /proc/[0-9]*; do
		read -r stat < "$p/stat" 2>/dev/null || continue
		pid=${stat%% *} comm=${stat#*(} comm=${comm%)*}
		set -- ${stat##*) }
		[ "$pid" = 2 ] || [ "$2" = 2 ] || echo "$pid $2 $1 $comm"
	done
}
