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
# v4l2-compliance -s with 0 failures; "userptr": its USERPTR streaming tests
# ran and passed; "guest-mmap": the driver used guest-backed MMAP buffers;
# "dmabuf": with vivid exporting (-e), its DMABUF streaming tests ran.
compliance() {
	local name=$1 flags=$2 label=$3 expect=" ${*:4} "
	local env="COMPLIANCE_ARGS=-s"
	[[ $expect == *" dmabuf "* ]] && env="EXPORTER=vivid"
	run_vfu "$name" "$flags" tools/vm/tests/compliance.sh "$env" "$extra_file"
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
		if grep -q 'MMAP buffers are in guest memory' "$results/$name/dmesg.log" 2>/dev/null &&
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

# stream_md5 NAME "DEVICE FLAGS" MODE LABEL: 300 frames, each frame's MD5
# in the guest equal to the one the device logged when it wrote it (frame i
# of the stream is the frame of sequence i).
stream_md5() {
	local name=$1 flags=$2 mode=$3 label=$4
	local frame_log=$results/$name-device-frames.md5 guest_md5=$results/$name/single.md5 md5_bin
	rm -f "$frame_log"
	if md5_bin=$(guest_program frame-md5 tools/vm/tests/frame-md5.c -lcrypto) &&
		run_vfu "$name" "$flags --frame-log $frame_log" tools/vm/tests/stream.sh "STREAM_MODE=$mode" \
			"$md5_bin" "$extra_file"; then
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

# The guest sees the device under both IDs; the driver's OPEN/CLOSE.
t_device_smoke() { # ID
	local id=$1
	if run_vfu "device-smoke-$id" "--device-id $id" tools/vm/tests/device-smoke.sh "EXPECT_ID=$id"; then
		record "device: guest sees ID $id, driver round trip" OK
	else
		record "device: guest sees ID $id, driver round trip" FAIL "($results/device-smoke-$id/console.log)"
	fi
}
check_test device-smoke-42 t_device_smoke 42
check_test device-smoke-48 t_device_smoke 48

# v4l2-compliance -s through the driver, on every backend; the project's
# devices support USERPTR, so its streaming tests must run.
check_test compliance-simple compliance compliance-simple "--device-id 42 --backend simple" simple
for backend in capture output m2m "capture --crop"; do
	check_test "compliance-$(echo "$backend" | tr -s ' -' '-')" compliance \
		"compliance-$(echo "$backend" | tr -s ' -' '-')" "--device-id 42 --backend $backend" "$backend" userptr
done

# MMAP buffers in guest memory, asked for with the module parameter on a
# device that has shared memory.
t_guest_mmap() { # BACKEND
	module_params=virtio_media.guest_mmap=1
	compliance "compliance-guest-mmap-$1" "--device-id 42 --backend $1" "$1, guest_mmap=1" userptr guest-mmap
	module_params=""
}
for backend in capture output m2m; do
	check_test "compliance-guest-mmap-$backend" t_guest_mmap "$backend"
done
t_stream_guest_mmap() {
	module_params=virtio_media.guest_mmap=1
	stream_md5 stream-guest-mmap "--device-id 42 --backend capture" mmap "MMAP, guest_mmap=1"
	module_params=""
}
check_test stream-guest-mmap t_stream_guest_mmap

# A device without shared memory: MMAP buffers in guest memory.
for backend in capture output m2m; do
	check_test "compliance-no-shm-$backend" compliance "compliance-no-shm-$backend" \
		"--device-id 42 --backend $backend --no-shm" "$backend, no shared memory" userptr guest-mmap
done
check_test stream-no-shm stream_md5 stream-no-shm "--device-id 42 --backend capture --no-shm" mmap \
	"MMAP, no shared memory"

# DMABUF import: vivid exports, the device writes into its buffers.
t_dmabuf() {
	extra_file=tools/vm/tests/vivid-exporter.sh
	"$@"
	extra_file=""
}
check_test compliance-dmabuf t_dmabuf compliance compliance-dmabuf "--device-id 42 --backend capture" \
	"capture, vivid exports (-e)" dmabuf
check_test stream-dmabuf t_dmabuf stream_md5 stream-dmabuf "--device-id 42 --backend capture" dmabuf \
	"DMABUF from vivid"

# 32-bit user space: Debian's i386 v4l2-compliance, run after the amd64
# one in the same guest, must get the same totals with 0 failures. `file`
# of each binary's ELF headers and the bit width each program reports
# about itself prove which one ran.
t_compliance_32bit() {
	local name=compliance-32bit status dir why="" bits totals64 totals32 version64 version32
	run_vfu "$name" "--device-id 42 --backend capture" tools/vm/tests/compliance-32bit.sh "COMPLIANCE_ARGS=-s"
	status=$?
	dir=$results/$name
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
check_test compliance-32bit t_compliance_32bit

# 300 frames from one session, through MMAP and USERPTR buffers.
check_test stream-mmap stream_md5 stream-mmap "--device-id 42 --backend capture" mmap MMAP
check_test stream-user stream_md5 stream-user "--device-id 42 --backend capture" user USERPTR

# 1000 USERPTR life cycles: pinned pages and memory back to the start.
t_userptr_cycles() {
	local label="driver: 1000 USERPTR cycles, pins and memory back" bin
	if bin=$(guest_program userptr-cycles tools/vm/tests/userptr-cycles.c) &&
		run_vfu userptr-cycles "--device-id 42 --backend capture" tools/vm/tests/userptr-cycles.sh \
			"CYCLES=1000" "$bin" tools/vm/tests/memory-lib.sh; then
		record "$label" OK "$(grep -o 'PASS: .*' "$results/userptr-cycles/console.log")"
	else
		record "$label" FAIL "($results/userptr-cycles/console.log)"
	fi
}
check_test userptr-cycles t_userptr_cycles

# V4L2_EVENT_SOURCE_CHANGE from the device, every 10 frames, reaches a
# waiting session and the streaming one.
t_source_change() {
	if run_vfu source-change "--device-id 42 --backend capture --source-change-every 10" \
		tools/vm/tests/source-change.sh FRAMES=40; then
		record "driver: SOURCE_CHANGE events reach programs" OK \
			"$(grep -o 'streaming session got [0-9]* source change events' "$results/source-change/console.log")"
	else
		record "driver: SOURCE_CHANGE events reach programs" FAIL "($results/source-change/console.log)"
	fi
}
check_test source-change t_source_change

# Unbind while streaming, rebind, unload.
t_unbind() {
	if run_vfu unbind "--device-id 42" tools/vm/tests/unbind.sh; then
		record "driver: unbind while streaming, rebind, rmmod" OK
	else
		record "driver: unbind while streaming, rebind, rmmod" FAIL "($results/unbind/console.log)"
	fi
}
check_test unbind t_unbind

# Devices that misbehave.
t_fault() { # FAULT
	if run_vfu "fault-$1" "--device-id 42 --fault $1 --fault-every 7" tools/vm/tests/faults.sh; then
		record "driver: no kernel problem under device fault '$1'" OK
	else
		record "driver: no kernel problem under device fault '$1'" FAIL "($results/fault-$1/console.log)"
	fi
}
for fault in delay error-event malformed; do
	check_test "fault-$fault" t_fault "$fault"
done

# With responses delayed, events overtake the STREAMON response: the
# ordering the driver must survive (it lost buffers there once).
t_concurrent() { # DELAY_MS
	local name=concurrent-delay-$1
	if run_vfu "$name" "--device-id 42 --backend m2m --response-delay-ms $1" tools/vm/tests/concurrent.sh; then
		record "driver: two m2m sessions at once, responses +$1 ms" OK
	else
		record "driver: two m2m sessions at once, responses +$1 ms" FAIL "($results/$name/console.log)"
	fi
}
check_test concurrent-delay-0 t_concurrent 0
check_test concurrent-delay-20 t_concurrent 20

# What a program sees of an m2m device's returns must follow the device's
# order: a conversion's OUTPUT and CAPTURE buffers together (else
# v4l2-compliance's frame count wraps and its stream never ends:
# m2m-poll-pairs.c), and no event before a buffer returned earlier (else
# FFmpeg ends a drain early and loses frames: m2m-eos-order.c).
t_m2m_order() {
	local log=$results/m2m-order/console.log pairs eos
	rm -rf "${results:?}/m2m-order"
	# The guest run fails when a check does; each line says which.
	pairs=$(guest_program m2m-poll-pairs tools/vm/tests/m2m-poll-pairs.c) &&
		eos=$(guest_program m2m-eos-order tools/vm/tests/m2m-eos-order.c) &&
		run_vfu m2m-order "--device-id 42 --backend m2m" tools/vm/tests/m2m-order.sh \
			"STREAMS=${M2M_ORDER_STREAMS:-100}" "$pairs" "$eos"
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
check_test m2m-order t_m2m_order

# The benchmark's smoke test (make bench, BENCH_QUICK=1): G_FMT from 1
# and 4 threads against a device answering after 2 ms. It must hold 4
# commands at once (the device counts them); the throughput ratio is
# shown, not required (it depends on the CPU the host has to spare).
t_bench_smoke() {
	local log=$results/bench-smoke.run.log detail
	need module && need vfu || { record "bench: 4 sessions, 4 commands in flight" FAIL "(no module or device)"; return; }
	guest_runs+=("$results/bench-smoke")
	if BENCH_QUICK=1 BENCH_RUNS=1 BENCH_NAME=bench-smoke BENCH_KO=$ko \
		tools/bench.sh > "$log" 2>&1; then
		detail=$(/usr/bin/python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["concurrency"]; print("%d in flight, 4 threads %.2fx the ops/s of 1" % (c["device_in_flight"]["max"], c["threads"]["ratio_4_to_1"]["value"]))' \
			"$results/bench-smoke.json" 2>&1)
		record "bench: 4 sessions, 4 commands in flight" OK "$detail"
	else
		record "bench: 4 sessions, 4 commands in flight" FAIL "($log)"
	fi
}
check_test bench-smoke t_bench_smoke
