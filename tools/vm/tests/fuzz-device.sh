# Guest test: rounds of a workload against a hostile device
# (virtio-media-vfu --fuzz SEED; Documentation/fuzzing.rst).
#
# Each round loads the driver (each device then plays round R, seed
# SEED + R of its --fuzz SEED), runs programs on every node for
# ROUND_SECONDS at most and unloads it. A round passes when
#   * every program ends: killed at its deadline at the latest, it must
#     then exit (a program the kernel keeps is a hang);
#   * no task sleeps uninterruptibly for D_LIMIT s or more (the driver's
#     command timeout is 5 s);
#   * the module unloads;
#   * the pinned-page count is back to where it was before the first round,
#     exactly, and unreclaimable slab (counted every SLAB_EVERY rounds and
#     after the last) within SLAB_TOLERANCE_KIB of where it
#     was after the first round in which the driver registered a node (its
#     first use allocates for good: V4L2 core, caches; per-CPU caches make
#     slab move a little by themselves).
# The program results themselves may be anything: the device lies. The
# kernel log, kmemleak and the module unload are checked by /init and the
# runner after the test. One line per round goes to fuzz-rounds.txt.
#
# Variables (test.env): ROUNDS, ROUND_SECONDS, BACKENDS (the backend of each
# test device, in --vfu order, comma-separated: capture, output, m2m or
# simple; which streams
# to run), COMPLIANCE_EVERY (v4l2-compliance -s in every Nth round, on one
# node in turn; 0 = never), GUEST_MMAP_EVERY (guest_mmap=1 in the last of
# every N rounds, 0 = never), D_LIMIT, SLAB_TOLERANCE_KIB, SLAB_EVERY, STUCK_AFTER
# (s a killed program may take to exit, default 10: the driver's command
# timeout is 5 s; raise it to look past a known slow release).
. /test.env
rounds=${ROUNDS:-5}
round_s=${ROUND_SECONDS:-20}
backends=$(echo "${BACKENDS:-capture}" | tr ',' ' ')
compliance_every=${COMPLIANCE_EVERY:-0}
guest_mmap_every=${GUEST_MMAP_EVERY:-2}
d_limit=${D_LIMIT:-10}
slab_tolerance=${SLAB_TOLERANCE_KIB:-1024}
slab_every=${SLAB_EVERY:-5}
stuck_after=${STUCK_AFTER:-10}
ko=/extra/virtio_media.ko
work=/tmp/fuzz
out=/tmp/fuzz-rounds.txt
mkdir -p $work
: > $out

. /extra/memory-lib.sh # pins, slab

# run NAME COMMAND...: starts a program of the round in the background.
run() {
	name=$1
	shift
	"$@" > "$work/$name.log" 2>&1 &
	procs="$procs $!"
	eval "name_$!=\$name"
}

# The watch loop below runs once a second while a round's programs run.
# Under TCG and KASAN every fork costs tens of milliseconds of the CPU the
# programs need, so it reads /proc with shell builtins only.

