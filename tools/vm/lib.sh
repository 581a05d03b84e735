# Common settings for the VM rig scripts. Sourced, not run.
# Everything downloaded or built lives in the cache, outside the repo, so that
# a fresh clone (CI) reuses the kernel and QEMU built by an earlier run.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$VM_DIR/../.." && pwd)
CACHE_DIR=${VIRTIO_MEDIA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-media-rs}
BUILD_DIR=${BUILD_DIR:-$REPO_DIR/build}

KERNEL_VERSION=7.3
BINDGEN_VERSION=0.71.1
LLVM_VERSION=19

# rustup installs cargo, rustc and bindgen here; a non-login shell (CI) may
# not have it on PATH.
case ":$PATH:" in
*":$HOME/.cargo/bin:"*) ;;
*) [ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH ;;
esac
export PATH

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# cache_lock [NAME]: until the script exits, holds the cache's lock NAME
# ("fill" by default). Scripts that fill the cache take it before looking
# whether their part is there: two of them at once (the lanes of make
# check on a fresh machine, each booting its first guest) would remove and
# unpack the same directory under each other. The second waits, then finds
# the part filled. Scripts run under it see CACHE_LOCKED_NAME and do not
# wait for their parent. Kernel builds take their own NAME, so that a
# 20-minute build does not hold up the rest.
cache_lock() {
	local name=${1:-fill} var fd
	var=CACHE_LOCKED_${name//[^A-Za-z0-9]/_}
	[ -n "${!var:-}" ] && return 0
	mkdir -p "$CACHE_DIR/locks"
	exec {fd}> "$CACHE_DIR/locks/$name"
	flock "$fd"
	export "$var=1"
}

# A private apt configuration for one foreign Debian suite: packages are only
# downloaded and unpacked from it, never installed on the host, so the host's
# own apt state is untouched. Usage: foreign_apt_root [--arch ARCH] [--src]
# NAME SUITE... (prints the root; ARCH defaults to amd64, give each
# architecture its own NAME; --src also lists source packages, for apt-get
# source), then foreign_apt ROOT apt-get ARGS.
foreign_apt_root() {
	local arch=amd64 types=deb
	if [ "$1" = --arch ]; then arch=$2; shift 2; fi
	if [ "$1" = --src ]; then types="deb deb-src"; shift; fi
	local name=$1; shift
	local root=$CACHE_DIR/apt/$name
	# The first suite named is the default release: its versions win.
	mkdir -p "$root/lists/partial" "$root/archives/partial" "$root/etc/preferences.d" \
		"$root/etc/apt.conf.d" "$root/state"
	local suites="$*"
	# Roots made before the arch file existed are amd64.
	if [ ! -f "$root/sources.list" ] || [ "$(cat "$root/suites" 2>/dev/null)" != "$suites" ] ||
		[ "$(cat "$root/arch" 2>/dev/null || echo amd64)" != "$arch" ] ||
		[ "$(cat "$root/types" 2>/dev/null || echo deb)" != "$types" ]; then
		: > "$root/sources.list"
		local s t
		for s in $suites; do
			for t in $types; do
				echo "$t [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $s main" \
					>> "$root/sources.list"
			done
		done
		echo "$types" > "$root/types"
		echo "$suites" > "$root/suites"
		echo "$arch" > "$root/arch"
		echo "$1" > "$root/default-release"
		rm -f "$root/updated"
	fi
	: > "$root/state/status"
	echo "$root"
}

foreign_apt() {
	local root=$1; shift
	local tool=$1; shift
	"$tool" -q -o Dir::State="$root/state" -o Dir::State::Lists="$root/lists" \
		-o Dir::State::status="$root/state/status" \
		-o Dir::Cache="$root" -o Dir::Cache::archives="$root/archives" \
		-o Dir::Etc::SourceList="$root/sources.list" -o Dir::Etc::SourceParts=- \
		-o Dir::Etc::Preferences="$root/etc/preferences" \
		-o Dir::Etc::PreferencesParts="$root/etc/preferences.d" \
		-o APT::Default-Release="$(cat "$root/default-release")" \
		-o APT::Architecture="$(cat "$root/arch" 2>/dev/null || echo amd64)" -o Debug::NoLocking=1 -o APT::Sandbox::User=root "$@"
}

foreign_apt_update() {
	local root=$1
	if [ ! -f "$root/updated" ] || [ -n "$(find "$root/updated" -mmin +1440)" ]; then
		foreign_apt "$root" apt-get update >&2 || die "apt-get update for $(cat "$root/suites") failed"
		touch "$root/updated"
	fi
}

# Download PACKAGES and their whole Depends closure from the foreign suite,
# then unpack every .deb into DEST. Usage: foreign_unpack ROOT DEST PKG...
foreign_unpack() {
	local root=$1 dest=$2; shift 2
	local pkgs
	pkgs=$(foreign_apt "$root" apt-cache depends --recurse --no-recommends --no-suggests \
		--no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends "$@" |
		grep -v '^ ' | grep -v '^<' | sort -u) || die "dependency resolution failed for $*"
	local pre
	pre=$(foreign_apt "$root" apt-cache depends --recurse --no-recommends --no-suggests \
		--no-conflicts --no-breaks --no-replaces --no-enhances "$@" |
		grep -v '^ ' | grep -v '^<' | sort -u)
	pkgs=$(printf '%s\n%s\n' "$pkgs" "$pre" | sort -u)
	mkdir -p "$dest" "$root/debs"
	(cd "$root/debs" && foreign_apt "$root" apt-get download $pkgs >&2) ||
		die "download failed for $*"
	local p deb
	for p in $pkgs; do
		deb=$(ls "$root/debs/${p}_"*.deb 2>/dev/null | head -n 1)
		[ -n "$deb" ] || die "no .deb downloaded for $p"
		dpkg-deb -x "$deb" "$dest"
	done
}

# Installs the Debian packages named that are not installed yet.
apt_install_missing() {
	local missing="" p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
	done
	[ -n "$missing" ] || return 0
	log "installing:$missing"
	DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
	# Wait for the dpkg lock rather than fail when another apt-get runs
	# (several checkouts of the project may install at the same time).
	# shellcheck disable=SC2086 # a word list of packages
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
		install -y -q --no-install-recommends $missing >&2
}
