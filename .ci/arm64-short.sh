#!/usr/bin/env bash
# CI's short arm64 check (deploy/arm64/check.sh --short): install on an emulated Debian bookworm
# arm64 root with install-pi.sh, no torch, demo score, x86/arm64 parity of one exported model, and
# the int8 search's bound and the INT8 backbone's integers tested on the emulated Pi 5 CPU.
# The root and pip's files are cached between runs (EDGEAD_ARM64_CACHE, default
# ~/.cache/edgead-arm64); with a cold cache the root is built first (over an hour on 2 cores,
# said in the output). It never passes silently without running: where the machine cannot emulate
# arm64 (no root, Linux before 6.7, no user namespaces) or Debian/PyPI are out of reach, it prints
# "ARM64 CHECK NOT RUN" with the reason and exits 0; EDGEAD_CI_ARM64=0 turns it off the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "ci: ARM64 CHECK NOT RUN: $*"; exit 0; }
[ "${EDGEAD_CI_ARM64:-1}" = 0 ] && skip "EDGEAD_CI_ARM64=0"
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
rc=0
deploy/arm64/check.sh --short || rc=$?
echo "ci: arm64 short check took $(( $(date +%s) - t0 )) s (exit $rc)"
[ "$rc" -eq 3 ] && skip "it could not be prepared (see above: host tools, the arm64 root or pip's files)"
exit "$rc"
