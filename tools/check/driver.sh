# Guest tests of the driver with the test device: its IDs, v4l2-compliance
# on every backend and memory type, frame-exact streams, 32-bit programs,
# buffer life cycles, events, unbind, misbehaving devices, concurrency.

# streaming_tests_ran MEMORY LABEL LOG: the compliance log's MEMORY
# streaming tests ran (not "Not Supported") and passed.
streaming_tests_ran() {
	local ran
	ran=$(grep -cE "test $1 \((no poll|select)\): OK\$" "$3" 2>/dev/null)
	if [ "${ran:-0}" = 2 ]; then
		record "driver: $1 streaming tests ran, $2" OK "2 of 2"
	else
		record "driver: $1 streaming tests ran, $2" FAIL "${ran:-0} of 2 ($3)"
	fi
}

# compliance NAME "DEVICE FLAGS" LABEL [userptr] [guest-mmap] [dmabuf]:
# adds to the batch v4l2-compliance -s, to pass with 0 failures;
# "userptr": its USERPTR streaming tests ran and passed; "guest-mmap": the
# driver used guest-backed MMAP buffers; "dmabuf": with vivid exporting
# (-e), its DMABUF streaming tests ran.
compliance() {
	local name=$1 flags=$2 label=$3
	local env="COMPLIANCE_ARGS=-s" file=""
	[[ " ${*:4} " == *" dmabuf "* ]] && env="EXPORTER=vivid" file=tools/vm/tests/vivid-exporter.sh
	batch_case "$name" "$flags" tools/vm/tests/compliance.sh 300 "compliance_judge $(printf '%q ' "$@")" \
		"$env" "$file"
}
compliance_judge() { # as compliance, after batch_run
	local name=$1 label=$3 expect=" ${*:4} "
	local log=$results/$name/compliance.log
	local totals
	totals=$(grep '^Total for' "$log" 2>/dev/null | tail -n 1)
	cp "$log" "$results/$name.compliance.log" 2>/dev/null
	if [ -n "$totals" ] && echo "$totals" | grep -q 'Failed: 0,'; then
		record "driver: v4l2-compliance -s, $label" OK "$totals"
	else
		record "driver: v4l2-compliance -s, $label" FAIL "${totals:-no totals} ($log)"
	fi
	[[ $expect == *" userptr "* ]] && streaming_tests_ran USERPTR "$label" "$log"
	[[ $expect == *" dmabuf "* ]] && streaming_tests_ran DMABUF "$label" "$log"
	if [[ $expect == *" guest-mmap "* ]]; then
		# The driver names the device (the batch's guest has several).
		if grep -q "virtio_media $case_virtio: MMAP buffers are in guest memory" "$results/$name/dmesg.log" 2>/dev/null &&
			grep -qE 'test MMAP \(select, REQBUFS\): OK$' "$log"; then
			record "driver: MMAP in guest memory, $label" OK
		else
			record "driver: MMAP in guest memory, $label" FAIL "($results/$name/dmesg.log, $log)"
		fi
		# Guest-backed buffers can be exported: the test must really run.
		if grep -qE 'test VIDIOC_EXPBUF: OK$' "$log"; then
			record "driver: EXPBUF, $label" OK
		else
			record "driver: EXPBUF, $label" FAIL "($log)"
		fi
	fi
}

