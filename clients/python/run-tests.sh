#!/usr/bin/env bash
# Runs the Python test kit's own tests and its examples against a Switchboard binary, twice: once
# with the pytest plugin starting the server itself, once under `switchboard exec`. Checks the
# kit's types with mypy --strict first.
#
# The binary is $SWITCHBOARD_BIN, else target/release/switchboard of the repository (build it
# first: cargo build --release). The virtualenv is ${XDG_CACHE_HOME:-$HOME/.cache}/
# switchboard-pykit-venv with the pinned requirements-test.txt, made again only when they or the
# Python version change (as scripts/venv-run does); the kit is installed into it afresh each run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
REQS="$HERE/requirements-test.txt"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-pykit-venv"
STAMP="$VENV/.requirements.sha256"

SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$REPO/target/release/switchboard}"
if [ ! -x "$SWITCHBOARD_BIN" ]; then
    echo "pykit: no switchboard binary at $SWITCHBOARD_BIN: run cargo build --release, or set SWITCHBOARD_BIN" >&2
    exit 1
fi
SWITCHBOARD_BIN="$(cd "$(dirname "$SWITCHBOARD_BIN")" && pwd)/$(basename "$SWITCHBOARD_BIN")"

PY="$(command -v python3.11 || command -v python3)"
version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
want="$(sha256sum < "$REQS" | cut -d' ' -f1) $(version "$PY")"

if [ ! -x "$VENV/bin/python" ] || [ "$(version "$VENV/bin/python" 2>/dev/null)" != "$(version "$PY")" ]; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    echo "pykit: installing $(grep -c '==' "$REQS") pinned packages into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet -r "$REQS"
    echo "$want" > "$STAMP"
fi

# The kit as a user installs it (its dependencies are among the pinned ones). A stale build/
# folder would carry removed files into the wheel.
rm -rf "$HERE/build"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --no-build-isolation "$HERE"
rm -rf "$HERE/build" "$HERE"/src/*.egg-info

# Nothing from the caller's environment may point the tests at another server or setup.
for name in $(compgen -e | grep '^SWITCHBOARD_' || true); do
    [ "$name" = SWITCHBOARD_BIN ] || unset "$name"
done
export SWITCHBOARD_BIN PYTHONDONTWRITEBYTECODE=1

cd "$HERE"
echo "pykit: mypy --strict"
"$VENV/bin/python" -m mypy --strict --cache-dir "$VENV/mypy-cache" src
echo "pykit: tests and examples, the plugin starting the server"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider
echo "pykit: tests and examples under switchboard exec"
"$SWITCHBOARD_BIN" exec -- "$VENV/bin/python" -m pytest -q -p no:cacheprovider
