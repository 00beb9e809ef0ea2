#!/usr/bin/env bash
# Interop test with the official Python msgraph-sdk.
# Creates (once) a virtualenv under ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-interop-venv with
# requirements.txt, builds the release binary, and runs msgraph_interop.py against it.
# If SWITCHBOARD_BIN is already set (a prebuilt binary), the cargo build is skipped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
REQS="$HERE/requirements.txt"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-interop-venv"
STAMP="$VENV/.requirements.sha256"

PY="$(command -v python3.11 || command -v python3)"
want="$(cat "$REQS" | sha256sum | cut -d' ' -f1) $("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    echo "interop: installing $(grep -c '==' "$REQS") pinned packages into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet -r "$REQS"
    echo "$want" > "$STAMP"
fi

if [ -z "${SWITCHBOARD_BIN:-}" ]; then
    (cd "$REPO" && cargo build --release)
    TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$TARGET" in /*) ;; *) TARGET="$REPO/$TARGET" ;; esac
    SWITCHBOARD_BIN="$TARGET/release/switchboard"
fi
export SWITCHBOARD_BIN

exec "$VENV/bin/python" "$HERE/msgraph_interop.py"
