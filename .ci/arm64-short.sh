#!/usr/bin/env bash
# CI's short arm64 check (deploy/arm64/check.sh --short): install on an emulated Debian bookworm
# arm64 root with install-pi.sh, no torch, demo score, x86/arm64 parity of one exported model.
# Skips, saying why, where the machine cannot emulate arm64 without privileges it lacks;
# it runs only with EDGEAD_CI_ARM64=1 (about 50 minutes emulated on a 2-core machine).  The root and pip's wheels are cached between runs
# (EDGEAD_ARM64_CACHE, default ~/.cache/edgead-arm64).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "ci: arm64 check skipped: $*"; exit 0; }
[ "${EDGEAD_CI_ARM64:-0}" = 1 ] || skip "off by default (about 50 min emulated on 2 cores); EDGEAD_CI_ARM64=1 runs it"
[ "$(id -u)" -eq 0 ] || skip "not root (the user namespace's id map is written from outside)"
IFS=. read -r kmaj kmin _ <<<"$(uname -r)"
{ [ "$kmaj" -gt 6 ] || { [ "$kmaj" -eq 6 ] && [ "$kmin" -ge 7 ]; }; } \
    || skip "Linux $(uname -r): binfmt_misc per user namespace needs 6.7 or later"
if ! command -v mmdebstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ]; then
    command -v apt-get >/dev/null || skip "no apt-get to install mmdebstrap and qemu-user-static"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap qemu-user-static >/dev/null) \
        || skip "could not install mmdebstrap and qemu-user-static"
fi
# the whole mechanism in one probe: a user namespace, its own binfmt_misc, qemu registered there
probe="$(deploy/arm64/userns.sh sh -c 'cat /proc/sys/fs/binfmt_misc/qemu-aarch64' 2>&1)" \
    || skip "no user namespace with its own binfmt_misc here: ${probe//$'\n'/ }"
grep -q '^enabled' <<<"$probe" || skip "qemu-aarch64 did not register in the namespace's binfmt_misc"

t0=$(date +%s)
deploy/arm64/check.sh --short
echo "ci: arm64 short check took $(( $(date +%s) - t0 )) s"
