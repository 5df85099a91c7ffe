#!/usr/bin/env bash
# mecplane-script: upgrade
# Upgrades MicroK8s on this node to MK8S_CHANNEL (one minor up; the node was drained first), keeps
# automatic refreshes held, and on a control plane waits until MicroK8s is ready again. Safe to run
# twice: a node already on the channel is not refreshed again.
# Environment: MK8S_CHANNEL (e.g. 1.33/stable), ROLE (control-plane or worker), WAIT_TIMEOUT (seconds).
set -euo pipefail

fail() { echo "upgrade: $*" >&2; exit 1; }
for var in MK8S_CHANNEL ROLE WAIT_TIMEOUT; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
[[ $MK8S_CHANNEL =~ ^[0-9]+\.[0-9]+/(stable|candidate|beta|edge)$ ]] || fail "MK8S_CHANNEL '$MK8S_CHANNEL' is not <major>.<minor>/<risk>"
[[ $ROLE == control-plane || $ROLE == worker ]] || fail "ROLE '$ROLE' is not control-plane or worker"
[[ $WAIT_TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "WAIT_TIMEOUT '$WAIT_TIMEOUT' is not a positive number of seconds"

current=$({ snap list microk8s 2>/dev/null || true; } | awk 'NR == 2 { print $4 }')
[[ -n $current ]] || fail "microk8s is not installed on this node"
if [[ $current == "$MK8S_CHANNEL" ]]; then
  echo "microk8s is already on $MK8S_CHANNEL"
else
  # An explicit refresh goes through the hold; snapd reverts a refresh whose hooks fail.
  snap refresh microk8s --channel="$MK8S_CHANNEL" || fail "snap refresh microk8s --channel=$MK8S_CHANNEL failed on $current (snapd keeps the node on it)"
fi
snap refresh --hold microk8s >/dev/null
if [[ $ROLE == control-plane ]]; then
  microk8s status --wait-ready --timeout "$WAIT_TIMEOUT" >/dev/null || fail "microk8s was not ready within ${WAIT_TIMEOUT}s after the refresh to $MK8S_CHANNEL"
fi
echo "MECPLANE_RESULT upgrade=ok channel=$MK8S_CHANNEL from=$current"
