#!/usr/bin/env bash
# mecplane-script: remove-node
# Removes one node from the cluster, from the first control-plane node: finds the Kubernetes node
# whose InternalIP is NODE_IP, drains it (bounded by DRAIN_TIMEOUT; on timeout it drains again with
# --force and says so), then runs microk8s remove-node. Safe to run twice: a node that is no longer
# in the cluster reports remove=already-gone.
# Environment: NODE_IP (the departing node's private IP), DRAIN_TIMEOUT (seconds).
set -euo pipefail

fail() { echo "remove-node: $*" >&2; exit 1; }
for var in NODE_IP DRAIN_TIMEOUT; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
[[ $NODE_IP =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || fail "NODE_IP '$NODE_IP' is not an IPv4 address"
[[ $DRAIN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "DRAIN_TIMEOUT '$DRAIN_TIMEOUT' is not a positive number of seconds"

# The name of the node whose InternalIP is NODE_IP, or nothing.
node_name() {
  local nodes_json
  nodes_json=$(microk8s kubectl get nodes -o json) || fail "microk8s kubectl get nodes failed"
  # python3 ships with Ubuntu cloud images; jq does not.
  python3 -c '
import json, sys
ip = sys.argv[1]
for n in json.load(sys.stdin).get("items", []):
    addrs = n.get("status", {}).get("addresses", [])
    if any(a.get("type") == "InternalIP" and a.get("address") == ip for a in addrs):
        print(n.get("metadata", {}).get("name", ""))
        break
' "$NODE_IP" <<<"$nodes_json"
}

name=$(node_name)
if [[ -z $name ]]; then
  echo "MECPLANE_RESULT remove=already-gone ip=$NODE_IP"
  exit 0
fi

drain=drained
drain_args=("$name" --ignore-daemonsets --delete-emptydir-data "--timeout=${DRAIN_TIMEOUT}s")
if ! microk8s kubectl drain "${drain_args[@]}"; then
  echo "note: draining $name did not finish within ${DRAIN_TIMEOUT}s; draining again with --force"
  drain=forced
  if ! microk8s kubectl drain "${drain_args[@]}" --force; then
    echo "note: the forced drain of $name did not finish either; removing it with its pods"
    drain=incomplete
  fi
fi

if ! microk8s remove-node "$name"; then
  # Removed meanwhile (a retried command): what was asked is done.
  left=$(node_name)
  [[ -z $left ]] || fail "microk8s remove-node $name failed"
fi
echo "MECPLANE_RESULT remove=removed node=$name drain=$drain"