frame_md5_bin=""
# stream_md5 NAME "DEVICE FLAGS" MODE LABEL: adds to the batch 300 frames,
# each frame's MD5 in the guest to be equal to the one the device logged
# when it wrote it (frame i of the stream is the frame of sequence i).
stream_md5() {
	local name=$1 flags=$2 mode=$3 file=""
	rm -f "$results/$name-device-frames.md5"
	# Built once per lane: a batch has several stream cases.
	[ -n "$frame_md5_bin" ] || frame_md5_bin=$(guest_program frame-md5 tools/vm/tests/frame-md5.c -lcrypto) ||
		{ frame_md5_bin=""; record "driver: stream 300 frames, $4" FAIL "($results/frame-md5.build.log)"; return; }
	[ "$mode" = dmabuf ] && file=tools/vm/tests/vivid-exporter.sh
	batch_case "$name" "$flags --frame-log $results/$name-device-frames.md5" tools/vm/tests/stream.sh 200 \
		"stream_md5_judge $(printf '%q ' "$@")" "STREAM_MODE=$mode" "$frame_md5_bin" "$file"
}
stream_md5_judge() { # as stream_md5, after batch_run
	local name=$1 label=$4
	local frame_log=$results/$name-device-frames.md5 guest_md5=$results/$name/single.md5
	if [ "$case_status" = 0 ]; then
		record "driver: stream 300 frames, $label" OK
	else
		record "driver: stream 300 frames, $label" FAIL "($results/$name/console.log)"
	fi
	if [ -s "$guest_md5" ] && [ -s "$frame_log" ]; then
		local mismatched frames
		mismatched=$(awk 'NR == FNR { dev[$1] = $2; next }
			!($1 in dev) || dev[$1] != $2 { bad++ } END { print bad + 0 }' "$frame_log" "$guest_md5")
		frames=$(wc -l < "$guest_md5")
		if [ "$mismatched" = 0 ] && [ "$frames" = 300 ]; then
			record "driver: guest frames match device frames, $label" OK "$frames frames, MD5"
		else
			record "driver: guest frames match device frames, $label" FAIL "$mismatched of $frames differ ($guest_md5, $frame_log)"
		fi
	else
		record "driver: guest frames match device frames, $label" FAIL "missing $guest_md5 or $frame_log"
	fi
}

# The cases below run in a few boots, each case with its own device (see
# batch_case in lib.sh); the check IDs are the batches'. A case's judge
# reads what the case left in results/ID/.

# The guest sees the device under both IDs; the driver's OPEN/CLOSE.
device_smoke() { # ID
	batch_case "device-smoke-$1" "--device-id $1" tools/vm/tests/device-smoke.sh 60 \
		"device_smoke_judge $1" "EXPECT_ID=$1"
}
device_smoke_judge() { # ID
	if [ "$case_status" = 0 ]; then
		record "device: guest sees ID $1, driver round trip" OK
	else
		record "device: guest sees ID $1, driver round trip" FAIL "($results/device-smoke-$1/console.log)"
	fi
}

# 32-bit user space: Debian's i386 v4l2-compliance, run after the amd64
# one in the same guest, must get the same totals with 0 failures. `file`
# of each binary's ELF headers and the bit width each program reports
# about itself prove which one ran. The amd64 run is also the capture
# backend's compliance run (a case of its own cost 30 s more).
compliance_32bit() {
	batch_case compliance-32bit "--device-id 42 --backend capture" tools/vm/tests/compliance-32bit.sh 400 \
		compliance_32bit_judge "COMPLIANCE_ARGS=-s"
}
compliance_32bit_judge() {
	local name=compliance-32bit status=$case_status dir why="" bits totals64 totals32 version64 version32
	dir=$results/$name
	cp "$dir/compliance-64.log" "$dir/compliance.log" 2>/dev/null
	compliance_judge "$name" "" capture userptr
	# Debian's i386 user space has a 32-bit time_t: without these system
	# calls its glibc aborts at the first futex (ENOSYS).
	grep -q '^CONFIG_COMPAT_32BIT_TIME=y' "$KDIR/.config" ||
		why="; guest kernel has no CONFIG_COMPAT_32BIT_TIME"
	for bits in 64 32; do
		[ -f "$dir/elf-$bits.bin" ] && file -b "$dir/elf-$bits.bin" > "$dir/file-$bits.txt"
		cp "$dir/compliance-$bits.log" "$results/$name.compliance-$bits.log" 2>/dev/null
	done
	# "59, Succeeded: 59, Failed: 0, Warnings: 0"; "v4l2-compliance 1.32.0, 32 bits, 32-bit time_t"
	totals64=$(grep '^Total for' "$dir/compliance-64.log" 2>/dev/null | tail -n 1)
	totals64=${totals64#*: }
	totals32=$(grep '^Total for' "$dir/compliance-32.log" 2>/dev/null | tail -n 1)
	totals32=${totals32#*: }
	version64=$(grep -m 1 '^v4l2-compliance .* bits' "$dir/compliance-64.log" 2>/dev/null)
	version32=$(grep -m 1 '^v4l2-compliance .* bits' "$dir/compliance-32.log" 2>/dev/null)
	for bits in 64 32; do
		echo "$bits-bit run, first line: $(head -n 1 "$dir/compliance-$bits.log" 2>/dev/null)"
		echo "    file: $(cat "$dir/file-$bits.txt" 2>/dev/null)"
		echo "    totals: $(grep '^Total for' "$dir/compliance-$bits.log" 2>/dev/null | tail -n 1)"
	done > "$dir/bits.log"
	grep -q '^ELF 64-bit .*x86-64' "$dir/file-64.txt" 2>/dev/null || why="$why; 64-bit binary not ELF64 x86-64"
	grep -q '^ELF 32-bit .*Intel 80386' "$dir/file-32.txt" 2>/dev/null || why="$why; 32-bit binary not ELF32 i386"
	case "$version64" in *", 64 bits,"*) ;; *) why="$why; 64-bit run did not report 64 bits" ;; esac
	case "$version32" in *", 32 bits,"*) ;; *) why="$why; 32-bit run did not report 32 bits" ;; esac
	[ "${version64%%,*}" = "${version32%%,*}" ] || why="$why; versions differ"
	case "$totals64" in *", Failed: 0,"*) ;; *) why="$why; 64-bit: ${totals64:-no totals}" ;; esac
	case "$totals32" in *", Failed: 0,"*) ;; *) why="$why; 32-bit: ${totals32:-no totals}" ;; esac
	# Each test has the same result in both, but for TIME32/64, which only a
	# 32-bit build runs (its 32-bit time_t ioctls against the 64-bit ones).
	results_of() {
		grep -oE 'test [A-Za-z0-9_/ ,()-]+: [A-Za-z ()]+' "$1" 2>/dev/null | sed 's/ *$//'
	}
	results_of "$dir/compliance-64.log" > "$dir/results-64.txt"
	results_of "$dir/compliance-32.log" | grep -v '^test TIME32/64: ' > "$dir/results-32.txt"
	grep -q '^test TIME32/64: OK$' <(results_of "$dir/compliance-32.log") ||
		why="$why; 32-bit: TIME32/64 not OK"
	[ -s "$dir/results-64.txt" ] && cmp -s "$dir/results-64.txt" "$dir/results-32.txt" ||
		why="$why; results differ ($(diff "$dir/results-64.txt" "$dir/results-32.txt" | grep -c '^[<>]') lines)"
	[ "$status" = 0 ] || why="$why; guest status $status"
	if [ -z "$why" ]; then
		record "driver: v4l2-compliance -s, i386 = amd64" OK \
			"same result for each of $(wc -l < "$dir/results-64.txt") tests; i386 $totals32 (with TIME32/64), amd64 $totals64"
	else
		record "driver: v4l2-compliance -s, i386 = amd64" FAIL "${why#; } ($dir/bits.log)"
	fi
}

