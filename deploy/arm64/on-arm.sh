#!/usr/bin/env bash
# The steps that run on arm64, inside the Debian bookworm root that deploy/arm64/check.sh builds
# (or on a real Pi as root, with the same layout).  Every step is timed into $OUT/timings-arm64.tsv.
#
#   on-arm.sh short|full
#
# Layout: $SRC the edgead source tree, $PARITY/models/* artifacts exported on the workstation,
# $PARITY/images the frames to score, $OUT results.  CPUS: the emulated CPUs the parity scoring
# runs on (qemu's QEMU_CPU; each picks different int8 kernels in onnxruntime).
set -euo pipefail

MODE="${1:?short|full}"
SRC="${SRC:-/root/edgead-src}"
PARITY="${PARITY:-/root/parity}"
OUT="${OUT:-/root/out}"
CPUS="${CPUS:-cortex-a76}"
TESTS="${TESTS:-tests}"
VENV=/opt/edgead/venv
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

mkdir -p "$OUT"
fail() { echo "on-arm: FAIL: $*" >&2; exit 1; }
cpu() { awk '{ printf "%.1f", ($14 + $15 + $16 + $17) / 100 }' "/proc/$$/stat"; }  # this shell + waited children
secs() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
step() {  # step NAME COMMAND...: run it, log its time (seconds)
    local name="$1" t0 c0 rc=0
    shift
    echo "==> [arm64] $name"
    t0=$(date +%s%N) c0=$(cpu)
    "$@" || rc=$?
    printf '  arm64 %s\t%s\t%s\t%s\n' "$name" "$(secs "$t0")" "$(echo "$(cpu) $c0" | awk '{ printf "%.1f", $1 - $2 }')" "$rc" \
        >> "$OUT/timings-arm64.tsv"
    [ "$rc" -eq 0 ] || fail "$name (exit $rc)"
}

models() { for m in "$@"; do [ -d "$PARITY/models/$m" ] && echo "$PARITY/models/$m"; done; }

on_cpu() {  # on_cpu CPU COMMAND...: run COMMAND on that emulated CPU, with a /proc/cpuinfo that is its own
    # (onnxruntime picks its int8 kernels from /proc/cpuinfo: a Pi 5's on a Cortex-A72 gives SIGILL),
    # in a mount namespace of its own, so that CPUs can run side by side
    local cpu="$1"
    shift
    QEMU_CPU="$cpu" python3 "$SRC/deploy/arm64/cpuinfo.py" "$cpu" --cores "$(nproc)" > "/tmp/cpuinfo-$cpu"
    QEMU_CPU="$cpu" unshare --mount --propagation private \
        sh -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "/tmp/cpuinfo-$cpu" "$@"
}

# Raspberry Pi OS's own archive (picamera2, lgpio) is not reachable from Debian: empty packages of
# those names stand in, so install-pi.sh's apt line runs unchanged.  Nothing here uses them (the
# frames come from a folder, GPIO is not driven); the check says so in its output.
PI_ONLY="python3-picamera2 python3-lgpio"
stub_pi_packages() {
    local pkg dir
    for pkg in $PI_ONLY; do
        dpkg-query -W "$pkg" >/dev/null 2>&1 && continue
        dir="$(mktemp -d)"
        mkdir -p "$dir/DEBIAN"
        printf 'Package: %s\nVersion: 0~stub\nArchitecture: all\nMaintainer: edgead arm64 check <root@localhost>\nDescription: empty stand-in for the Raspberry Pi OS package (emulated check)\n' \
            "$pkg" > "$dir/DEBIAN/control"
        dpkg-deb --build "$dir" "/tmp/$pkg.deb" >/dev/null
        dpkg -i "/tmp/$pkg.deb" >/dev/null
        rm -rf "$dir"
        echo "STUB: $pkg is in Raspberry Pi OS's archive only: an empty package stands in (what it drives is untested)"
    done
}

