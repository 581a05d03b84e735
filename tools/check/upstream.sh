# The upstream form of the driver: make patches, the series applied to the
# 7.3 tree and built there patch by patch, checkpatch, rustfmt, rustdoc,
# kernel-doc, and the module's device table (modinfo aliases, modprobe).
# See Documentation/build-and-test.rst, "The upstream series".

upstream_out=$results/upstream
patches_dir=$BUILD_DIR/patches

# The series (build/patches), made once per make check.
upstream_series() {
	if [ -z "${upstream_series_status:-}" ]; then
		tools/patches.py --ksrc "$(tools/vm/kernel.sh source)" > "$results/upstream-patches.log" 2>&1
		upstream_series_status=$?
	fi
	return "$upstream_series_status"
}

# The patches of the series, without the cover letter.
series_patches() {
	ls "$patches_dir"/[0-9][0-9][0-9][0-9]-*.patch | grep -v /0000-cover-letter.patch
}

# The series applied to the cached kernel tree and built, once per make
# check (tools/patches-intree.sh; its steps in $upstream_out/steps.txt).
upstream_intree() {
	if [ -z "${upstream_intree_status:-}" ]; then
		upstream_series || return 1
		local start=$SECONDS
		# shellcheck disable=SC2046
		tools/patches-intree.sh "$upstream_out" $(series_patches) > "$results/upstream-intree.log" 2>&1
		upstream_intree_status=$?
		echo "in-tree run: $((SECONDS - start)) s, status $upstream_intree_status" \
			>> "$results/upstream-intree.log"
	fi
	return 0
}

# record_step LABEL STEP: the verdict and detail of an in-tree step.
record_step() {
	local line
	line=$(awk -F'\t' -v s="$2" '$1 == s' "$upstream_out/steps.txt" 2>/dev/null)
	if [ -z "$line" ]; then
		record "$1" FAIL "did not run ($results/upstream-intree.log)"
	else
		record "$1" "$(cut -f2 <<< "$line")" "$(cut -f3 <<< "$line")"
	fi
}

t_upstream_patches() {
	local start=$SECONDS
	if upstream_series; then
		record "upstream: make patches" OK \
			"$(series_patches | wc -l) patches and a cover letter in $patches_dir, $((SECONDS - start)) s"
	else
		record "upstream: make patches" FAIL "$(tail -n 1 "$results/upstream-patches.log")"
	fi
}
check_test upstream-patches t_upstream_patches

# Each patch applies to the 7.3 tree after the ones before it, and the tree
# then builds (the module with CONFIG_VIRTIO_MEDIA=m, UAPI headers).
t_upstream_build() {
	local patch number
	upstream_intree
	if ! [ -s "$upstream_out/steps.txt" ]; then
		record "upstream: series builds in-tree" FAIL "($results/upstream-intree.log)"
		return
	fi
	for patch in $(series_patches); do
		number=$(basename "$patch" | cut -c1-4)
		record_step "upstream: patch $number applies to 7.3" "apply $number"
		record_step "upstream: patch $number builds in-tree" "build $number"
	done
}
check_test upstream-build t_upstream_build

t_upstream_checkpatch() {
	local start=$SECONDS log=$results/upstream-checkpatch.log
	if ! upstream_series; then
		record "upstream: checkpatch --strict" FAIL "no series"
		return
	fi
	if tools/patches.py --ksrc "$(tools/vm/kernel.sh source)" --checkpatch > "$log" 2>&1; then
		record "upstream: checkpatch --strict" OK "$(tail -n 1 "$log"), $((SECONDS - start)) s"
	else
		record "upstream: checkpatch --strict" FAIL "$(tail -n 1 "$log") ($patches_dir/checkpatch.txt)"
	fi
}
check_test upstream-checkpatch t_upstream_checkpatch

t_upstream_rustfmt() {
	upstream_intree
	record_step "upstream: rustfmt, the tree's settings" rustfmt
}
check_test upstream-rustfmt t_upstream_rustfmt

t_upstream_rustdoc() { upstream_intree; record_step "upstream: rustdoc -D warnings" rustdoc; }
check_test upstream-rustdoc t_upstream_rustdoc

t_upstream_kernel_doc() {
	upstream_intree
	record_step "upstream: kernel-doc -Wall, C files" kernel-doc
}
check_test upstream-kernel-doc t_upstream_kernel_doc

# modpost turned the device table into both aliases, out of tree and in-tree.
t_upstream_modinfo() {
	local label=$1 file=$2 aliases want="virtio:d0000002Av* virtio:d00000030v*"
	aliases=$(modinfo -F alias "$file" 2>/dev/null | sort | paste -sd ' ')
	if [ "$aliases" = "$want" ]; then
		record "upstream: modinfo aliases, $label" OK "$aliases"
	else
		record "upstream: modinfo aliases, $label" FAIL "want $want, have '$aliases' ($file)"
	fi
}
t_upstream_modinfo_out_of_tree() {
	if need module; then
		t_upstream_modinfo "out of tree" "$ko"
	else
		record "upstream: modinfo aliases, out of tree" FAIL "no module ($results/module-build.log)"
	fi
}
check_test upstream-modinfo t_upstream_modinfo_out_of_tree
t_upstream_modinfo_in_tree() {
	upstream_intree
	t_upstream_modinfo "in-tree" "$upstream_out/virtio_media.ko"
}
check_test upstream-modinfo-intree t_upstream_modinfo_in_tree

# In a guest with devices 42 and 48: depmod indexes the installed module,
# and modprobe of each device's modalias loads it and it binds the device.
t_upstream_modprobe() {
	local label="upstream: modprobe of the device modaliases"
	if ! need module || ! need vfu; then
		record "$label" FAIL "no module or test device"
		return
	fi
	if guest upstream-modprobe --ko "$ko" --vfu "--device-id 42" --vfu "--device-id 48" \
		--test tools/vm/tests/modprobe.sh --timeout 300; then
		record "$label" OK "$(grep -c '^device .*: driver virtio_media' \
			"$results/upstream-modprobe/console.log") devices bound"
	else
		record "$label" FAIL "($results/upstream-modprobe/console.log)"
	fi
}
check_test upstream-modprobe t_upstream_modprobe