# 1000 USERPTR life cycles: pinned pages and memory back to the start.
userptr_cycles() {
	local bin
	bin=$(guest_program userptr-cycles tools/vm/tests/userptr-cycles.c) ||
		{ record "driver: 1000 USERPTR cycles, pins and memory back" FAIL "($results/userptr-cycles.build.log)"; return; }
	batch_case userptr-cycles "--device-id 42 --backend capture" tools/vm/tests/userptr-cycles.sh 300 \
		userptr_cycles_judge "CYCLES=1000" "$bin" tools/vm/tests/memory-lib.sh
}
userptr_cycles_judge() {
	local label="driver: 1000 USERPTR cycles, pins and memory back"
	if [ "$case_status" = 0 ]; then
		record "$label" OK "$(grep -o 'PASS: .*' "$results/userptr-cycles/console.log")"
	else
		record "$label" FAIL "($results/userptr-cycles/console.log)"
	fi
}

# USERPTR memory kept between QBUFs: reused, replaced, released.
userptr_reuse() {
	local bin label="driver: USERPTR memory kept between QBUFs, released at STREAMOFF and close"
	bin=$(guest_program userptr-reuse tools/vm/tests/userptr-reuse.c) ||
		{ record "$label" FAIL "($results/userptr-reuse.build.log)"; return; }
	batch_case userptr-reuse "--device-id 42 --backend capture" tools/vm/tests/userptr-reuse.sh 120 \
		userptr_reuse_judge "NONE=1" "$bin"
}
userptr_reuse_judge() {
	local label="driver: USERPTR memory kept between QBUFs, released at STREAMOFF and close"
	if [ "$case_status" = 0 ]; then
		record "$label" OK "$(grep -o '10 QBUFs of the same memory pinned nothing' "$results/userptr-reuse/console.log")"
	else
		record "$label" FAIL "($(grep -o 'FAIL: .*' "$results/userptr-reuse/console.log" | head -n 1); $results/userptr-reuse/console.log)"
	fi
}

