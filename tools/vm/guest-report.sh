#!/usr/bin/env bash
# guest-report.sh DIR: the kernel reports of one guest run, from the kernel
# log /init exported (DIR/kernel.log) or, when the guest died before, from
# its serial console (DIR/console.log). Prints one line per report ("what:
# first line (file)") and exits 1 when there is any, 0 when there is none.
#
# A report is what the test kernel's checkers print: BUG (KASAN, KFENCE,
# sleeping in atomic context, bad page state, ...), WARNING (lockdep,
# debugobjects, refcount, WARN_ON), UBSAN, Oops and panics, Rust panics,
# hung tasks, RCU stalls, leaks kmemleak found after the run, and a module
# /init could not unload.
set -uo pipefail
dir=${1:?usage: guest-report.sh DIR}

log=$dir/kernel.log
[ -s "$log" ] || log=$dir/console.log
[ -s "$log" ] || { echo "no kernel log: neither $dir/kernel.log nor $dir/console.log"; exit 1; }

# name|extended regex, matched against each line of the log.
patterns=(
	'KASAN|BUG: KASAN:'
	'KFENCE|BUG: KFENCE:'
	'UBSAN|UBSAN:'
	'lockdep|possible circular locking|possible recursive locking|inconsistent lock state|lock held when returning|suspicious RCU usage'
	'debugobjects|ODEBUG:'
	'list corruption|list_(add|del) corruption'
	'hung task|INFO: task .* blocked for more than'
	'RCU stall|rcu: INFO:|detected stall'
	'Rust panic|panicked at'
	'Oops|Oops:|general protection fault|Kernel panic'
	'BUG|BUG:|kernel BUG at'
	'WARNING|WARNING:'
	'kmemleak|vm-init: kmemleak: [1-9][0-9]* new suspected memory leak'
	'module unload|vm-init: module .* did not unload'
)

# Each line counts once, for the first pattern it matches (a KASAN report
# is not also a BUG).
found=0
if printf '%s\n' "${patterns[@]}" | awk -v file="$log" '
	BEGIN { FS = "|" }
	NR == FNR { name[NR] = $1; sub(/^[^|]*\|/, ""); regex[NR] = $0; n = NR; next }
	{
		for (i = 1; i <= n; i++) {
			if ($0 ~ regex[i]) {
				line = $0; sub(/^\[ *[0-9.]*\] /, "", line)
				if (!(i in first)) first[i] = line
				count[i]++
				break
			}
		}
	}
	END {
		for (i = 1; i <= n; i++)
			if (i in first) { printf "%s: %s (%d lines like it, %s)\n", name[i], first[i], count[i], file; hit = 1 }
		exit !hit
	}' - "$log"; then
	found=1
fi
if [ -s "$dir/kmemleak.log" ]; then
	first=$(grep -m 1 -A 12 '^unreferenced object' "$dir/kmemleak.log" | grep -m 1 -E '^ +\[<[0-9a-f]+>\] [a-z_]' | grep -vE 'kmem_cache|__kmalloc|kmalloc|krealloc' || true)
	echo "kmemleak: $(grep -c '^unreferenced object' "$dir/kmemleak.log") objects (${first:-see the backtraces}) ($dir/kmemleak.log)"
	found=1
fi
exit $found
