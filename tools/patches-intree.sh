#!/usr/bin/env bash
# Applies the series (make patches) to the cached 7.3 kernel build tree, one
# patch at a time, and builds after each; then rustdoc, rustfmt and
# kernel-doc on what the series adds. Used by make check
# (tools/check/upstream.sh).
#
#   tools/patches-intree.sh OUTDIR PATCH...
#
# The tree is never written: in a private mount namespace, an overlay whose
# lower layer is the tree is mounted over the tree's own path, so the
# build's absolute paths (OBJTREE in Rust commands, objtool's) stay those of
# the cached build and nothing outside the driver is rebuilt. Writes go to
# OUTDIR/overlay, removed at the next run. Each step writes one line
# "STEP<TAB>OK|FAIL<TAB>DETAIL" to OUTDIR/steps.txt, its log to OUTDIR/.
set -uo pipefail
. "$(dirname "$0")/vm/lib.sh"

if [ -z "${PATCHES_INTREE_NS:-}" ]; then
	exec env PATCHES_INTREE_NS=1 unshare --mount --propagation private "$0" "$@"
fi

out=$(realpath -m "$1")
shift
patches=()
for patch; do patches+=("$(realpath "$patch")"); done
kdir=${KDIR:-$("$VM_DIR/kernel.sh")} || die "no kernel build tree"
module=drivers/media/virtio/virtio_media.ko
export LLVM=-$LLVM_VERSION LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib

rm -rf "$out"
mkdir -p "$out/overlay/upper" "$out/overlay/work"
steps=$out/steps.txt
: > "$steps"
step() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >> "$steps"; }

mount -t overlay overlay \
	-o "lowerdir=$kdir,upperdir=$out/overlay/upper,workdir=$out/overlay/work" "$kdir" ||
	{ step mount FAIL "cannot mount an overlay on $kdir (needs root and overlayfs)"; exit 1; }
cd "$kdir" || exit 1

kmake() { nice -n 10 make -j2 "$@"; }

# A warning in the build is a failure, as in make check's module build.
build_module() { # LOG
	kmake "$module" > "$1" 2>&1 && [ -f "$module" ] && ! grep -qiE '(^|[^_])warning' "$1"
}

# The UAPI headers a patch adds or changes, prepared as headers_install
# does: each must compile on its own, twice included (the guard), next to
# the other installed 7.3 headers, as usr/include/Makefile tests them.
test_headers() { # PATCH LOG
	local header status=0 installed
	installed=$("$VM_DIR/kernel.sh" headers) && kmake scripts_unifdef > "$2" 2>&1 || return 1
	for header in $(sed -n 's|^+++ b/include/uapi/||p' "$1"); do
		mkdir -p "$(dirname "$out/uapi/$header")"
		echo "HDRTEST $header" >> "$2"
		{ scripts/headers_install.sh "include/uapi/$header" "$out/uapi/$header" &&
			clang$LLVM -std=c90 -Wall -Werror -fsyntax-only -I"$out/uapi" -I"$installed" \
				-x c /dev/null -include "$out/uapi/$header" -include "$out/uapi/$header" &&
			perl usr/include/headers_check.pl "$installed" "$out/uapi/$header"; } >> "$2" 2>&1 ||
			status=1
	done
	return $status
}