install_edgead() {
    stub_pi_packages
    # the Pi's install itself: apt, user, venv, pip install of the source tree, config, token,
    # model, unit (enabled; systemctl does not start units in a chroot), serve --check as edgead
    bash "$SRC/deploy/install-pi.sh" --from "$SRC" --model "$PARITY/models/demo" --no-start
    local ver
    # install-pi.sh only warns without python3-hnswlib (a Pi serves default models without it);
    # here its apt step must have worked as on a Pi
    ver="$("$VENV/bin/python" -c 'import hnswlib, importlib.metadata as m; print(m.version("hnswlib"))')" \
        || fail "hnswlib does not import in the Pi's venv (install-pi.sh's python3-hnswlib)"
    echo "hnswlib in the Pi's venv: $ver (Debian's python3-hnswlib)"
}

no_torch() {
    "$VENV/bin/python" - <<'PY'
import importlib.util
import sys

assert importlib.util.find_spec("torch") is None, "torch is installed on the Pi side"
import edgead.cli, edgead.model, edgead.service.app, edgead.scorer.search.int8  # noqa: E401,F401  what the Pi runs

assert "torch" not in sys.modules, "importing the runtime imported torch"
assert importlib.util.find_spec("edgead_export") is not None  # shipped, but only reachable with [export]
print("torch: not installed; the runtime imports without it")
PY
    if "$VENV/bin/pip" show torch >/dev/null 2>&1; then fail "pip lists torch"; fi
    local msg
    msg="$("$VENV/bin/edgead" export --data "$PARITY/images" --out /tmp/x 2>&1)" && fail "export ran without torch"
    grep -q "edgead\[export\]" <<<"$msg" || fail "export without torch: unexpected message: $msg"
    echo "edgead export without torch: $msg"
}

info_and_score() {  # the installed model, then every exported one
    "$VENV/bin/edgead" info /var/lib/edgead/models/current
    local m images
    # the CLI on every fourth frame (the parity step scores all of them, on every CPU)
    images="$(find "$PARITY/images" -type f | sort | awk 'NR % 4 == 1')"
    for m in $(models "$@"); do
        "$VENV/bin/edgead" info --json "$m" > "$OUT/info-$(basename "$m").json"
        # shellcheck disable=SC2086  # one path a line, no spaces
        "$VENV/bin/edgead" score --model "$m" $images > "$OUT/score-$(basename "$m").jsonl"
        echo "$(basename "$m"): $(grep -c '"decision"' "$OUT/score-$(basename "$m").jsonl") images scored"
        ! grep -q '"error"' "$OUT/score-$(basename "$m").jsonl" || fail "edgead score reported an error for $m"
    done
}

parity_scores() {  # models...: the parity file per emulated CPU, the CPUs side by side
    local cpu pids=() rc=0
    for cpu in $CPUS; do
        on_cpu "$cpu" "$VENV/bin/python" "$SRC/deploy/arm64/parity.py" score --images "$PARITY/images" \
            --out "$OUT/arm64-$cpu.json" $(models "$@") > "$OUT/parity-$cpu.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
    grep -h "^parity" "$OUT"/parity-*.log
    [ "$rc" -eq 0 ] || { tail -n 20 "$OUT"/parity-*.log; return "$rc"; }
}

serve_and_curl() {
    local port pid body code
    port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$VENV/bin/edgead" serve --model "$PARITY/models/patchcore" --source "folder:$PARITY/images" \
        --port "$port" --data-dir /tmp/edgead-serve > "$OUT/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "$OUT/serve.log"; fail "edgead serve exited"; }
        sleep 0.5
    done
    body="$(curl -sf "http://127.0.0.1:$port/score")" || { kill "$pid"; fail "GET /score"; }
    echo "GET /score -> $body"
    grep -q '"decision"' <<<"$body" || { kill "$pid"; fail "GET /score: no decision"; }
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary 'not an image' \
        -H 'Content-Type: image/png' "http://127.0.0.1:$port/score")"
    [ "$code" = 400 ] || { kill "$pid"; fail "POST garbage /score: HTTP $code, expected 400"; }
    echo "POST of a non-image -> HTTP $code"
    kill -TERM "$pid"
    wait "$pid" || true
}

