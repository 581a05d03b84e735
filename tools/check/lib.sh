# The test runner of make check, and what tests share. Sourced by
# tools/check.sh after tools/vm/lib.sh, before the files that register tests.
#
# A test is a shell function registered with
#     check_test ID FUNCTION [ARGS...]
# in the order it should run. It records one or more result lines with
# `record` or `record_counts`; make check prints them and ends with
# "N passed, N failed". T=PATTERN (an extended regular expression) runs only
# the tests whose ID matches. What several tests need (the kernel, the
# module, the test device) is built once, by `need`, whether or not the test
# that reports on that build is selected.
#
# Tests run in CHECK_LANES lanes side by side (default: one per two host
# threads, at least 2, as run-guest.sh's GUEST_SLOTS), each lane taking
# the next unit when it is done. A
# unit is one test of a file whose tests stand alone (check_split_files),
# or all the tests of any other file, in order (they share a guest run or
# a build). Units start longest first, by the last run's timings. A unit's
# lines are printed when it ends; summary.txt keeps the registration order.
# CHECK_LANES=1 runs everything in order in one lane.

results=$(realpath -m "$BUILD_DIR/results")
summary=$results/summary.txt
passed=0 failed=0
check_ids=() check_cmds=() check_groups=()
check_split_files=" driver hardening lifecycle "
# Tests that must run alone, after the lanes (none now: bench-smoke
# asserts only what load cannot change; make bench measures alone).
check_alone_ids=" "
# The guest runs of the test being run: their kernel reports fail it.
guest_runs=()
ko=drivers/media/virtio/virtio_media.ko
vfu_bin=tools/virtio-media-vfu/target/release/virtio-media-vfu

check_test() { # ID FUNCTION [ARGS...]
	local file
	file=$(basename "${BASH_SOURCE[1]}" .sh)
	check_ids+=("$1")
	if [[ $check_split_files == *" $file "* ]]; then
		check_groups+=("$1")
	else
		check_groups+=("$file")
	fi
	shift
	check_cmds+=("$(printf '%q ' "$@")")
}

sum_lines() { awk '{ s += $1 } END { print s + 0 }'; }

# The kernel reports of the current test's guest runs, one line each.
kernel_reports() {
	local dir
	for dir in "${guest_runs[@]}"; do
		[ -s "$dir/kernel-report.txt" ] && sed "s|^|$(basename "$dir"): |" "$dir/kernel-report.txt"
	done
}

# record LABEL OK|FAIL [DETAIL]. A kernel report in any guest run of the
# test turns OK into FAIL, and the line names the report and its log.
record() {
	local label=$1 verdict=$2 detail=${3:-} reports
	reports=$(kernel_reports | head -n 1)
	if [ -n "$reports" ]; then
		verdict=FAIL
		detail="kernel report in $reports${detail:+; $detail}"
	fi
	if [ "$verdict" = OK ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
	printf '%-44s %-4s %s\n' "$label" "$verdict" "$detail" | tee -a "$summary"
}

# record_counts LABEL PASSED FAILED [DETAIL]: a runner that reports many
# cases at once; each case counts. A runner that ran nothing fails.
record_counts() {
	local label=$1 p=$2 f=$3 detail=${4:-} reports
	reports=$(kernel_reports | head -n 1)
	[ -n "$reports" ] && { f=$((f + 1)); detail="kernel report in $reports; $detail"; }
	passed=$((passed + p)); failed=$((failed + f))
	printf '%-44s %-4s %s\n' "$label" "$([ "$f" = 0 ] && [ "$p" -gt 0 ] && echo OK || echo FAIL)" \
		"$p passed, $f failed $detail" | tee -a "$summary"
	[ "$p" -gt 0 ] || [ "$f" -gt 0 ] || failed=$((failed + 1))
}

# need kernel|module|vfu|headers: builds what tests use, once per make
# check; returns non-zero when it cannot be had. The logs stay in results/.
declare -A need_status=()
need() {
	local what=$1 status
	if [ -n "${need_status[$what]:-}" ]; then return "${need_status[$what]}"; fi
	case "$what" in
	kernel)
		KDIR=${KDIR:-$(tools/vm/kernel.sh)}
		status=$?
		export KDIR ;;
	headers)
		V4L2R_VIDEODEV2_H_PATH=$(tools/vm/kernel.sh headers)
		status=$?
		export V4L2R_VIDEODEV2_H_PATH ;;
	module)
		# Warning-free and clippy-clean, or it does not count as built.
		need kernel || return 1
		make -s clean > /dev/null 2>&1
		if make CLIPPY=1 > "$results/module-build.log" 2>&1 &&
			! grep -qiE '(^|[^_])warning' "$results/module-build.log" && [ -f "$ko" ]; then
			status=0
		else
			status=1
		fi ;;
	vfu)
		need headers || return 1
		tools/virtio-media-vfu/build.sh build --release -j"$(nproc)" > "$results/vfu-build.log" 2>&1
		status=$? ;;
	*) echo "need: unknown prerequisite $what" >&2; status=1 ;;
	esac
	need_status[$what]=$status
	return "$status"
}

