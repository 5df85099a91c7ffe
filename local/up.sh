#!/usr/bin/env bash
# Start the local stack on 127.0.0.1: moto through local/moto_catalogue.py (its zone catalogue and
# carrier IPs; MECPLANE_MOTO_PORT, default 47501, started with
# MOTO_PORT=<gateway port> so its Step Functions interpreter invokes Lambdas through the gateway),
# then the gateway mecplane-local (MECPLANE_GATEWAY_PORT, default 47500). Waits until the gateway
# wrote .mecplane/local.env. Pidfiles and logs live in MECPLANE_STATE_DIR (default .mecplane).
# Does not build: run `cargo build` first (the gateway and the function binaries).
# Environment: MECPLANE_GATEWAY_PORT, MECPLANE_MOTO_PORT, MECPLANE_STATE_DIR,
# MECPLANE_FUNCTIONS_DIR (default target/debug), MECPLANE_GATEWAY_BIN (default
# <functions dir>/mecplane-local), MECPLANE_UP_TIMEOUT (seconds, default 60), plus every
# MECPLANE_* variable mecplane-local reads (see `mecplane-local --help`), among them
# MECPLANE_RECONCILE_INTERVAL_SECONDS: how often the gateway runs the reconcile function as the
# stack's schedule would (default: the template's ReconcileRateMinutes x 60; 0 = never). It also
# sends reconcile EC2's state-change event after each TerminateInstances/StopInstances it forwards;
# GET <gateway>/_local/reconciles lists those runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

GATEWAY_PORT="${MECPLANE_GATEWAY_PORT:-47500}"
MOTO_PORT_LOCAL="${MECPLANE_MOTO_PORT:-47501}"
STATE_DIR="${MECPLANE_STATE_DIR:-.mecplane}"
FUNCTIONS_DIR="${MECPLANE_FUNCTIONS_DIR:-target/debug}"
GATEWAY_BIN="${MECPLANE_GATEWAY_BIN:-$FUNCTIONS_DIR/mecplane-local}"
TIMEOUT="${MECPLANE_UP_TIMEOUT:-60}"
export MECPLANE_FUNCTION_ENV_FILE="${MECPLANE_FUNCTION_ENV_FILE:-$ROOT/local/functions.env}"
PYTHON="$ROOT/.venv/bin/python"
# moto with the local zone catalogue and carrier IPs (see its docstring); moto_server's arguments.
MOTO_LAUNCHER="$ROOT/local/moto_catalogue.py"

LOGS="$STATE_DIR/logs"
ENV_FILE="$STATE_DIR/local.env"
MOTO_PID="$STATE_DIR/moto.pid"
GATEWAY_PID="$STATE_DIR/gateway.pid"

die() { echo "up.sh: $*" >&2; exit 1; }

alive() { # alive <pidfile> <pattern>: the pidfile's process is running and its command matches
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

port_busy() { # port_busy <port>
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if alive "$MOTO_PID" moto_catalogue && alive "$GATEWAY_PID" mecplane-local && [[ -s "$ENV_FILE" ]]; then
  echo "local stack already up: $(grep '^AWS_ENDPOINT_URL=' "$ENV_FILE" | cut -d= -f2-) (env $ENV_FILE)"
  exit 0
fi
# Half up: start from a clean slate.
"$ROOT/local/down.sh" >/dev/null

[[ -x "$ROOT/.venv/bin/moto_server" ]] || die "the pinned moto is missing: create the venv (python3 -m venv .venv && .venv/bin/pip install -r local/requirements.txt)"
[[ -x "$GATEWAY_BIN" ]] || die "$GATEWAY_BIN missing: run cargo build first"
for port in "$GATEWAY_PORT" "$MOTO_PORT_LOCAL"; do
  ! port_busy "$port" || die "127.0.0.1:$port is already in use (set MECPLANE_GATEWAY_PORT / MECPLANE_MOTO_PORT)"
done

mkdir -p "$LOGS"
rm -f "$ENV_FILE"
start=$(date +%s.%N)

# moto_server defaults its own port to $MOTO_PORT, so pass -p explicitly.
MOTO_PORT="$GATEWAY_PORT" setsid "$PYTHON" "$MOTO_LAUNCHER" -H 127.0.0.1 -p "$MOTO_PORT_LOCAL" \
  </dev/null >>"$LOGS/moto.log" 2>&1 &
echo $! >"$MOTO_PID"

setsid "$GATEWAY_BIN" \
  --port "$GATEWAY_PORT" \
  --moto-port "$MOTO_PORT_LOCAL" \
  --state-dir "$STATE_DIR" \
  --repo-root "$ROOT" \
  --functions-dir "$FUNCTIONS_DIR" \
  </dev/null >>"$LOGS/gateway.log" 2>&1 &
echo $! >"$GATEWAY_PID"

deadline=$(( $(date +%s) + TIMEOUT ))
until [[ -s "$ENV_FILE" ]]; do
  # The process itself, not its command line: until setsid has exec'd the gateway, the child
  # started above still runs this script's command line.
  if ! kill -0 "$(cat "$GATEWAY_PID")" 2>/dev/null; then
    echo "up.sh: the gateway exited; last lines of $LOGS/gateway.log:" >&2
    tail -n 20 "$LOGS/gateway.log" >&2 || true
    "$ROOT/local/down.sh" >/dev/null
    exit 1
  fi
  if (( $(date +%s) >= deadline )); then
    echo "up.sh: not ready after ${TIMEOUT}s; see $LOGS/gateway.log and $LOGS/moto.log" >&2
    "$ROOT/local/down.sh" >/dev/null
    exit 1
  fi
  sleep 0.1
done

elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
echo "local stack up in ${elapsed}s: gateway http://127.0.0.1:$GATEWAY_PORT, moto http://127.0.0.1:$MOTO_PORT_LOCAL, env $ENV_FILE, logs $LOGS/"
case "${MECPLANE_RECONCILE_INTERVAL_SECONDS:-}" in
  "") every="as the template's ReconcileRateMinutes says" ;;
  0) every="never on a schedule (MECPLANE_RECONCILE_INTERVAL_SECONDS=0)" ;;
  *) every="every ${MECPLANE_RECONCILE_INTERVAL_SECONDS}s" ;;
esac
echo "reconcile runs $every and on EC2 state changes; see http://127.0.0.1:$GATEWAY_PORT/_local/reconciles"