hnswlib_options() {
    # what a Pi gets for hnswlib: the sdist built by pip (what install-pi.sh does), or Debian's
    # package; each timed, each checked by building, saving and querying an index
    local t0 ver
    python3 -m venv /tmp/hnsw-build
    t0=$(date +%s%N)
    /tmp/hnsw-build/bin/pip install -q --no-cache-dir hnswlib
    echo "hnswlib: pip install from PyPI (no aarch64 wheel: builds the sdist): $(secs "$t0") s" | tee -a "$OUT/hnswlib.txt"
    t0=$(date +%s%N)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-hnswlib >/dev/null
    ver="$(dpkg-query -W -f '${Version}' python3-hnswlib)"
    echo "hnswlib: apt-get install python3-hnswlib ($ver): $(secs "$t0") s" | tee -a "$OUT/hnswlib.txt"
    for py in "$VENV/bin/python" /tmp/hnsw-build/bin/python /usr/bin/python3; do
        "$py" - <<'PY' | tee -a "$OUT/hnswlib.txt"
import sys, tempfile, numpy as np, hnswlib
rng = np.random.default_rng(0)
data = rng.standard_normal((2000, 32)).astype(np.float32)
index = hnswlib.Index(space="l2", dim=32)
index.init_index(max_elements=2000, ef_construction=64, M=16)
index.add_items(data)
with tempfile.NamedTemporaryFile(suffix=".bin") as f:
    index.save_index(f.name)
    again = hnswlib.Index(space="l2", dim=32)
    again.load_index(f.name)
labels, _ = again.knn_query(data[:100], k=1)
print(f"hnswlib {getattr(hnswlib, '__version__', '?')} under {sys.executable}: recall@1 on the bank itself {np.mean(labels[:, 0] == np.arange(100)):.2f}")
PY
    done
}

int8_bound() {  # the int8 GEMM's error bound and the INT8 backbone's integers, on every emulated CPU
    local cpu
    # these tests need pytest only: the short form does not fetch the other test tools
    if [ "$MODE" = short ]; then "$VENV/bin/pip" install -q pytest; else test_tools; fi
    cd "$SRC"
    for cpu in $CPUS; do
        echo "QEMU_CPU=$cpu"
        on_cpu "$cpu" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_int8_gemm_bound.py \
            tests/test_int8_search.py tests/test_int8_portable.py
    done
}

test_tools() {  # pytest and the test clients, into the installed venv (after the no-torch step)
    # Debian's numpy stays (as install-pi.sh keeps it): scipy in a version built for it
    "$VENV/bin/pip" install -q pytest httpx scipy "numpy==$(python3 -c 'import numpy; print(numpy.__version__)')"
}

runtime_tests() {
    # the suite's runtime part; tests that export (torch) skip
    cd "$SRC"
    # shellcheck disable=SC2086  # TESTS: test files or folders, split on spaces
    EDGEAD_SHARED_DATA=/nonexistent "$VENV/bin/python" -m pytest -q -p no:cacheprovider -o addopts="-ra" ${TESTS:-tests} \
        2>&1 | tee "$OUT/pytest.txt" | tail -25
    return "${PIPESTATUS[0]}"
}

cd /
echo "arm64: $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME"), python $(python3 -V | cut -d' ' -f2), QEMU_CPU=${QEMU_CPU:-max}"
step install install_edgead
step no-torch no_torch
if [ "$MODE" = short ]; then
    step info-score info_and_score demo patchcore
    step parity parity_scores demo patchcore
    step int8-bound int8_bound
    exit 0
fi
step info-score info_and_score demo patchcore padim tiled real
step parity parity_scores demo patchcore padim tiled real
step serve serve_and_curl
step int8-bound int8_bound
step hnswlib hnswlib_options
step runtime-tests runtime_tests