# guest NAME [run-guest.sh ARGS...]: one guest run of the current test;
# its log is results/NAME.run.log, its files results/NAME/. Returns the
# runner's status (126: the test passed but the kernel reported a problem).
#
# Guests get $guest_smp CPUs: 1, unless a test races threads against each
# other on purpose (hardening, the fuzzers: they set 2). Under TCG a second
# CPU costs more than it gives: with the two lanes' guests on 2 host cores,
# one fork+exec took 200 ms at 2 CPUs against 80 ms at 1, and the
# driver-faults batch 492 s against 353 s (1000 USERPTR cycles 238 s
# against 121 s).
#
# A kernel that hangs in its own boot, before /init (run-guest.sh's status
# 123), gets one more boot; its console is kept as NAME.boot-hung.log and
# make check names it at the end (boot-hangs.txt).
guest_smp=1
guest() {
	local name=$1 status boot
	shift
	rm -rf "${results:?}/$name" "$results/$name.boot-hung.log"
	guest_runs+=("$results/$name")
	for boot in 1 2; do
		tools/vm/run-guest.sh --name "$name" --smp "$guest_smp" "$@" > "$results/$name.run.log" 2>&1
		status=$?
		[ "$status" = 123 ] && [ "$boot" = 1 ] || return "$status"
		cp "$results/$name/console.log" "$results/$name.boot-hung.log"
		echo "$name: $(grep -m 1 'did not start /init' "$results/$name.run.log") ($results/$name.boot-hung.log)" \
			>> "$results/boot-hangs.txt"
	done
}

# A static guest program, built for the test (its build log is kept).
# guest_program NAME SOURCE [LIBRARY...]: prints the binary's path.
guest_program() {
	local bin=$BUILD_DIR/tests/$1
	need headers || return 1
	mkdir -p "$(dirname "$bin")"
	# Built aside and renamed: a test of another lane may be using it.
	gcc -O2 -static -pthread -Wall -Wextra -Werror -I"$V4L2R_VIDEODEV2_H_PATH" -o "$bin.$BASHPID" "$2" "${@:3}" \
		> "$results/$1.build.log" 2>&1 && mv -f "$bin.$BASHPID" "$bin" || { rm -f "$bin.$BASHPID"; return 1; }
	echo "$bin"
}

# A batch: several cases in one guest boot, each case with its own test
# device (tools/vm/tests/batch.sh runs them in turn). A boot costs make
# check 30 to 40 s; most cases take less. Cases of a batch share the
# kernel: a report in the guest's kernel log fails every case's lines.
#
# batch_case ID "DEVICE FLAGS" SCRIPT SECONDS JUDGE [VAR=VALUE | FILE]...
# adds a case: SCRIPT (a guest test) runs against the device, with the
# VAR=VALUE in its /test.env and each FILE in /extra, for at most SECONDS.
# After the boot, batch_run evaluates JUDGE (a command) with the case's
# results in results/ID/: what it exported, its part of the console
# (console.log), its device's log (vfu.log); $case_status is the script's
# exit status (125: none, the guest ended first) and $case_virtio its
# virtio device (e.g. virtio3). BATCH_CASES=REGEX keeps only the cases
# whose ID matches.
batch_ids=() batch_flags=() batch_scripts=() batch_secs=() batch_judges=() batch_envs=() batch_files=()
# case_params (e.g. "guest_mmap=1"): the driver's parameters for the cases
# added while it is set; the batch loads the module again for them
# (MODULE_PARAMS in tools/vm/tests/batch.sh).
case_params=""
batch_case() {
	local id=$1 arg env=""
	[[ $id =~ ${BATCH_CASES:-.} ]] || return 0
	[ -n "$case_params" ] && env="MODULE_PARAMS=$case_params"$'\n'
	batch_ids+=("$id") batch_flags+=("$2") batch_scripts+=("$3") batch_secs+=("$4") batch_judges+=("$5")
	shift 5
	for arg in "$@"; do
		if [[ $arg =~ ^[A-Z_][A-Z0-9_]*= ]]; then
			env+="$arg"$'\n'
		elif [ -n "$arg" ]; then
			batch_files+=("$arg")
		fi
	done
	batch_envs+=("$env")
}

