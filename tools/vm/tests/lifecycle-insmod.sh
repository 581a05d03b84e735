# Guest test: CYCLES times insmod, open, stream a few frames (MMAP and
# USERPTR in turn), close, rmmod. Afterwards pinned pages, unreclaimable slab
# and the other modules' user counts must be back where they were, and
# while the module was loaded with no file open it must have had no user.
. /extra/lifecycle-lib.sh
cycles=${CYCLES:-200}
ko=/extra/virtio_media.ko
params=$(module_params)

rmmod virtio_media || { result insmod-cycles FAIL "the module /init loaded does not unload"; finish; exit; }
# One cycle first, so one-time allocations do not count as leaks.
cycle() { # N MODE
	insmod $ko $params || { echo "cycle $1: insmod failed"; return 1; }
	wait_until 10 test -c /dev/video0 || { echo "cycle $1: no /dev/video0 after insmod"; return 1; }
	timeout 30 v4l2-ctl -d /dev/video0 --stream-$2 --stream-count=3 --stream-to=/dev/null \
		> /tmp/stream.log 2>&1 || { echo "cycle $1: v4l2-ctl --stream-$2 exited with $?"; cat /tmp/stream.log; return 1; }
	[ "$(frames_in /tmp/stream.log)" -ge 3 ] || { echo "cycle $1: fewer than 3 frames"; return 1; }
	users=$(cat /sys/module/virtio_media/refcnt)
	[ "$users" = 0 ] || { echo "cycle $1: module has $users users with no file open"; return 1; }
	rmmod virtio_media || { echo "cycle $1: rmmod failed"; return 1; }
	[ ! -e /dev/video0 ] || { echo "cycle $1: /dev/video0 left after rmmod"; return 1; }
}
cycle 0 mmap || { result insmod-cycles FAIL "warm-up cycle failed"; finish; exit; }
modules0=$(module_users) pins0=$(pins) slab0=$(slab)
echo "before: pinned pages $pins0, unreclaimable slab $slab0 KiB"
start=$(date +%s)
i=1 done=0
while [ $i -le "$cycles" ]; do
	mode=mmap
	[ $((i % 2)) = 0 ] && mode=user
	cycle $i $mode || break
	[ -n "${SLAB_TRACE:-}" ] && echo "cycle $i: unreclaimable slab $(slab) KiB"
	done=$i
	i=$((i + 1))
done
seconds=$(($(date +%s) - start))
pins1=$(pins) slab1=$(slab)
echo "after $done cycles in $seconds s: pinned pages $pins1, unreclaimable slab $slab1 KiB"
why=""
[ "$done" = "$cycles" ] || why="$why; cycle $((done + 1)) of $cycles failed"
[ "$pins1" = "$pins0" ] || why="$why; $((pins1 - pins0)) pages still pinned"
# Between two samples of an idle guest the slab moves by up to 300 KiB
# (16 cycles of the debug kernel, sampled after each); a leak of 4 KiB a
# cycle passes this in 200 cycles. kmemleak, after the test, sees smaller
# ones.
[ $((slab1 - slab0)) -le 512 ] || why="$why; unreclaimable slab grew by $((slab1 - slab0)) KiB"
[ "$(module_users)" = "$modules0" ] || why="$why; other modules' user counts changed: $(module_users | tr '\n' ' ')"
if [ -z "$why" ]; then
	result insmod-cycles OK "$done cycles in $seconds s; pins $pins0 -> $pins1, slab $slab0 -> $slab1 KiB"
else
	result insmod-cycles FAIL "${why#; } (pins $pins0 -> $pins1, slab $slab0 -> $slab1 KiB, $seconds s)"
fi
finish
