#!/usr/bin/env bash
# Interop test with the official Python msgraph-sdk (msgraph_interop.py), in its own virtualenv
# (see scripts/venv-run). If SWITCHBOARD_BIN is set (a prebuilt binary), the cargo build is skipped.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/../../scripts/venv-run" interop "$HERE/requirements.txt" "$HERE/msgraph_interop.py"
