#!/usr/bin/env bash
# edgead on 64-bit ARM, without a Pi: a Debian bookworm arm64 root (what Raspberry Pi OS bookworm
# is built on) run under qemu-user, edgead installed there by deploy/install-pi.sh, then scored
# against this machine's scores.  Guide: docs/howto/check-on-arm64.md.
#
#   sudo deploy/arm64/check.sh [--short] [--cpus "cortex-a76 cortex-a72"] [--work DIR]
#
# --short   what CI runs: install, no torch, info + score of the demo model, parity of one
#           exported PatchCore model (INT8 and FP32), the int8 tests, on a Pi 5's CPU
# --cpus    emulated CPUs for the parity scores and the int8 bound tests (full check; default the
#           two Pi CPUs): a Pi 5 is a cortex-a76 (int8 dot product), a Pi 4 a cortex-a72 (plain
#           NEON); each runs other onnxruntime kernels.  "max" adds every extension qemu knows
#           (int8 matrix multiply too): no Pi has it, and it emulates several times slower
# --work    where the models, the copy of the emulated root and the results go (default: a new
#           folder under the cache; kept, its path is printed)
#
# Needs root, Linux >= 6.7 (binfmt_misc per user namespace: nothing is registered on the host),
# Debian's mmdebstrap and qemu-user-static (installed here when missing), network access to
# Debian's archive and PyPI.  The bookworm root is built once and cached in
# ${EDGEAD_ARM64_CACHE:-${XDG_CACHE_HOME:-~/.cache}/edgead-arm64}; each run installs edgead into a
# fresh copy of it, so every run is a first install.  The workstation side uses .venv
# (made with the export extra when missing).  Exit 0 only when every step and the parity passed;
# exit 3 when the check could not be prepared (host tools, the root, pip's files: Debian's archive
# or PyPI out of reach), before anything ran on arm64.
# EDGEAD_ARM64_TESTS: the test files the full check runs on arm64 (default: tests, all of them).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
MODE=full
CPUS="cortex-a76 cortex-a72"
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short; shift ;;
        --cpus) CPUS="${2:?--cpus needs a list}"; shift 2 ;;
        --work) WORK="${2:?--work needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$MODE" = short ] && CPUS=cortex-a76

die() { echo "arm64 check: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and maps the ids of a user namespace)"
kernel="$(uname -r)"
IFS=. read -r kmaj kmin _ <<<"$kernel"
[ "$kmaj" -gt 6 ] || { [ "$kmaj" -eq 6 ] && [ "$kmin" -ge 7 ]; } \
    || die "Linux $kernel: binfmt_misc per user namespace needs 6.7 or later"

CACHE="${EDGEAD_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgead-arm64}"
export EDGEAD_ARM64_CACHE="$CACHE"
mkdir -p "$CACHE"
WORK="${WORK:-$(mktemp -d "$CACHE/run.XXXXXX")}"
mkdir -p "$WORK/out"
TIMINGS="$WORK/out/timings.tsv"
: > "$TIMINGS"
: > "$WORK/out/timings-arm64.tsv"
cpu() { awk '{ printf "%.1f", ($14 + $15 + $16 + $17) / 100 }' "/proc/$$/stat"; }  # this shell + waited children
secs() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
step() {  # step NAME COMMAND...: run it on this machine, log its time
    local name="$1" t0 c0 rc=0
    shift
    echo "==> [host] $name"
    t0=$(date +%s%N) c0=$(cpu)
    "$@" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$(secs "$t0")" "$(echo "$(cpu) $c0" | awk '{ printf "%.1f", $1 - $2 }')" "$rc" >> "$TIMINGS"
    [ "$rc" -eq 0 ] && return 0
    case "$name" in
        host-tools|arm64-root|wheelhouse)
            echo "arm64 check: NOT RUN: $name failed (exit $rc) before anything ran on arm64; logs in $WORK" >&2
            exit 3 ;;
    esac
    die "$name failed (exit $rc); logs in $WORK"
}
T_START=$(date +%s%N)