# munmap() then mmap() of one buffer, 200 times, from a real-time program.
mmap_again() {
	local bin label="driver: mmap right after munmap of the same buffer"
	bin=$(guest_program mmap-again tools/vm/tests/mmap-again.c) ||
		{ record "$label" FAIL "($results/mmap-again.build.log)"; return; }
	batch_case mmap-again "--device-id 42 --backend capture" tools/vm/tests/mmap-again.sh 120 \
		mmap_again_judge "COUNT=200" "$bin"
}
mmap_again_judge() {
	local label="driver: mmap right after munmap of the same buffer"
	if [ "$case_status" = 0 ]; then
		record "$label" OK "$(grep -o '[0-9]* mmaps right after a munmap' "$results/mmap-again/console.log")"
	else
		record "$label" FAIL "($(grep -o 'FAIL: .*' "$results/mmap-again/console.log" | head -n 1); $results/mmap-again/console.log)"
	fi
}

# V4L2_EVENT_SOURCE_CHANGE from the device, every 10 frames, reaches a
# waiting session and the streaming one.
source_change() {
	batch_case source-change "--device-id 42 --backend capture --source-change-every 10" \
		tools/vm/tests/source-change.sh 120 source_change_judge FRAMES=40
}
source_change_judge() {
	if [ "$case_status" = 0 ]; then
		record "driver: SOURCE_CHANGE events reach programs" OK \
			"$(grep -o 'streaming session got [0-9]* source change events' "$results/source-change/console.log")"
	else
		record "driver: SOURCE_CHANGE events reach programs" FAIL "($results/source-change/console.log)"
	fi
}

# Devices that misbehave: every 7th command. A delayed response waits
# 500 ms more, so "delay" hits every 23rd: every 7th made its case 94 s
# long (2026-12-01) for the same thing, responses overtaken by later ones.
fault() { # FAULT
	local every=7
	[ "$1" = delay ] && every=23
	batch_case "fault-$1" "--device-id 42 --fault $1 --fault-every $every" tools/vm/tests/faults.sh 300 \
		"fault_judge $1"
}
fault_judge() { # FAULT
	if [ "$case_status" = 0 ]; then
		record "driver: no kernel problem under device fault '$1'" OK
	else
		record "driver: no kernel problem under device fault '$1'" FAIL "($results/fault-$1/console.log)"
	fi
}

# With responses delayed, events overtake the STREAMON response: the
# ordering the driver must survive (it lost buffers there once).
concurrent() { # DELAY_MS
	batch_case "concurrent-delay-$1" "--device-id 42 --backend m2m --response-delay-ms $1" \
		tools/vm/tests/concurrent.sh 150 "concurrent_judge $1"
}
concurrent_judge() { # DELAY_MS
	if [ "$case_status" = 0 ]; then
		record "driver: two m2m sessions at once, responses +$1 ms" OK
	else
		record "driver: two m2m sessions at once, responses +$1 ms" FAIL \
			"($results/concurrent-delay-$1/console.log)"
	fi
}

