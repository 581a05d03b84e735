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

# The tools' Rust is formatted by rustfmt and clean under clippy (every
# target, warnings are errors).
t_vfu_lint() {
	local log=$results/vfu-lint.log
	need headers || { record "vfu: cargo fmt and clippy clean" FAIL "(no UAPI headers)"; return; }
	if (cd tools/virtio-media-vfu && cargo fmt --check) > "$log" 2>&1 &&
		tools/virtio-media-vfu/build.sh clippy --release --all-targets -j"$(nproc)" -- -D warnings >> "$log" 2>&1; then
		record "vfu: cargo fmt and clippy clean" OK
	else
		record "vfu: cargo fmt and clippy clean" FAIL "$(grep -m 1 -E '^(Diff in|error)' "$log") ($log)"
	fi
}
check_test vfu-lint t_vfu_lint

t_module_build() {
	if need module; then
		record "module: build with CLIPPY=1, no warnings" OK
	else
		record "module: build with CLIPPY=1, no warnings" FAIL "($results/module-build.log)"
	fi
}
check_test module-build t_module_build

# The driver's two layers: unsafe code only in kernel_ext/, which uses
# nothing of the driver; every driver module forbids unsafe code; no import
# cycle between driver modules (tools/check/layers.py).
t_layers() {
	local log=$results/layers.log
	if python3 tools/check/layers.py drivers/media/virtio > "$log" 2>&1; then
		record "module: two layers, no unsafe above, no cycle" OK "$(head -n 1 "$log")"
	else
		record "module: two layers, no unsafe above, no cycle" FAIL "$(grep -m 1 PROBLEM "$log") ($log)"
	fi
}
check_test layers t_layers

# Cache fillers started at once (the lanes' first guests on a fresh
# machine) wait for each other (tools/check/cache-lock.sh).
t_cache_lock() {
	local log=$results/cache-lock.log
	if tools/check/cache-lock.sh > "$log" 2>&1; then
		record "host: cache fillers at once wait for each other" OK "$(tail -n 1 "$log")"
	else
		record "host: cache fillers at once wait for each other" FAIL "$(tail -n 1 "$log") ($log)"
	fi
}
check_test cache-lock t_cache_lock
