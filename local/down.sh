#!/usr/bin/env bash
# Stop the local stack started by local/up.sh: the gateway first (SIGTERM: it kills its function
# processes and the simulator's commands), then moto; SIGKILL after a grace period. Safe to run
# when nothing is up. Leaves no process and no listening port behind.
# Environment: MECPLANE_STATE_DIR (default .mecplane), MECPLANE_GATEWAY_PORT, MECPLANE_MOTO_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STATE_DIR="${MECPLANE_STATE_DIR:-.mecplane}"
GATEWAY_PORT="${MECPLANE_GATEWAY_PORT:-47500}"
MOTO_PORT_LOCAL="${MECPLANE_MOTO_PORT:-47501}"

stop() { # stop <pidfile> <pattern> <label>
  local pidfile="$1" pattern="$2" label="$3" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do # 10 s
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "down.sh: $label ($pid) ignored SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      # Its process group (setsid in up.sh) takes any straggler with it.
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    echo "stopped $label ($pid)"
  fi
  rm -f "$pidfile"
}

stop "$STATE_DIR/gateway.pid" mecplane-local gateway
stop "$STATE_DIR/moto.pid" moto_catalogue moto
rm -f "$STATE_DIR/local.env"

for port in "$GATEWAY_PORT" "$MOTO_PORT_LOCAL"; do
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || continue 2
    sleep 0.1
  done
  echo "down.sh: something still listens on 127.0.0.1:$port (not started by up.sh?)" >&2
done