# Two boots (each case with its own device; a boot costs make check about
# 35 s). The first: v4l2-compliance -s through the driver on every backend
# (the project's devices support USERPTR, so its streaming tests must
# run), from 32-bit programs too, and with vivid exporting DMABUF buffers;
# the order of an m2m device's returns; buffer life cycles, misbehaving
# devices, concurrent sessions.
t_driver_compliance() {
	compliance compliance-simple "--device-id 42 --backend simple" simple
	local backend f
	# capture: the amd64 run of compliance_32bit.
	for backend in output m2m "capture --crop"; do
		compliance "compliance-$(echo "$backend" | tr -s ' -' '-')" "--device-id 42 --backend $backend" \
			"$backend" userptr
	done
	compliance_32bit
	compliance compliance-dmabuf "--device-id 42 --backend capture" "capture, vivid exports (-e)" dmabuf
	m2m_order
	kunit_case
	userptr_cycles
	userptr_reuse
	mmap_again
	for f in delay error-event malformed; do
		fault "$f"
	done
	concurrent 0
	concurrent 20
	batch_run driver-compliance
}
check_test driver-compliance t_driver_compliance

# The second: streams checked frame by frame (MMAP, USERPTR, DMABUF from
# vivid, no shared memory: MMAP buffers in guest memory); the device under
# both IDs; events; unbind; vivid as a reference; then, with the module
# loaded again with guest_mmap=1, MMAP buffers in guest memory on a device
# that has shared memory.
t_driver_streams() {
	local backend
	device_smoke 42
	device_smoke 48
	stream_md5 stream-mmap "--device-id 42 --backend capture" mmap MMAP
	stream_md5 stream-user "--device-id 42 --backend capture" user USERPTR
	stream_md5 stream-dmabuf "--device-id 42 --backend capture" dmabuf "DMABUF from vivid"
	for backend in capture output m2m; do
		compliance "compliance-no-shm-$backend" "--device-id 42 --backend $backend --no-shm" \
			"$backend, no shared memory" userptr guest-mmap
	done
	stream_md5 stream-no-shm "--device-id 42 --backend capture --no-shm" mmap "MMAP, no shared memory"
	source_change
	unbind_case
	vivid_case
	case_params=guest_mmap=1
	for backend in capture output m2m; do
		compliance "compliance-guest-mmap-$backend" "--device-id 42 --backend $backend" \
			"$backend, guest_mmap=1" userptr guest-mmap
	done
	stream_md5 stream-guest-mmap "--device-id 42 --backend capture" mmap "MMAP, guest_mmap=1"
	hardening_guest_mmap
	case_params=""
	batch_run driver-streams
}
check_test driver-streams t_driver_streams

# Unbind while streaming, rebind; the module unloads at the end of the run.
unbind_case() {
	batch_case unbind "--device-id 42" tools/vm/tests/unbind.sh 120 unbind_judge
}
unbind_judge() {
	if [ "$case_status" = 0 ]; then
		record "driver: unbind while streaming, rebind, rmmod" OK
	else
		record "driver: unbind while streaming, rebind, rmmod" FAIL "($results/unbind/console.log)"
	fi
}

# What a program sees of an m2m device's returns must follow the device's
# order: a conversion's OUTPUT and CAPTURE buffers together (else
# v4l2-compliance's frame count wraps and its stream never ends:
# m2m-poll-pairs.c), and no event before a buffer returned earlier (else
# FFmpeg ends a drain early and loses frames: m2m-eos-order.c).
# 8 streams per poll mode (3.9 s each): the driver that showed half a job
# did so about twice per stream (55ca46e); the EOS bug showed in 10 to 14
# of 200 drains (0f9a999), so drains stay at 200 (20 s).
m2m_order() {
	local pairs eos
	pairs=$(guest_program m2m-poll-pairs tools/vm/tests/m2m-poll-pairs.c) &&
		eos=$(guest_program m2m-eos-order tools/vm/tests/m2m-eos-order.c) ||
		{ record "driver: m2m order test programs build" FAIL "($results/m2m-*.build.log)"; return; }
	batch_case m2m-order "--device-id 42 --backend m2m" tools/vm/tests/m2m-order.sh 300 m2m_order_judge \
		"STREAMS=${M2M_ORDER_STREAMS:-8}" "DRAINS=${M2M_ORDER_DRAINS:-200}" "$pairs" "$eos"
}
m2m_order_judge() {
	local log=$results/m2m-order/console.log
	if grep -q '^PAIRS 0' "$log" 2>/dev/null; then
		record "driver: m2m poll shows a conversion's buffers together" OK \
			"$(grep -oE 'RESULT (epoll|select).*' "$log" | tr '\n' ' ')"
	else
		record "driver: m2m poll shows a conversion's buffers together" FAIL \
			"$(grep -oE 'RESULT (epoll|select).*' "$log" | tr '\n' ' ')($log)"
	fi
	if grep -q '^EOS 0' "$log" 2>/dev/null; then
		record "driver: m2m drain's EOS shows after its LAST buffer" OK "$(grep -o 'RESULT streams.*' "$log")"
	else
		record "driver: m2m drain's EOS shows after its LAST buffer" FAIL "$(grep -o 'RESULT streams.*' "$log") ($log)"
	fi
}

