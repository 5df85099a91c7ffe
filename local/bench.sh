#!/usr/bin/env bash
# make bench: release-build a few functions (the workspace's Lambda profile), build the debug
# workspace the local stack runs, start the stack, run local/bench.py, stop the stack on exit.
# MECPLANE_BENCH_FUNCTIONS picks the functions (default: api register launch-nodes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"
export MECPLANE_BENCH_FUNCTIONS="${MECPLANE_BENCH_FUNCTIONS:-api register launch-nodes}"
packages=()
for f in $MECPLANE_BENCH_FUNCTIONS; do packages+=(-p "$f"); done
echo "==> cargo build --release ${packages[*]} (LTO: minutes per function on 2 cores)"
start=$(date +%s)
"$CARGO" build --release "${packages[@]}"
echo "    release build took $(( $(date +%s) - start ))s"
"$CARGO" build --workspace --bins
export MECPLANE_AGENT_DELAY_MS="${MECPLANE_AGENT_DELAY_MS:-0}"
trap 'local/down.sh' EXIT
local/up.sh
.venv/bin/python local/bench.py
