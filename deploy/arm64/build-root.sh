#!/usr/bin/env bash
# Build (once) a Debian bookworm arm64 root file system, what Raspberry Pi OS bookworm is built on,
# and print the folder it is unpacked in.  mmdebstrap writes a tarball, cached by the hash of the
# package list and mirrors; the unpacked folder is what every check run copies.
#
#   deploy/arm64/build-root.sh          # prints e.g. ~/.cache/edgead-arm64/bookworm-arm64-d9cf40300acb
#   deploy/arm64/build-root.sh --print-path   # only the folder's name (built or not)
#
# Needs root, Debian's mmdebstrap and qemu-user-static, Linux >= 6.7 (userns.sh), Debian's archive.
# EDGEAD_ARM64_CACHE: the cache folder (default ${XDG_CACHE_HOME:-~/.cache}/edgead-arm64);
# EDGEAD_ARM64_MIRROR / EDGEAD_ARM64_SECURITY: other Debian mirrors.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGEAD_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgead-arm64}"
# minbase plus what install-pi.sh asks apt for from Debian (its apt step then checks them and
# still runs) and systemd (install-pi.sh enables the unit); the Pi-only packages are stubbed later
PACKAGES="python3,python3-venv,python3-pip,python3-dev,python3-numpy,g++,python3-gpiozero,curl,ca-certificates,systemd"
MIRROR="${EDGEAD_ARM64_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${EDGEAD_ARM64_SECURITY:-http://deb.debian.org/debian-security}"
BASE="$CACHE/bookworm-arm64-$(printf '%s %s %s' "$PACKAGES" "$MIRROR" "$SECURITY" | sha256sum | cut -c1-12)"
TAR="$BASE.tar"

[ "${1:-}" = --print-path ] && { echo "$BASE"; exit 0; }  # where it is (or would be), nothing built
[ -f "$BASE/.complete" ] && { echo "$BASE"; exit 0; }
command -v mmdebstrap >/dev/null || { echo "build-root: mmdebstrap missing (apt-get install mmdebstrap)" >&2; exit 1; }
mkdir -p "$CACHE"
if [ ! -f "$TAR" ]; then
    echo "build-root: mmdebstrap bookworm arm64 -> $TAR" >&2
    rm -f "$TAR.partial"
    # root mode inside userns.sh's namespace (ids mapped to themselves: owners as on a Pi); arm64
    # maintainer scripts run through the namespace's qemu registration.  sysfs cannot be mounted
    # from a user namespace that shares the host's network namespace, and no package needs it.
    nice -n 10 "$HERE/userns.sh" mmdebstrap --quiet --mode=root --variant=minbase --architectures=arm64 \
        --format=tar --skip=chroot/mount/sys --include="$PACKAGES" --aptopt='APT::Sandbox::User "root"' bookworm "$TAR.partial" \
        "deb $MIRROR bookworm main" "deb $SECURITY bookworm-security main" >&2
    mv "$TAR.partial" "$TAR"
fi
echo "build-root: unpacking $TAR" >&2
rm -rf "$BASE.partial" && mkdir -p "$BASE.partial"
tar --numeric-owner -xpf "$TAR" -C "$BASE.partial"
touch "$BASE.partial/.complete"
rm -rf "$BASE" && mv "$BASE.partial" "$BASE"
echo "$BASE"