# The benchmark's smoke test (make bench, BENCH_QUICK=1): G_FMT from 1
# and 4 threads against a device answering after 50 ms. It must hold 4
# commands at once (the device counts them); the throughput ratio is
# shown, not required: it depends on the CPU the host has to spare, and
# make check runs it beside the other lane's guests. make bench's 2 ms
# were too short for that: beside two other guests a G_FMT cost the guest
# 16 ms and the device never held more than 3 (2026-12-02). It also
# streams (eventq notifications per event) and counts the module's
# allocations during single-session G_FMT (none once buffers are reused).
t_bench_smoke() {
	local log=$results/bench-smoke.run.log json=$results/bench-smoke.json detail line
	local in_flight="bench: 4 sessions, 4 commands in flight" batched="bench: event buffers announced in batches"
	local allocs="bench: forwarded ioctls reuse their buffers"
	need module && need vfu || {
		record "$in_flight" FAIL "(no module or device)"
		record "$batched" FAIL "(no module or device)"
		record "$allocs" FAIL "(no module or device)"
		return
	}
	guest_runs+=("$results/bench-smoke")
	rm -f "$json"
	# Each line is judged on its own figure: bench.sh fails when either does.
	BENCH_QUICK=1 BENCH_RUNS=1 BENCH_DELAY_MS=50 BENCH_NAME=bench-smoke BENCH_KO=$ko \
		tools/bench.sh > "$log" 2>&1
	# One line per figure: "OK|FAIL detail".
	detail=$(/usr/bin/python3 - "$json" "$results/bench-smoke/allocs.json" <<-'PY' 2>&1
		import json, sys
		res = json.load(open(sys.argv[1]))
		c = res["concurrency"]
		print("%s %d in flight, 4 threads %.2fx the ops/s of 1" % (
		    "OK" if c["in_flight_pass"] else "FAIL", c["device_in_flight"]["max"],
		    c["threads"]["ratio_4_to_1"]["value"]))
		n = res["eventq_notifications"]
		d = n["devices"]["direct"]
		print("%s %d eventq notifications for %d events (at most %s per event)" % (
		    "OK" if n["pass"] else "FAIL", d["eventq_notifications"], d["events"], n["max_per_event"]))
		# kmalloc calls with the module on the stack during a G_FMT run
		# (bench.sh count_allocs): 4 per ioctl without the reuse; a few
		# for the first calls are allowed. Lost trace events fail it.
		a = json.load(open(sys.argv[2]))
		ops = a["run"]["ops"]
		stored, written = a["trace_header"].split()[1].split("/")
		per_op = a["module_kmallocs"] / max(ops, 1)
		ok = ops >= 50 and stored == written and per_op <= 0.05
		print("%s %d kmalloc calls from the module in %d G_FMT calls (%.3f per call, at most 0.05; trace %s/%s)" % (
		    "OK" if ok else "FAIL", a["module_kmallocs"], ops, per_op, stored, written))
	PY
	)
	for line in "$in_flight" "$batched" "$allocs"; do
		case "$detail" in
		"OK "* | "FAIL "*)
			record "$line" "${detail%% *}" "$(head -n 1 <<< "${detail#* }")"
			detail=$(tail -n +2 <<< "$detail")
			;;
		*) record "$line" FAIL "(no figure: $(head -n 1 <<< "$detail"); $log)" ;;
		esac
	done
}
check_test bench-smoke t_bench_smoke
