#!/usr/bin/env bash
# Runs the Node test kit's own tests and its examples against a Switchboard binary: once with a
# server per test file (Switchboard.start), once under `switchboard exec`.
# The binary: SWITCHBOARD_BIN, or else the repository's target/release/switchboard.
set -euo pipefail

kit="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$kit/../.." && pwd)"
SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$repo/target/release/switchboard}"
if [[ ! -x "$SWITCHBOARD_BIN" ]]; then
  echo "run-tests.sh: no Switchboard binary at $SWITCHBOARD_BIN; run \`cargo build --release\` or set SWITCHBOARD_BIN." >&2
  exit 1
fi
SWITCHBOARD_BIN="$(cd "$(dirname "$SWITCHBOARD_BIN")" && pwd)/$(basename "$SWITCHBOARD_BIN")"
export SWITCHBOARD_BIN
# The first runs start their own servers: nothing may point them at another one.
unset SWITCHBOARD_URL SWITCHBOARD_HTTPS_URL SWITCHBOARD_CA_FILE SWITCHBOARD_ADMIN_TOKEN SWITCHBOARD_TOKEN

cd "$kit"
npm ci --no-audit --no-fund --prefer-offline --ignore-scripts
bin=node_modules/.bin

step() { printf '\n== %s\n' "$*"; }

step "types (tsc)"
"$bin/tsc" -p .

step "node --test, a server per test file"
node --test --test-reporter=spec test/ examples/

step "node --test under switchboard exec"
"$SWITCHBOARD_BIN" exec -- node --test --test-concurrency=1 --test-reporter=spec test/ examples/

step "vitest, then under switchboard exec"
"$bin/vitest" run examples/vitest.spec.js
"$SWITCHBOARD_BIN" exec -- "$bin/vitest" run --no-file-parallelism examples/vitest.spec.js

step "jest, then under switchboard exec"
NODE_OPTIONS=--experimental-vm-modules "$bin/jest"
NODE_OPTIONS=--experimental-vm-modules "$SWITCHBOARD_BIN" exec -- "$bin/jest" --runInBand
