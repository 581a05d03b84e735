# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of the virtio-media driver, and the project's commands.
# The kernel's build reads ./Kbuild; this file is for people:
#
#   make             build drivers/media/virtio/virtio_media.ko
#   make CLIPPY=1    the same, through clippy
#   make KDIR=DIR    against another Rust-enabled kernel build tree
#   make kernel      build (once) the cached guest kernels (test and benchmark)
#   make run         boot a guest with the device and use the driver
#   make check       run every test; ends with "N passed, N failed"
#   make check T=RE  only the tests whose ID matches the regular expression RE
#   make bench       benchmark in a guest on the non-debug kernel:
#                    build/results/bench.{json,png,txt}
#   make bench-c     our driver against the C driver (chromeos/virtio-media)
#                    in one guest: build/results/bench-c.txt
#   make patches     the driver as a patch series against Linux 7.3:
#                    build/patches/*.patch (split: tools/patches/series)
#   make fuzz        the fuzzers for longer (DEVICE_SEEDS=N, IOCTL_SECONDS=S,
#                    see Documentation/fuzzing.rst): build/results/fuzz-summary.txt

LLVM ?= -19
export LLVM
# rustc, cargo and bindgen live in ~/.cargo/bin (rustup).
export PATH := $(HOME)/.cargo/bin:$(PATH)

# The cached guest kernel, unless KDIR names another tree.
kdir = $(if $(KDIR),$(KDIR),$$(tools/vm/kernel.sh))

.PHONY: all modules kernel clean check run device bench bench-c patches fuzz
all: modules

modules:
	@tools/vm/deps.sh
	$(MAKE) -C "$(kdir)" M=$(CURDIR) CONFIG_VIRTIO_MEDIA=m modules

kernel:
	@tools/vm/kernel.sh debug
	@tools/vm/kernel.sh bench

device:
	V4L2R_VIDEODEV2_H_PATH=$$(tools/vm/kernel.sh headers) tools/virtio-media-vfu/build.sh

# Only the driver's directory: Kbuild's clean deletes object files under M
# recursively, which would include the test device's cargo target/.
clean:
	$(MAKE) -C "$(kdir)" M=$(CURDIR)/drivers/media/virtio CONFIG_VIRTIO_MEDIA=m clean

check:
	@T='$(T)' tools/check.sh

run:
	@tools/run.sh

bench:
	@tools/bench.sh

bench-c:
	@BENCH_C=1 tools/bench.sh

patches:
	@tools/patches.py --ksrc "$$(tools/vm/kernel.sh source)"

# Command-line variables (DEVICE_SEEDS=N ...) reach tools/fuzz.sh through
# the environment.
fuzz:
	@tools/fuzz.sh