# task_state PID: sets st to the state letter of the task (empty once it
# is gone).
task_state() {
	st=""
	read -r stat 2> /dev/null < "/proc/$1/stat" || return 0
	set -- ${stat##*) }
	st=$1
}

# now_s: sets now to the seconds since t0.
now_s() {
	read -r up _ < /proc/uptime
	now=$((${up%.*} - t0))
}

# Task state and where it sleeps, for the report of a stuck task.
describe_task() {
	task_state "$1"
	echo "  task $1 ($(cat /proc/$1/comm 2>/dev/null)): state $st, wchan $(cat /proc/$1/wchan 2>/dev/null)"
	sed 's/^/    /' /proc/$1/stack 2>/dev/null
}

# count_d_tasks: counts, for each task in D now, the samples in a row it
# was in D (d_<pid>, with dgen_<pid> the sample it was last seen in);
# reports a task once when its count reaches d_limit.
count_d_tasks() {
	gen=$((gen + 1))
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		task_state "$pid"
		[ "$st" = D ] || continue
		eval "last=\${dgen_$pid:-0} count=\${d_$pid:-0}"
		[ "$last" = $((gen - 1)) ] && count=$((count + 1)) || count=1
		eval "dgen_$pid=$gen d_$pid=$count"
		if [ "$count" = "$d_limit" ]; then
			echo "STUCK: a task slept uninterruptibly in $d_limit samples in a row (at least $d_limit s)"
			describe_task "$pid"
		fi
	done
}

# watch_programs DEADLINE: waits for the round's programs; past the deadline they
# get SIGTERM, 3 s later SIGKILL, and one still there STUCK_AFTER s after
# that is reported stuck. Meanwhile samples every task's state each
# second: a task in D for d_limit consecutive samples is reported once.
# Prints the problems.
watch_programs() {
	deadline=$1
	read -r up _ < /proc/uptime
	t0=${up%.*} now=0
	while :; do
		left=""
		for pid in $procs; do
			eval "name=\$name_$pid term=\${term_$pid:-} killed=\${kill_$pid:-}"
			task_state "$pid"
			if [ -z "$st" ] || [ "$st" = Z ]; then
				wait "$pid" 2>/dev/null
				echo "$name rc=$?" >> $work/results
				unset "term_$pid" "kill_$pid"
				continue
			fi
			# TERM at the deadline, KILL 3 s after the TERM, stuck
			# STUCK_AFTER s after the KILL, all from when each was sent
			# (a turn of this loop can take seconds on a slow guest).
			if [ -n "$killed" ]; then
				if [ $now -ge $((killed + stuck_after)) ]; then
					echo "STUCK: $name (pid $pid) did not exit $((now - killed)) s after SIGKILL"
					describe_task "$pid"
					echo "$name stuck" >> $work/results
					unset "term_$pid" "kill_$pid"
					continue
				fi
				kill -KILL "$pid" 2>/dev/null
			elif [ -n "$term" ]; then
				if [ $now -ge $((term + 3)) ]; then
					kill -KILL "$pid" 2>/dev/null
					eval "kill_$pid=$now"
				fi
			elif [ $now -ge "$deadline" ]; then
				kill -TERM "$pid" 2>/dev/null
				eval "term_$pid=$now"
				echo "$name killed at deadline" >> $work/killed
			fi
			left="$left $pid"
		done
		procs=$left
		count_d_tasks
		[ -z "$procs" ] && break
		sleep 1
		now_s
	done
}

# The node the driver registered for each virtio device, in PCI order
# (insmod returns once probe is done; devtmpfs may take a moment): one line
# per device, "-" for a device the driver did not register.
find_nodes() {
	sleep 0.5
	for n in $(ls /sys/bus/virtio/devices | sed 's/^virtio//' | sort -n); do
		node=-
		for d in /sys/bus/virtio/devices/virtio$n/video4linux/*; do
			[ -e "$d" ] && node=/dev/${d##*/}
		done
		echo "$node"
	done
}

# stream_args BACKEND mmap|user: v4l2-ctl's streaming options for it.
stream_args() {
	case "$1" in
	output) echo "--stream-out-$2" ;;
	m2m) echo "--stream-$2 --stream-out-$2" ;;
	*) echo "--stream-$2" ;;
	esac
}

# Several sessions of one node at once: controls, two streams, events.
node_programs() { # NAME NODE BACKEND
	# A killed shell leaves its child running: each v4l2-ctl of the loop
	# has its own limit, so none outlives the round by much.
	run "$1-ctl" sh -c "c='timeout -s KILL 12 v4l2-ctl -d $2'; for i in 1 2 3 4 5 6; do
		\$c --all; \$c --list-ctrls-menus; \$c --list-formats-ext
		\$c -c brightness=\$((i * 40)); \$c -C brightness; \$c -c horizontal_flip=\$((i % 2))
	done"
	run "$1-mmap" v4l2-ctl -d "$2" $(stream_args "$3" mmap) --stream-count=30 --stream-to=/dev/null
	run "$1-user" v4l2-ctl -d "$2" $(stream_args "$3" user) --stream-count=30 --stream-to=/dev/null
	run "$1-events" v4l2-ctl -d "$2" --poll-for-event=ctrl=brightness
}

