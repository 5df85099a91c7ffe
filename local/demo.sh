#!/usr/bin/env bash
# make demo: start the local stack, run the demo (local/demo.py), stop the stack — also on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MECPLANE_AGENT_DELAY_MS="${MECPLANE_AGENT_DELAY_MS:-3000}"
trap 'local/down.sh' EXIT
local/up.sh
.venv/bin/python local/demo.py
