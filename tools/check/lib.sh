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

results=$(realpath -m "$BUILD_DIR/results")
summary=$results/summary.txt
passed=0 failed=0
check_ids=() check_cmds=()
# The guest runs of the test being run: their kernel reports fail it.
guest_runs=()
ko=drivers/media/virtio/virtio_media.ko
vfu_bin=tools/virtio-media-vfu/target/release/virtio-media-vfu

check_test() { # ID FUNCTION [ARGS...]
	check_ids+=("$1")
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
guest() {
	local name=$1
	shift
	guest_runs+=("$results/$name")
	tools/vm/run-guest.sh --name "$name" "$@" > "$results/$name.run.log" 2>&1
}

# A static guest program, built for the test (its build log is kept).
# guest_program NAME SOURCE: prints the binary's path.
guest_program() {
	local bin=$BUILD_DIR/tests/$1
	need headers || return 1
	mkdir -p "$(dirname "$bin")"
	gcc -O2 -static -pthread -Wall -Wextra -Werror -I"$V4L2R_VIDEODEV2_H_PATH" -o "$bin" "$2" \
		> "$results/$1.build.log" 2>&1 || return 1
	echo "$bin"
}

# run_vfu NAME "DEVICE FLAGS" TEST [VAR=VALUE] [FILE]: a guest with the
# module loaded and one test device; FILE goes to /extra; $module_params
# (e.g. "virtio_media.guest_mmap=1") go to the driver.
module_params="" extra_file=""
run_vfu() {
	local name=$1 flags=$2 test=$3 env=${4:-NONE=1} extra=()
	[ -n "${5:-}" ] && extra=(--ko "$5")
	need module && need vfu || return 1
	guest "$name" --ko "$ko" "${extra[@]}" --modules virtio_media --vfu "$flags" \
		--append "$module_params" --env "$env" --test "$test" --timeout 300
}

# Runs the selected tests, then prints the summary line; the exit status
# says whether everything passed.
check_main() {
	local i selected=0 pattern=${T:-}
	mkdir -p "$results"
	: > "$summary"
	tools/vm/deps.sh || { echo "0 passed, 1 failed"; return 1; }
	need kernel || { echo "0 passed, 1 failed (no kernel: tools/vm/kernel.sh)"; return 1; }
	for i in "${!check_ids[@]}"; do
		if [ -n "$pattern" ] && ! [[ ${check_ids[$i]} =~ $pattern ]]; then
			continue
		fi
		selected=$((selected + 1))
		guest_runs=()
		eval "${check_cmds[$i]}"
	done
	if [ "$selected" = 0 ]; then
		echo "no test ID matches T='$pattern'; the IDs are:"
		printf '  %s\n' "${check_ids[@]}"
		failed=$((failed + 1))
	fi
	echo
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}
