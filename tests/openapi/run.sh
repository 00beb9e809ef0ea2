#!/usr/bin/env bash
# The control API's OpenAPI document, validated and fuzzed with schemathesis (check.py), in its
# own virtualenv (see scripts/venv-run). If SWITCHBOARD_BIN is set, the cargo build is skipped.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/../../scripts/venv-run" openapi "$HERE/requirements.txt" "$HERE/check.py"
