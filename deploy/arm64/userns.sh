#!/usr/bin/env bash
# Run a command in a user + mount + pid namespace of its own in which arm64 binaries run under
# qemu-user: binfmt_misc (Linux >= 6.7) gives the namespace its own registrations, so nothing is
# registered on the host.  Root's ids map to themselves, so files the command creates keep the
# owners they would have on a Pi (dpkg chowns to users like _apt, tty, shadow).
#
#   deploy/arm64/userns.sh COMMAND [ARGS...]
#
# Needs: root (to write the namespace's id map), qemu-user-static (Debian), Linux >= 6.7.
set -euo pipefail

QEMU="${EDGEAD_QEMU:-/usr/bin/qemu-aarch64-static}"
[ "$(id -u)" -eq 0 ] || { echo "userns: run as root (the id map of the namespace is written from outside)" >&2; exit 1; }
[ -x "$QEMU" ] || { echo "userns: $QEMU missing (apt-get install qemu-user-static)" >&2; exit 1; }

if [ "${_EDGEAD_USERNS_INNER:-}" = 1 ]; then
    # inside: a binfmt_misc instance of our own, then qemu for aarch64 ELF files.  F: the kernel
    # opens qemu now, so it runs in any chroot without a copy of it there.
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    echo ":qemu-aarch64:M::$magic:$mask:$QEMU:F" > /proc/sys/fs/binfmt_misc/register
    unset _EDGEAD_USERNS_INNER
    exec "$@"
fi

# The child waits until its id map is written (an exec before that would drop its capabilities),
# then runs this script again inside.
_EDGEAD_USERNS_INNER=1 unshare --user --mount --pid --fork --kill-child -- \
    sh -c 'while [ -z "$(cat /proc/self/uid_map)" ]; do sleep 0.05; done; exec "$@"' sh "$0" "$@" &
child=$!
me="$(readlink /proc/self/ns/user)"
for _ in $(seq 200); do
    [ "$(readlink "/proc/$child/ns/user" 2>/dev/null)" != "$me" ] && break
    sleep 0.05
done
echo "0 0 65536" > "/proc/$child/uid_map"
echo "0 0 65536" > "/proc/$child/gid_map"
wait "$child"
