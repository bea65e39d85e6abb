#!/usr/bin/env bash
# Push an exported artifact to a Pi running edgead and switch the daemon to it.
#
#   deploy/push-model.sh [-p API_PORT] [-k KEEP] MODEL_DIR [user@]pi-host
#
# 1. copies MODEL_DIR to /var/lib/edgead/models/<name>-<manifest sha> (upload to a hidden
#    directory, then an atomic rename: the daemon never sees half a model);
# 2. asks the running daemon to load it: POST /model/reload {"path": ...} with the bearer token
#    from /etc/edgead/token. A bad artifact is refused with 422 and the old model keeps serving;
# 3. only then points models/current at it (atomic symlink swap), so a restart keeps it;
# 4. keeps the KEEP most recent versions (default 3) and deletes older ones.
# If the daemon is not running, the artifact is checked with `edgead serve --check` and the
# service is (re)started with sudo.
#
# Needs ssh access as a user in group `edgead` (install-pi.sh --admin USER) and rsync or scp.
# Non-standard installs: EDGEAD_REMOTE_MODELS, EDGEAD_REMOTE_TOKEN, EDGEAD_REMOTE_BIN, EDGEAD_REMOTE_CONFIG.
set -euo pipefail

PORT=8080
KEEP=3
MODELS="${EDGEAD_REMOTE_MODELS:-/var/lib/edgead/models}"
TOKEN_FILE="${EDGEAD_REMOTE_TOKEN:-/etc/edgead/token}"
EDGEAD="${EDGEAD_REMOTE_BIN:-/opt/edgead/venv/bin/edgead}"
CONFIG="${EDGEAD_REMOTE_CONFIG:-/etc/edgead/edgead.toml}"

die() { echo "push-model: $*" >&2; exit 1; }

while getopts "p:k:h" opt; do
    case "$opt" in
        p) PORT="$OPTARG" ;;
        k) KEEP="$OPTARG" ;;
        h) sed -n '2,16p' "$0"; exit 0 ;;
        *) die "usage: $0 [-p API_PORT] [-k KEEP] MODEL_DIR [user@]pi-host" ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || die "usage: $0 [-p API_PORT] [-k KEEP] MODEL_DIR [user@]pi-host"
MODEL="${1%/}"
HOST="$2"
[ -f "$MODEL/manifest.json" ] || die "$MODEL: no manifest.json (not an edgead artifact)"
[[ "$KEEP" =~ ^[1-9][0-9]*$ ]] || die "-k KEEP must be a positive integer"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "-p API_PORT must be a number"

VERSION="$(basename "$MODEL")-$(sha256sum "$MODEL/manifest.json" | cut -c1-12)"
[[ "$VERSION" =~ ^[A-Za-z0-9._-]+$ ]] || die "artifact directory name must be [A-Za-z0-9._-]: $VERSION"
INCOMING="$MODELS/.incoming-$VERSION"
TARGET="$MODELS/$VERSION"

echo "==> uploading $MODEL to $HOST:$TARGET"
ssh "$HOST" "rm -rf '$INCOMING' && mkdir -p '$INCOMING'"
if command -v rsync >/dev/null && ssh "$HOST" command -v rsync >/dev/null; then
    rsync -a --chmod=Dg+rwxs,Fg+r "$MODEL/" "$HOST:$INCOMING/"
else
    scp -q -r "$MODEL/." "$HOST:$INCOMING/"
fi
ssh "$HOST" "chmod -R g+rX '$INCOMING' && rm -rf '$TARGET' && mv '$INCOMING' '$TARGET'"

echo "==> switching the daemon to $VERSION"
# runs on the Pi: the API listens on loopback by default
ssh "$HOST" bash -s -- "$PORT" "$TARGET" "$MODELS" "$VERSION" "$KEEP" "$EDGEAD" "$TOKEN_FILE" "$CONFIG" <<'REMOTE'
set -euo pipefail
PORT="$1"; TARGET="$2"; MODELS="$3"; VERSION="$4"; KEEP="$5"; EDGEAD="$6"; TOKEN_FILE="$7"; CONFIG="$8"
API="http://127.0.0.1:$PORT"
flip() { ln -sfn "$VERSION" "$MODELS/current.tmp" && mv -T "$MODELS/current.tmp" "$MODELS/current"; }

if curl -fsS -o /dev/null "$API/health/live" 2>/dev/null; then
    TOKEN="$(cat "$TOKEN_FILE" 2>/dev/null || true)"
    AUTH=()
    [ -n "$TOKEN" ] && AUTH=(-H "Authorization: Bearer $TOKEN")
    BODY="$(mktemp)"; trap 'rm -f "$BODY"' EXIT
    CODE="$(curl -sS -o "$BODY" -w '%{http_code}' -X POST "${AUTH[@]}" -H 'Content-Type: application/json' \
        --data "{\"path\": \"$TARGET\"}" "$API/model/reload")"
    if [ "$CODE" != "200" ]; then
        echo "push-model: reload refused (HTTP $CODE): $(cat "$BODY")" >&2
        echo "push-model: the previous model keeps serving; $TARGET left for inspection" >&2
        exit 1
    fi
    flip
    echo "reloaded: $(cat "$BODY")" | cut -c1-400
else
    echo "daemon not answering on $API: checking the artifact and (re)starting the service"
    "$EDGEAD" serve --config "$CONFIG" --model "$TARGET" --check
    flip
    sudo systemctl restart edgead.service
fi

# keep the newest $KEEP versions (never the current one)
CURRENT="$(readlink "$MODELS/current")"
ls -1dt "$MODELS"/*/ 2>/dev/null | sed 's:/$::' | while read -r dir; do
    name="$(basename "$dir")"
    [ "$name" = "current" ] && continue
    echo "$name"
done | tail -n +"$((KEEP + 1))" | while read -r old; do
    [ "$old" = "$CURRENT" ] || rm -rf "${MODELS:?}/$old" || echo "push-model: warning: cannot remove $old" >&2
done
echo "current -> $CURRENT"
REMOTE
