#!/usr/bin/env bash
# Crash-safety (SIGKILL) campaign: see docs/CRASH-SAFETY.md.
#   scripts/chaos/run.sh --kills 30        (all arguments go to kill_campaign.py; --help lists them)
# Needs the release builds (cargo build --release -p switchboard -p switchboard-bench); builds nothing itself.
# Makes a virtualenv under target/chaos-venv with requirements.txt on first use.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/chaos-venv"

# the default binaries, unless the arguments name others
need_server=1 need_bench=1
for arg in "$@"; do
    case "$arg" in
        --server-bin|--server-bin=*|--binary|--binary=*) need_server=0 ;;
        --bench-bin|--bench-bin=*|--config|--config=*) need_bench=0 ;;
        -h|--help) need_server=0 need_bench=0 ;;
    esac
done
missing=0
if [ "$need_server" = 1 ] && [ ! -x "$repo/target/release/switchboard" ]; then
    echo "run.sh: $repo/target/release/switchboard is missing; build it first: cargo build --release -p switchboard" >&2
    missing=1
fi
if [ "$need_bench" = 1 ] && [ ! -x "$repo/target/release/bench" ]; then
    echo "run.sh: $repo/target/release/bench is missing (it prints the server config); build it first: cargo build --release -p switchboard-bench" >&2
    missing=1
fi
[ "$missing" = 0 ] || exit 2

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

exec "$venv/bin/python" "$here/kill_campaign.py" "$@"
