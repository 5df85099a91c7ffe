#!/usr/bin/env bash
# make bench: release-build the one function binary (`bootstrap`: every handler) and the reference
# Rust function (functions/examples/reference.rs) with the workspace's Lambda profile, set up the
# Python peer's venv (.venv-bench: boto3 + awslambdaric, pinned in local/requirements-bench.txt),
# run the reconcile's fleet-scale example (mecplane/examples/reconcile_scale.rs, release, fakes),
# build the debug workspace the local stack runs, start the stack, run local/bench.py (figures in
# its docstring), stop the stack on exit.
# Environment: MECPLANE_BENCH_COLD_RUNS (default 10), MECPLANE_BENCH_CLUSTERS (default 3),
# MECPLANE_BENCH_PIPELINE=0 (skip the create/delete part), MECPLANE_BENCH_PYTHON (default
# python3.11, else python3), CARGO, and what local/up.sh reads.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"

# The Python peer: a venv of its own, rebuilt when its requirements change (wheels only).
VENV_BENCH=.venv-bench
STAMP=.mecplane/stamps/venv-bench
REQS=local/requirements-bench.txt
if [[ ! -x "$VENV_BENCH/bin/python" || ! -f "$STAMP" || "$REQS" -nt "$STAMP" ]]; then
  python="${MECPLANE_BENCH_PYTHON:-}"
  if [[ -z "$python" ]]; then
    python=python3.11
    command -v "$python" >/dev/null || python=python3
  fi
  echo "==> Python venv $VENV_BENCH ($("$python" --version 2>&1), boto3 + awslambdaric, pinned)"
  rm -rf "$VENV_BENCH"
  "$python" -m venv "$VENV_BENCH"
  "$VENV_BENCH/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$REQS"
  mkdir -p "$(dirname "$STAMP")"
  touch "$STAMP"
fi

echo "==> cargo build --release -p mecplane-functions --bin bootstrap --example reference (cold: ~8 min on 2 cores)"
start=$(date +%s)
"$CARGO" build --release -p mecplane-functions --bin bootstrap --example reference
MECPLANE_BENCH_BUILD_SECONDS=$(( $(date +%s) - start ))
export MECPLANE_BENCH_BUILD_SECONDS
echo "    release build took ${MECPLANE_BENCH_BUILD_SECONDS}s"
echo "==> reconcile at fleet scale: 100 / 1,000 / 10,000 clusters of 3 nodes on the in-memory fakes (release)"
mkdir -p .mecplane
"$CARGO" run --release -q -p mecplane --no-default-features --features testing --example reconcile_scale \
  | tee .mecplane/bench-reconcile.jsonl
"$CARGO" build --workspace --bins
export MECPLANE_AGENT_DELAY_MS="${MECPLANE_AGENT_DELAY_MS:-0}"
trap 'local/down.sh' EXIT
local/up.sh
.venv/bin/python local/bench.py