host_tools() {
    command -v mmdebstrap >/dev/null && [ -x /usr/bin/qemu-aarch64-static ] && return 0
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap qemu-user-static >/dev/null
}

PY="${EDGEAD_X86_PYTHON:-$REPO/.venv/bin/python}"
workstation_venv() {
    if [ -x "$PY" ] && "$PY" -c "import edgead, edgead_export, torch" 2>/dev/null; then return 0; fi
    [ "$PY" = "$REPO/.venv/bin/python" ] || die "$PY cannot import edgead with the export extra"
    python3 -m venv "$REPO/.venv"
    "$REPO/.venv/bin/pip" install -q -e "$REPO[export]"
}

# The root: Debian bookworm arm64, built once and cached (build-root.sh).
BASE=""
base_root() {
    BASE="$("$HERE/build-root.sh" --print-path)"
    [ -f "$BASE/.complete" ] || echo "root: not cached; building it once (mmdebstrap with arm64 package scripts" \
        "under qemu: about 10 minutes on a quiet 2-core machine, far longer on a busy one; docs/benchmarks.md), later runs reuse it"
    BASE="$("$HERE/build-root.sh")"
    echo "root: $BASE"
}

# pip's files for arm64, fetched here from PyPI (aarch64 wheels, hnswlib's sdist, the build and
# test tools): pip inside the emulated root then installs with --no-index from this folder.  TLS
# from the emulated root is slow enough that connections get reset on a busy machine (seen here);
# the files and the versions pip picks are PyPI's either way.  EDGEAD_ARM64_PIP=online lets pip
# in the root go to PyPI itself instead.  Cached, keyed by pyproject.toml.
WHEELS="$CACHE/wheelhouse-$(sha256sum "$REPO/pyproject.toml" | cut -c1-12)"
wheelhouse() {
    [ "${EDGEAD_ARM64_PIP:-}" = online ] && { echo "pip in the root uses PyPI directly"; return 0; }
    [ -f "$WHEELS/.complete" ] && { echo "cached: $WHEELS"; return 0; }
    mkdir -p "$WHEELS"
    local numpy arm=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3
        --abi none --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64
        --platform manylinux_2_28_aarch64 --platform linux_aarch64)
    # bookworm's numpy, which install-pi.sh keeps (its constraint), decides the other versions
    numpy="$(cd "$BASE/usr/lib/python3/dist-packages" && ls -d numpy-*.*-info | sed -n 's/^numpy-\(.*\)\.\(egg\|dist\)-info$/\1/p')"
    [ -n "$numpy" ] || die "no Debian numpy in $BASE"
    echo "numpy==$numpy" > "$WHEELS/constraints.txt"
    "$PY" - "$REPO/pyproject.toml" > "$WHEELS/requirements.txt" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.startswith("hnswlib")))  # sdist only: fetched below
print("pytest\nhttpx\nscipy")  # the runtime tests' tools
PY
    "$PY" -m pip download -q -d "$WHEELS" "${arm[@]}" -c "$WHEELS/constraints.txt" -r "$WHEELS/requirements.txt"
    # build tools: pip's own upgrade, edgead's and hnswlib's build isolation (numpy unconstrained)
    "$PY" -m pip download -q -d "$WHEELS" "${arm[@]}" pip setuptools wheel pybind11 numpy
    local url
    url="$("$PY" -c 'import json, sys, urllib.request
d = json.load(urllib.request.urlopen("https://pypi.org/pypi/hnswlib/json"))
print([u["url"] for u in d["urls"] if u["packagetype"] == "sdist"][0])')"
    (cd "$WHEELS" && curl -fsSO "$url")
    touch "$WHEELS/.complete"
    ls "$WHEELS" | wc -l | xargs echo "wheelhouse files:"
}

