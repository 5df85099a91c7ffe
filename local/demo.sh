#!/usr/bin/env bash
# make demo: start the local stack, then drive it with mecctl as a user would — create a
# 1 control plane + 2 worker cluster and follow it to ACTIVE, show it, write its kubeconfig,
# delete it and follow that to DELETED — then check that nothing of it is left (local/demo.py)
# and stop the stack, also on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NAME="${MECPLANE_DEMO_NAME:-demo-edge}"
MECCTL="${MECPLANE_MECCTL:-target/debug/mecctl}"
# mecctl reads the local stack's env file only when told to (as `mecctl --local` does).
export MECCTL_ENV_FILE="$ROOT/.mecplane/local.env"
export MECPLANE_AGENT_DELAY_MS="${MECPLANE_AGENT_DELAY_MS:-3000}"
trap 'local/down.sh' EXIT
local/up.sh

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
started=$SECONDS
step mecctl create --name "$NAME" --control-planes 1 --workers 2 --addon dns --addon hostpath-storage --allow-cidr 203.0.113.0/24 --wait
"$MECCTL" create --name "$NAME" --control-planes 1 --workers 2 --addon dns --addon hostpath-storage \
    --allow-cidr 203.0.113.0/24 --wait --timeout 10m
echo "(created in $((SECONDS - started)) s)"

step mecctl list
"$MECCTL" list

step mecctl kubeconfig "$NAME" --kubeconfig .mecplane/kubeconfig
"$MECCTL" kubeconfig "$NAME" --kubeconfig .mecplane/kubeconfig
id="$("$MECCTL" get "$NAME" -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')"

started=$SECONDS
step mecctl delete "$NAME" --wait
"$MECCTL" delete "$NAME" --wait --timeout 5m
echo "(deleted in $((SECONDS - started)) s)"

step "check that nothing of $id is left"
.venv/bin/python local/demo.py --leftovers "$id"
