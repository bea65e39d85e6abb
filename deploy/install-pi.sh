#!/usr/bin/env bash
# Install edgead as a systemd service on Raspberry Pi OS (Bookworm or later, 64-bit).
#
#   sudo deploy/install-pi.sh [--model DIR] [--from PIP_SPEC] [--admin USER] [--no-start]
#
# --model DIR     an exported artifact to install as the first model
# --from SPEC     what pip installs (default: the edgead source tree this script belongs to),
#                 e.g. "edgead==0.1.0" or a wheel file
# --admin USER    user allowed to push models and read the API token (default: $SUDO_USER)
# --no-start      install and enable, but do not start now
#
# Result: apt packages (picamera2, lgpio, gpiozero, hnswlib), a venv in /opt/edgead/venv that
# sees them (--system-site-packages), user `edgead` (groups video, gpio), /etc/edgead/{edgead.toml,token},
# /var/lib/edgead/{models,images,inspections.sqlite3}, and edgead.service enabled.
# Re-running upgrades the code and keeps config, token, models and the log.
# EDGEAD_INSTALL_ROOT=DIR puts every file under DIR instead of / (the tests run the script so,
# with the system commands replaced by recorders).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
ROOT="${EDGEAD_INSTALL_ROOT:-}"
PREFIX="$ROOT/opt/edgead"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/edgead"
STATE="$ROOT/var/lib/edgead"
MODEL=""
FROM="$REPO"
ADMIN="${SUDO_USER:-}"
START=1

die() { echo "install-pi: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="${2:?--model needs a directory}"; shift 2 ;;
        --from) FROM="${2:?--from needs a pip spec}"; shift 2 ;;
        --admin) ADMIN="${2:?--admin needs a user}"; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Raspberry Pi OS / Debian"
[ -z "$MODEL" ] || [ -f "$MODEL/manifest.json" ] || die "$MODEL: no manifest.json (not an edgead artifact)"
if ! grep -qi "raspberry pi" /proc/device-tree/model 2>/dev/null; then
    echo "install-pi: warning: this does not look like a Raspberry Pi; continuing" >&2
fi

say "apt packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Every runtime dependency has an aarch64 wheel on PyPI or comes from apt: no compiler needed.
apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip python3-numpy \
    python3-picamera2 python3-lgpio python3-gpiozero curl
# hnswlib searches only banks over 100k rows (an artifact with an hnsw*.bin index); PyPI has no
# aarch64 wheel of it (pip would compile it: g++ and python3-dev), Debian packages it. Without it
# every default model still installs and serves.
apt-get install -y -q --no-install-recommends python3-hnswlib \
    || echo "install-pi: warning: no python3-hnswlib package: models with an HNSW index (banks over 100k" \
            "rows) need it: apt install g++ python3-dev, then $VENV/bin/pip install 'edgead[hnsw]'" >&2

say "user edgead"
if ! id edgead >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin edgead
fi
for group in video gpio; do
    if getent group "$group" >/dev/null; then usermod -aG "$group" edgead; else
        echo "install-pi: warning: group $group missing (camera/GPIO access may fail)" >&2; fi
done
if [ -n "$ADMIN" ] && id "$ADMIN" >/dev/null 2>&1; then
    usermod -aG edgead "$ADMIN"   # push-model.sh: write models/, read the token (effective at next login)
fi

say "venv $VENV (with the system's picamera2/lgpio/numpy)"
install -d -m 0755 "$PREFIX"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
# keep apt's numpy: picamera2's compiled helpers are built against it
NUMPY="$(python3 -c 'import numpy; print(numpy.__version__)')"
CONSTRAINTS="$(mktemp)"; trap 'rm -f "$CONSTRAINTS"' EXIT
echo "numpy==$NUMPY" > "$CONSTRAINTS"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet --upgrade --constraint "$CONSTRAINTS" "$FROM"
"$VENV/bin/python" -c "import edgead, onnxruntime, cv2; print('edgead', edgead.__version__, '/ onnxruntime', onnxruntime.__version__)"

say "directories and config"
install -d -m 0755 -o root -g edgead "$ETC"
install -d -m 0750 -o edgead -g edgead "$STATE"
install -d -m 2775 -o edgead -g edgead "$STATE/models"   # setgid: pushed models stay group edgead
if [ ! -f "$ETC/edgead.toml" ]; then
    install -m 0640 -o root -g edgead "$HERE/edgead.toml" "$ETC/edgead.toml"
elif ! cmp -s "$HERE/edgead.toml" "$ETC/edgead.toml"; then
    install -m 0640 -o root -g edgead "$HERE/edgead.toml" "$ETC/edgead.toml.new"
    echo "    kept your $ETC/edgead.toml; the shipped example is $ETC/edgead.toml.new"
fi
if [ ! -s "$ETC/token" ]; then
    (umask 077; "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(24))" > "$ETC/token")
fi
chown root:edgead "$ETC/token"; chmod 0640 "$ETC/token"

if [ -n "$MODEL" ]; then
    VERSION="$(basename "$MODEL")-$(sha256sum "$MODEL/manifest.json" | cut -c1-12)"
    say "model $VERSION"
    rm -rf "$STATE/models/.incoming"
    cp -r "$MODEL" "$STATE/models/.incoming"
    rm -rf "${STATE:?}/models/$VERSION"
    mv "$STATE/models/.incoming" "$STATE/models/$VERSION"
    ln -sfn "$VERSION" "$STATE/models/current.tmp" && mv -T "$STATE/models/current.tmp" "$STATE/models/current"
    chown -R edgead:edgead "$STATE/models/$VERSION"
    chmod -R g+rwX "$STATE/models/$VERSION"   # push-model.sh (group edgead) may prune it later
    find "$STATE/models/$VERSION" -type d -exec chmod g+s {} +
fi

say "systemd unit"
install -m 0644 "$REPO/systemd/edgead.service" "$ROOT/etc/systemd/system/edgead.service"
systemctl daemon-reload
systemctl enable edgead.service >/dev/null

if [ -e "$STATE/models/current" ]; then
    say "checking config and model"
    runuser -u edgead -- "$VENV/bin/edgead" serve --config "$ETC/edgead.toml" --check
    if [ "$START" -eq 1 ]; then
        systemctl restart edgead.service
        systemctl --no-pager --lines=5 status edgead.service || true
    fi
else
    echo "    no model yet: push one with deploy/push-model.sh MODEL_DIR $(hostname) (the service starts on it)"
fi

PORT="$(sed -n 's/^port *= *\([0-9]*\).*/\1/p' "$ETC/edgead.toml" | head -1)"
cat <<MSG

edgead installed.
  config   $ETC/edgead.toml (edit, then: sudo systemctl restart edgead)
  token    $ETC/token (Authorization: Bearer ... for /score, reload and threshold)
  data     $STATE (inspections.sqlite3, images/, models/)
  logs     journalctl -u edgead -f
  try      curl -s http://127.0.0.1:${PORT:-8080}/health
MSG