for patch in "${patches[@]}"; do
	name=$(basename "$patch" .patch)
	number=${name%%-*}
	if ! patch -p1 --batch --forward < "$patch" > "$out/apply-$number.log" 2>&1; then
		step "apply $number" FAIL "$name does not apply ($out/apply-$number.log)"
		exit 1
	fi
	step "apply $number" OK "$(sed -n 's/^Subject: \[PATCH[^]]*\] //p' "$patch" | head -n 1)"
	start=$(date +%s)
	log=$out/build-$number.log
	built=() failed=()
	if ! grep '^+++ b/' "$patch" | grep -qv -e '^+++ b/Documentation/' -e '^+++ b/MAINTAINERS$'
	then
		step "build $number" OK "nothing to build (Documentation, MAINTAINERS)"
		continue
	fi
	if grep -q '^+++ b/include/uapi/' "$patch"; then
		if test_headers "$patch" "$out/headers-$number.log"; then
			built+=("UAPI headers")
		else
			failed+=("UAPI headers ($out/headers-$number.log)")
		fi
	fi
	if [ -f drivers/media/virtio/Kconfig ]; then
		scripts/config --file .config --module VIRTIO_MEDIA
		if ! kmake olddefconfig > "$log" 2>&1 || ! grep -qx CONFIG_VIRTIO_MEDIA=m .config; then
			failed+=("CONFIG_VIRTIO_MEDIA=m does not survive olddefconfig")
		elif build_module "$log"; then
			built+=("$module")
		else
			failed+=("$module ($log)")
		fi
	fi
	took="$(($(date +%s) - start)) s"
	if [ "${#failed[@]}" -gt 0 ]; then
		step "build $number" FAIL "${failed[*]}, $took"
	elif [ "${#built[@]}" -gt 0 ]; then
		step "build $number" OK "${built[*]}, $took"
	else
		step "build $number" OK "nothing to build"
	fi
done

# The files the series adds, as the tree now has them.
added=$(sed -n 's|^+++ b/||p' "${patches[@]}" | sort -u)
rust_files=$(grep '\.rs$' <<< "$added")
c_files=$(grep -E '\.[ch]$' <<< "$added")

# The tree's rustfmt settings (.rustfmt.toml), as make rustfmtcheck uses
# them; generated files are not checked, as there.
# shellcheck disable=SC2086
if rustfmt --check --color never --config-path .rustfmt.toml $rust_files > "$out/rustfmt.log" 2>&1; then
	step rustfmt OK "$(wc -w <<< "$rust_files") files"
else
	step rustfmt FAIL "$(grep -c '^Diff in' "$out/rustfmt.log") hunks in $(grep '^Diff in' "$out/rustfmt.log" |
		sed 's/^Diff in \(.*\):[0-9]*:.*/\1/' | sort -u | wc -l) files ($out/rustfmt.log)"
fi

# shellcheck disable=SC2086
scripts/kernel-doc -none -Wall $c_files > "$out/kernel-doc.log" 2>&1
status=$?
if [ "$status" = 0 ] && ! [ -s "$out/kernel-doc.log" ]; then
	# Clean also when there is nothing to check: say how much there was.
	step kernel-doc OK "$(wc -w <<< "$c_files") files, $(cat $c_files | grep -c '^/\*\*') kernel-doc comments"
else
	step kernel-doc FAIL "$(sort -u "$out/kernel-doc.log" | wc -l) messages ($out/kernel-doc.log)"
fi

# rustdoc of the module with the flags it was compiled with (its .cmd file),
# every item documented (private ones too: the driver has few public items),
# warnings as errors.
[ -f "$module" ] && cp "$module" "$out/"
cmd=$(sed -n 's/^savedcmd_[^ ]*\.o := \(.*rustc .*\)$/\1/p' drivers/media/virtio/.*.o.cmd | head -n 1)
if ! [ -f "$module" ]; then
	step rustdoc FAIL "no module was built"
elif [ -z "$cmd" ]; then
	step rustdoc FAIL "no rustc command in drivers/media/virtio/.*.o.cmd"
else
	cmd=$(sed -E 's/ rustc / rustdoc /; s/ --emit=[^ ]+//g; s/ --out-dir [^ ]+//' <<< "$cmd")
	start=$(date +%s)
	# RUSTC_BOOTSTRAP: the kernel's Makefile exports it for its -Z flags.
	if RUSTC_BOOTSTRAP=1 sh -c "$cmd -Dwarnings --document-private-items --output $out/rustdoc" \
		> "$out/rustdoc.log" 2>&1; then
		step rustdoc OK "$(find "$out/rustdoc" -name '*.html' | wc -l) pages, $(($(date +%s) - start)) s"
		# Only the verdict matters here, and the pages are large (the
		# kernel crate's bindings, re-exported by the driver's ffi module).
		rm -rf "$out/rustdoc"
	else
		step rustdoc FAIL "$(grep -E '^(error|warning)' "$out/rustdoc.log" |
			grep -vc 'aborting due to') messages ($out/rustdoc.log)"
	fi
fi
