#!/usr/bin/env bash
# make fuzz: the fuzzers of make check (tools/check/fuzz.sh), run longer.
#
#   make fuzz [DEVICE_SEEDS=N] [FIRST_SEED=S] [ROUND_SECONDS=S] [ROUNDS_PER_BOOT=N]
#             [IOCTL_SECONDS=S] [IOCTL_RUNS=N] [IOCTL_SEED=S] [IOCTL_FAULTS=P] [T=RE]
#
# Defaults: 60 device seeds from 1000 in rounds of 30 s (20 rounds a boot),
# and one hour of the ioctl fuzzer (seed 1000). The result lines also go to
# build/results/fuzz-summary.txt, the guest runs to build/results/NAME/.
# Each line names the seeds that failed; Documentation/fuzzing.rst says how
# to run one again.
set -uo pipefail
. "$(dirname "$0")/vm/lib.sh"
cd "$REPO_DIR"
export DEVICE_SEEDS=${DEVICE_SEEDS:-60} FIRST_SEED=${FIRST_SEED:-1000}
export ROUND_SECONDS=${ROUND_SECONDS:-30} ROUNDS_PER_BOOT=${ROUNDS_PER_BOOT:-20}
export IOCTL_SECONDS=${IOCTL_SECONDS:-3600} IOCTL_RUNS=${IOCTL_RUNS:-1} IOCTL_SEED=${IOCTL_SEED:-1000}
# With a time limit the call count is only a ceiling.
export IOCTL_CALLS=${IOCTL_CALLS:-$([ "$IOCTL_SECONDS" -gt 0 ] && echo 1000000000 || echo 5000)}
. tools/check/lib.sh
# The guest runs' folders stay in build/results/ (where the runner writes
# them and make check looks for kernel reports); the summary is our own.
summary=$results/fuzz-summary.txt
. tools/check/fuzz.sh
echo "make fuzz: $DEVICE_SEEDS device seeds from $FIRST_SEED (rounds of $ROUND_SECONDS s);" \
	"$IOCTL_RUNS ioctl run(s) from seed $IOCTL_SEED, ${IOCTL_SECONDS} s each"
T=${T:-^fuzz-} check_main
