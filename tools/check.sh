#!/usr/bin/env bash
# make check [T=PATTERN]: builds and runs the project's tests, or only those
# whose ID matches PATTERN (an extended regular expression; a pattern that
# matches none lists the IDs). Each test's log is under build/results/;
# the last line is "N passed, N failed".
#
# The tests are registered, in the order they run, by the files below (see
# tools/check/lib.sh for check_test, record, need and guest).
set -uo pipefail
. "$(dirname "$0")/vm/lib.sh"
cd "$REPO_DIR"
. tools/check/lib.sh

. tools/check/host.sh       # the test device's unit tests, builds
. tools/check/kunit.sh      # the module's KUnit suites (a case of driver.sh's batches)
. tools/check/driver.sh     # the driver with the test device
. tools/check/hardening.sh  # misbehaving programs and devices
. tools/check/lifecycle.sh  # modules, devices and the system coming and going
. tools/check/fuzz.sh       # the fuzzers: a hostile device, hostile programs
. tools/check/codec.sh      # FFmpeg and GStreamer with the codec devices
. tools/check/vivid.sh      # the guest user space against vivid (likewise)
. tools/check/upstream.sh   # the upstream series, in-tree build, modinfo
. tools/check/codec-device.sh # the codec backends on every memory type

check_main
