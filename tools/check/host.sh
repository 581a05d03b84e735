# Tests that run on the host: the test device's unit tests and build, the
# module's build.

t_vfu_cargo_test() {
	local log=$results/vfu-cargo-test.log status p f
	need headers || { record "vfu: cargo test" FAIL "(no UAPI headers)"; return; }
	tools/virtio-media-vfu/build.sh test -j"$(nproc)" > "$log" 2>&1
	status=$?
	p=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$log" | sum_lines)
	f=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$log" | sum_lines)
	[ "$status" = 0 ] || f=$(( ${f:-0} + 1 ))
	record_counts "vfu: cargo test" "${p:-0}" "${f:-0}" "($log)"
}
check_test vfu-cargo-test t_vfu_cargo_test

t_vfu_build() {
	if need vfu; then
		record "vfu: release build" OK
	else
		record "vfu: release build" FAIL "($results/vfu-build.log)"
	fi
}
check_test vfu-build t_vfu_build

t_module_build() {
	if need module; then
		record "module: build with CLIPPY=1, no warnings" OK
	else
		record "module: build with CLIPPY=1, no warnings" FAIL "($results/module-build.log)"
	fi
}
check_test module-build t_module_build