# The models and frames, exported and scored here: what a workstation hands to a Pi.
PARITY="$WORK/parity"
stage_models() {
    # a rerun in the same --work folder scores the same models again
    [ -f "$PARITY/.$MODE-complete" ] && { echo "models of an earlier run: $PARITY"; return 0; }
    rm -rf "$PARITY" && mkdir -p "$PARITY/models" "$PARITY/images"
    "$PY" - "$PARITY" <<'PY'
import shutil, sys
from pathlib import Path
from edgead.synthetic import write_dataset
root = Path(sys.argv[1])
data = write_dataset(root / "washer", n_train=30, n_test_good=8, n_test_bad=8, size=128, seed=0)
for img in sorted((data / "test").glob("*/*.png")):
    shutil.copy(img, root / "images" / f"{img.parent.name}-{img.name}")
# two camera-sized frames (1280 x 960, with sensor noise): the resize reduces them by whole blocks
# first (edgead.preprocess), which the 128 px parts never need
import cv2, numpy as np
rng = np.random.default_rng(0)
for name in ("good-000.png", "scratch-000.png"):
    part = cv2.imread(str(root / "images" / name))
    big = cv2.resize(part, (1280, 960), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    big = np.clip(big + rng.normal(0, 3, big.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(root / "images" / f"large-{name}"), big)
PY
    cp -r "$REPO/edgead/demo_model" "$PARITY/models/demo"
    local common=(--data "$PARITY/washer" --size 128 --coreset 0.1 --keep-fp32 --threads 2 --seed 0)
    nice -n 5 "$PY" -m edgead.cli export "${common[@]}" --out "$PARITY/models/patchcore" --method patchcore
    if [ "$MODE" = short ]; then touch "$PARITY/.short-complete"; return 0; fi
    nice -n 5 "$PY" -m edgead.cli export "${common[@]}" --out "$PARITY/models/padim" --method padim --padim-dim 64
    nice -n 5 "$PY" -m edgead.cli export "${common[@]}" --out "$PARITY/models/tiled" --method patchcore \
        --tiles 2x2 --tile-overlap 0.25
    real_model
    touch "$PARITY/.full-complete"
}

# A model fitted on real parts when the project's data is here: 60 magnetic_tile goods at the
# default 224 px (a 10 % coreset: a bank large enough for the pruned int8 search), scored on 10
# test goods and 10 defects.
SHARED="${EDGEAD_SHARED_DATA:-$REPO/../shared/data}"
real_model() {
    local cat="$SHARED/magnetic_tile"
    [ -d "$cat/train/good" ] || { echo "no $cat: real-data model left out"; return 0; }
    mkdir -p "$PARITY/real-train"
    find "$cat/train/good" -type f | sort | head -60 | xargs -I{} cp {} "$PARITY/real-train/"
    find "$cat/test/good" -type f | sort | head -10 | while read -r f; do cp "$f" "$PARITY/images/real-good-$(basename "$f")"; done
    find "$cat/test" -mindepth 2 -type f ! -path "*/good/*" | sort | awk 'NR % 7 == 0' | head -10 \
        | while read -r f; do cp "$f" "$PARITY/images/real-$(basename "$(dirname "$f")")-$(basename "$f")"; done
    nice -n 5 "$PY" -m edgead.cli export --data "$PARITY/real-train" --out "$PARITY/models/real" --method patchcore \
        --coreset 0.1 --keep-fp32 --threads 2 --seed 0
}

x86_scores() {
    "$PY" "$HERE/parity.py" score --images "$PARITY/images" --out "$WORK/out/x86_64.json" "$PARITY"/models/*
}

# On arm64: a fresh copy of the cached root, the source tree and the models copied in, then
# on-arm.sh inside (chroot) with the host's network and DNS.  A copy, not an overlay on the root:
# dpkg renames directories it unpacks, which overlayfs mounted in a user namespace refuses
# (EXDEV, "Invalid cross-device link": install-pi.sh's python3-hnswlib failed to install); the
# copy takes seconds and is removed when the run ends.
arm_steps() {
    local i rc=0
    rm -rf "$WORK/root" && cp -a "$BASE" "$WORK/root"
    for i in $(seq 0 $(($(nproc) - 1))); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\n' \
            "$i" "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
        printf 'CPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
    done > "$WORK/cpuinfo"
    "$HERE/userns.sh" bash -euo pipefail -c '
        base="$1" work="$2" repo="$3" mode="$4" cpus="$5" cache="$6" tests="$7" wheels="$8" pipenv="$9"
        root="$work/root"
        mount --bind "$root" "$root"
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --rbind /sys "$root/sys"
        mount -t tmpfs tmpfs "$root/tmp"
        mount -t tmpfs tmpfs "$root/run"
        # qemu-user (Debian 12'"'"'s 7.2) passes the host'"'"'s x86 /proc/cpuinfo through, on which
        # onnxruntime'"'"'s CPU detection (pytorch cpuinfo) crashes: a Pi 5'"'"'s instead (Cortex-A76
        # cores); the int8 kernels are chosen by the emulated CPU'"'"'s HWCAP (QEMU_CPU), not by this
        mount --bind "$work/cpuinfo" "$root/proc/cpuinfo"
        mkdir -p "$root/root/edgead-src" "$root/root/parity" "$root/root/out"
        cp -L /etc/resolv.conf "$root/etc/resolv.conf"
        # this machine'"'"'s trust store too: a proxy between here and PyPI may sign with its own CA
        cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
        # the source tree as git sees it (tracked and new files, nothing ignored: no .venv)
        git -C "$repo" ls-files -z --cached --others --exclude-standard \
            | (cd "$repo" && tar --null -T - -cf - 2>/dev/null) | tar -C "$root/root/edgead-src" -xf -
        cp -r "$work/parity/models" "$work/parity/images" "$root/root/parity/"
        mount --bind "$work/out" "$root/root/out"
        # pip'"'"'s cache (downloads, and the wheels it builds, e.g. hnswlib) outlives the copy
        mkdir -p "$cache/pip" "$root/root/.cache/pip"
        mount --bind "$cache/pip" "$root/root/.cache/pip"
        mkdir -p "$root/root/wheelhouse"
        [ -d "$wheels" ] && mount --bind -o ro "$wheels" "$root/root/wheelhouse"
        chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 \
            PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
            QEMU_CPU=cortex-a76 CPUS="$cpus" TESTS="$tests" $pipenv nice -n 10 bash /root/edgead-src/deploy/arm64/on-arm.sh "$mode"
    ' sh "$BASE" "$WORK" "$REPO" "$MODE" "$CPUS" "$CACHE" "${EDGEAD_ARM64_TESTS:-tests}" "$WHEELS" \
        "$([ "${EDGEAD_ARM64_PIP:-}" = online ] || echo "PIP_NO_INDEX=1 PIP_FIND_LINKS=/root/wheelhouse")" || rc=$?
    rm -rf "$WORK/root"
    return "$rc"
}

parity_table() {
    local others=()
    for cpu in $CPUS; do others+=("$WORK/out/arm64-$cpu.json"); done
    "$PY" "$HERE/parity.py" compare "$WORK/out/x86_64.json" "${others[@]}" --markdown "$WORK/out/parity.md"
}

step host-tools host_tools
step workstation-venv workstation_venv
step arm64-root base_root
step wheelhouse wheelhouse
step export-models stage_models
step x86-scores x86_scores
step arm64 arm_steps
step parity parity_table

printf 'total\t%s\t%s\t0\n' "$(secs "$T_START")" "$(cpu)" >> "$TIMINGS"
echo
echo "arm64 check ($MODE) passed; step times (wall s, CPU s, exit; arm64 steps inside 'arm64'):"
cat "$TIMINGS" "$WORK/out/timings-arm64.tsv" | column -t -s $'\t' 
[ -f "$WORK/out/hnswlib.txt" ] && cat "$WORK/out/hnswlib.txt"
echo "results: $WORK/out"