# batch_run NAME: boots one guest for the cases added since the last
# batch_run (its own log is results/NAME/), then judges each case.
batch_run() {
	local name=$1 dir=$BUILD_DIR/batches/$1 i id kv args=() secs=120 f log
	local -A have=()
	[ "${#batch_ids[@]}" -gt 0 ] || return 0
	rm -rf "$dir" "${results:?}/$name"
	mkdir -p "$dir"
	for i in "${!batch_ids[@]}"; do
		id=${batch_ids[$i]}
		rm -rf "${results:?}/$id"
		# As run-guest.sh writes /test.env: VAR='VALUE', quotes escaped.
		while IFS= read -r kv; do
			[ -n "$kv" ] || continue
			kv=${kv//\'/\'\\\'\'}
			printf "%s='%s'\n" "${kv%%=*}" "${kv#*=}"
		done <<< "${batch_envs[$i]}" > "$dir/$id.env"
		echo "$id $(basename "${batch_scripts[$i]}") ${batch_secs[$i]}" >> "$dir/batch-cases.txt"
		args+=(--file "$dir/$id.env" --vfu "${batch_flags[$i]}")
		secs=$((secs + batch_secs[i] + 5))
	done
	for f in "${batch_scripts[@]}" "${batch_files[@]}"; do
		[ -n "${have[$(basename "$f")]:-}" ] && continue
		have[$(basename "$f")]=1
		args+=(--file "$f")
	done
	# The module's KUnit suites run at its insmod in the batch of the kunit case.
	[[ " ${batch_ids[*]} " == *" kunit "* ]] && args+=(--kunit)
	if need module && need vfu; then
		guest "$name" --ko "$ko" --file "$dir/batch-cases.txt" "${args[@]}" --modules virtio_media \
			--test tools/vm/tests/batch.sh --timeout "$secs"
	fi
	log=$results/$name/console.log
	for i in "${!batch_ids[@]}"; do
		id=${batch_ids[$i]}
		mkdir -p "$results/$id"
		[ -d "$results/$name/$id" ] && cp -a "$results/$name/$id/." "$results/$id/"
		awk -v b="=== CASE $id BEGIN" -v e="=== CASE $id STATUS" \
			'index($0, b) { on = 1 } on { print } index($0, e) { on = 0 }' "$log" \
			> "$results/$id/console.log" 2>/dev/null
		cp "$results/$name/vfu$([ "$i" = 0 ] || echo "$i").log" "$results/$id/vfu.log" 2>/dev/null
		case_status=$(sed -n "s/.*=== CASE $id STATUS \([0-9]*\) ===.*/\1/p" "$log" 2>/dev/null | tail -n 1)
		case_status=${case_status:-125}
		case_virtio=$(sed -n "s/.*=== CASE $id BEGIN \(virtio[0-9]*\) .*/\1/p" "$log" 2>/dev/null | tail -n 1)
		eval "${batch_judges[$i]}"
	done
	batch_ids=() batch_flags=() batch_scripts=() batch_secs=() batch_judges=() batch_envs=() batch_files=()
}

# Runs the selected tests, then prints the summary line; the exit status
# says whether everything passed.
# run_tests INDEX...: the tests, in this shell, one after the other.
run_tests() {
	local i started
	for i in "$@"; do
		guest_runs=()
		started=$SECONDS
		eval "${check_cmds[$i]}"
		# What each test costs, for keeping make check within its budget.
		echo "$((SECONDS - started)) s ${check_ids[$i]}" >> "$timings"
	done
}

# What the tests of several lanes would otherwise build at the same time:
# the test device, the module, the guest's user space, the codec tests'
# initramfs part and streams.
check_prepare() {
	local i
	need headers; need module; need vfu
	tools/vm/guest-userspace.sh "$KDIR" > /dev/null 2> "$results/guest-userspace.log"
	for i in "$@"; do
		if [ "${check_groups[$i]}" = codec ]; then
			need_codec
			break
		fi
	done
}

# next_group DIR COUNT: the index of the next group no lane took yet.
next_group() {
	local n
	exec 9> "$1/next.lock"
	flock 9
	n=$(cat "$1/next")
	echo $((n + 1)) > "$1/next"
	exec 9>&-
	[ "$n" -lt "$2" ] && echo "$n"
}

# unit_order INDEX...: the units of these tests, longest first by what
# each test took when it last ran here, else in tools/check/timings.txt (a
# run on a 2-core machine); a test timed nowhere counts as long.
unit_order() {
	local i f t id
	declare -A cost=() last=()
	for f in tools/check/timings.txt "$timings.last"; do
		[ -f "$f" ] || continue
		while read -r t _ id; do
			[[ $t =~ ^[0-9]+$ ]] && last[$id]=$t
		done < "$f"
	done
	for i in "$@"; do
		cost[${check_groups[$i]}]=$(( ${cost[${check_groups[$i]}]:-0} + ${last[${check_ids[$i]}]:-600} ))
	done
	for i in "${!cost[@]}"; do
		echo "${cost[$i]} $i"
	done | sort -k1,1nr -k2 | cut -d' ' -f2
}

# run_lanes LANES INDEX...: the tests' units in LANES lanes side by side,
# then those of check_alone_ids one after the other.
run_lanes() {
	local lanes=$1 dir=$results/lanes groups=() alone=() laned=() g i k lane
	shift
	for i in "$@"; do
		if [[ $check_alone_ids == *" ${check_ids[$i]} "* ]]; then
			alone+=("$i")
		else
			laned+=("$i")
		fi
	done
	set -- "${laned[@]}"
	mapfile -t groups < <(unit_order "$@")
	rm -rf "$dir"
	mkdir -p "$dir"
	echo 0 > "$dir/next"
	for lane in $(seq "$lanes"); do
		(
			while k=$(next_group "$dir" "${#groups[@]}"); do
				(
					summary=$dir/$k.summary timings=$dir/$k.timings passed=0 failed=0
					: > "$summary"
					: > "$timings"
					for i in "$@"; do
						[ "${check_groups[$i]}" = "${groups[$k]}" ] && run_tests "$i"
					done
					echo "$passed $failed" > "$dir/$k.counts"
				) > "$dir/$k.out" 2>&1
				flock "$dir/print.lock" cat "$dir/$k.out"
			done
		) &
	done
	wait
	# The units' results, in the order their first test was registered.
	declare -A unit_index=() merged=()
	for k in "${!groups[@]}"; do
		unit_index[${groups[$k]}]=$k
	done
	for i in "$@"; do
		g=${check_groups[$i]}
		[ -n "${merged[$g]:-}" ] && continue
		merged[$g]=1
		k=${unit_index[$g]}
		cat "$dir/$k.summary" >> "$summary"
		cat "$dir/$k.timings" >> "$timings"
		read -r p f < "$dir/$k.counts" || { p=0 f=1; echo "$g did not finish" | tee -a "$summary"; }
		passed=$((passed + p)) failed=$((failed + f))
	done
	run_tests "${alone[@]}"
}

check_main() {
	local i selected=() pattern=${T:-} lanes=${CHECK_LANES:-$(( $(nproc) / 2 > 2 ? $(nproc) / 2 : 2 ))}
	timings=$results/timings.txt
	mkdir -p "$results"
	: > "$summary"
	rm -f "$results/boot-hangs.txt"
	# What each test took when it last ran orders the lanes' units.
	if [ -f "$timings" ]; then
		cat "$timings.last" "$timings" 2> /dev/null |
			awk '$1 ~ /^[0-9]+$/ { t[$3] = $0 } END { for (id in t) print t[id] }' > "$timings.new"
		mv -f "$timings.new" "$timings.last"
	fi
	: > "$timings"
	tools/vm/deps.sh || { echo "0 passed, 1 failed"; return 1; }
	need kernel || { echo "0 passed, 1 failed (no kernel: tools/vm/kernel.sh)"; return 1; }
	for i in "${!check_ids[@]}"; do
		if [ -z "$pattern" ] || [[ ${check_ids[$i]} =~ $pattern ]]; then
			selected+=("$i")
		fi
	done
	if [ "${#selected[@]}" = 0 ]; then
		echo "no test ID matches T='$pattern'; the IDs are:"
		printf '  %s\n' "${check_ids[@]}"
		failed=$((failed + 1))
	elif [ "$lanes" -le 1 ]; then
		run_tests "${selected[@]}"
	else
		check_prepare "${selected[@]}"
		run_lanes "$lanes" "${selected[@]}"
	fi
	echo "total $SECONDS s in $lanes lanes" >> "$timings"
	if [ -s "$results/boot-hangs.txt" ]; then
		echo
		echo "Guest kernels that hung in their boot, before /init, and were booted again:"
		cat "$results/boot-hangs.txt"
	fi
	# CI shows only the end of the output: the failed lines go there too.
	if [ "$failed" != 0 ]; then
		echo
		echo "The lines that failed (their logs are under $results):"
		grep -E ' FAIL( |$)| did not finish$' "$summary"
	fi
	echo
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}