ndev=$(echo $backends | wc -w)
pins0=$(pins)
slab1=""
failed=0
r=0
echo "fuzz-device: $rounds rounds of up to $round_s s, devices: $backends; pinned pages before: $pins0"
while [ $r -lt "$rounds" ]; do
	rm -f $work/*
	procs=""
	params=""
	[ "$guest_mmap_every" -gt 0 ] && [ $((r % guest_mmap_every)) = $((guest_mmap_every - 1)) ] && params="guest_mmap=1"
	echo "=== fuzz round $r ${params:-guest_mmap=0} ==="
	# The kernel log says which round a report belongs to.
	echo "fuzz-device: round $r" > /dev/kmsg
	start=$(date +%s)
	why=""
	if ! timeout 60 insmod $ko $params; then
		why="insmod failed"
	fi
	nodes=$(find_nodes | tr '\n' ' ')
	t_loaded=$(date +%s)
	i=0 any=""
	for node in $nodes; do
		backend=$(echo $backends | cut -d' ' -f$((i + 1)))
		if [ "$node" != - ]; then
			any=1
			node_programs "n$i" "$node" "${backend:-capture}"
			if [ "$compliance_every" -gt 0 ] && [ $((r % compliance_every)) = 0 ] &&
				[ $((r / compliance_every % ndev)) = $i ]; then
				run "n$i-compliance" v4l2-compliance -d "$node" -s
			fi
		fi
		i=$((i + 1))
	done
	if [ -n "$any" ]; then
		# ROUND_SECONDS of running, however long loading took.
		watch_programs "$round_s" > $work/problems
		if [ -s $work/problems ]; then
			cat $work/problems
			why="$why${why:+; }$(grep -m 1 '^STUCK' $work/problems)"
		fi
		echo "programs: $(tr '\n' ' ' < $work/results)"
		# An errno no kernel gives programs (a device's kernel-internal
		# status passed on read "Unknown error 513").
		seen=$(grep -ho 'Unknown error [0-9]*' $work/*.log 2>/dev/null | sort -u | tr '\n' ',')
		[ -n "$seen" ] && why="$why${why:+; }a program saw ${seen%,}"
		[ -s $work/killed ] && echo "killed at the deadline: $(cut -d' ' -f1 $work/killed | sort -u | tr '\n' ' ')"
	fi
	t_run=$(date +%s)
	# The v4l2-ctl a killed "-ctl" shell had started runs on (up to its
	# own 12 s limit) with the node open: end it before the unload, which
	# it would otherwise hold up (seeds 2+12 in /tmp/ci8: "rmmod worked
	# 3 s later"). One that cannot die within 10 s is stuck.
	killall -KILL v4l2-ctl 2>/dev/null
	i=0
	while pidof v4l2-ctl > /dev/null && [ $i -lt 10 ]; do
		sleep 1
		i=$((i + 1))
	done
	if pidof v4l2-ctl > /dev/null; then
		why="$why${why:+; }STUCK: v4l2-ctl $(pidof v4l2-ctl) did not exit 10 s after SIGKILL"
		for pid in $(pidof v4l2-ctl); do describe_task "$pid"; done
	fi
	if grep -q '^virtio_media ' /proc/modules && ! timeout 60 rmmod virtio_media; then
		why="$why${why:+; }rmmod failed"
		echo "rmmod failed; users: $(cat /sys/module/virtio_media/refcnt 2>/dev/null)"
		# A stuck task holds the module: wait for it, so the next
		# rounds still count.
		for i in $(seq 60); do
			sleep 1
			rmmod virtio_media 2>/dev/null && { echo "rmmod worked $i s later"; break; }
		done
	fi
	t_unload=$(date +%s)
	p=$(pins) s=""
	[ "$p" = "$pins0" ] || why="$why${why:+; }$((p - pins0)) pages still pinned"
	# Slab after the first round with a node, every SLAB_EVERY rounds and
	# after the last (counting it takes seconds under KASAN).
	if { [ -z "$slab1" ] && [ -n "$any" ]; } || [ $((r % slab_every)) = 0 ] || [ $((r + 1)) = "$rounds" ]; then
		s=$(slab)
		[ -z "$slab1" ] && [ -n "$any" ] && slab1=$s && slab_caches /tmp/slab1.caches
		if [ -n "$slab1" ] && [ $((s - slab1)) -ne 0 ]; then
			echo "slab $s KiB; the caches that grew most since the first round:"
			slab_growth /tmp/slab1.caches | sed 's/^/  /'
			echo "user tasks (pid ppid state comm): $(user_tasks | tr '\n' ';')"
			echo "tasks in the kernel (running/all, /proc/loadavg): $(cut -d' ' -f4 /proc/loadavg)"
			[ $((s - slab1)) -le "$slab_tolerance" ] ||
				why="$why${why:+; }slab grew by $((s - slab1)) KiB"
		fi
	fi
	line="round $r ($((t_loaded - start))+$((t_run - t_loaded))+$((t_unload - t_run))+$(($(date +%s) - t_unload)) s load+run+unload+count, nodes $nodes${params:-guest_mmap=0}): pins $p${s:+, slab $s KiB}"
	if [ -n "$why" ]; then
		echo "FAIL $line: $why" | tee -a $out
		failed=$((failed + 1))
	else
		echo "OK $line" | tee -a $out
	fi
	r=$((r + 1))
done
export_file fuzz-rounds.txt $out
echo "fuzz-device: $((rounds - failed)) of $rounds rounds passed; pinned pages $pins0 -> $(pins), slab after the first round with a node ${slab1:-(none)} KiB -> $(slab) KiB"
[ $failed = 0 ]
