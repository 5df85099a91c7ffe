#!/usr/bin/env bash
# mecplane-script: manage-node
# Acts on one node of the cluster from a control-plane node. Safe to run twice.
#   ACTION=remove    drain the node whose InternalIP is NODE_IP (bounded by DRAIN_TIMEOUT; on timeout
#                    it drains again with --force and says so; a node not Ready is not drained: its
#                    kubelet would never confirm an eviction), then microk8s remove-node it (with
#                    --force when FORCE=1: a control plane that cannot leave dqlite itself). A node no
#                    longer in the cluster reports remove=already-gone.
#   ACTION=drain     cordon and drain it the same way (before an upgrade).
#   ACTION=uncordon  uncordon it, then wait up to WAIT_TIMEOUT seconds for Kubernetes to report it Ready
#                    on a kubelet version starting with EXPECT_VERSION (if set, e.g. v1.33.).
# Environment: ACTION, NODE_IP (the node's private IP), DRAIN_TIMEOUT (seconds; remove and drain),
# WAIT_TIMEOUT (seconds; uncordon), EXPECT_VERSION (uncordon, optional), FORCE (remove, optional).
set -euo pipefail

fail() { echo "manage-node: $*" >&2; exit 1; }
for var in ACTION NODE_IP; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
[[ $NODE_IP =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || fail "NODE_IP '$NODE_IP' is not an IPv4 address"
case $ACTION in
  remove|drain)
    [[ ${DRAIN_TIMEOUT:-} =~ ^[1-9][0-9]*$ ]] || fail "DRAIN_TIMEOUT '${DRAIN_TIMEOUT:-}' is not a positive number of seconds" ;;
  uncordon)
    [[ ${WAIT_TIMEOUT:-} =~ ^[1-9][0-9]*$ ]] || fail "WAIT_TIMEOUT '${WAIT_TIMEOUT:-}' is not a positive number of seconds"
    [[ -z ${EXPECT_VERSION:-} || $EXPECT_VERSION =~ ^v[0-9]+\.[0-9]+\.$ ]] || fail "EXPECT_VERSION '$EXPECT_VERSION' is not like v1.33." ;;
  *) fail "ACTION '$ACTION' is not remove, drain or uncordon" ;;
esac

# "<name> <Ready|NotReady> <kubelet version>" of the node whose InternalIP is NODE_IP, or nothing.
node_line() {
  local nodes_json
  nodes_json=$(microk8s kubectl get nodes -o json) || fail "microk8s kubectl get nodes failed"
  # python3 ships with Ubuntu cloud images; jq does not.
  python3 -c '
import json, sys
ip = sys.argv[1]
for n in json.load(sys.stdin).get("items", []):
    status = n.get("status", {})
    addrs = status.get("addresses", [])
    if any(a.get("type") == "InternalIP" and a.get("address") == ip for a in addrs):
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
        print(n.get("metadata", {}).get("name", ""), "Ready" if ready else "NotReady",
              status.get("nodeInfo", {}).get("kubeletVersion", "-"))
        break
' "$NODE_IP" <<<"$nodes_json"
}

line=$(node_line)
name=${line%% *}
if [[ -z $line ]]; then
  [[ $ACTION == remove ]] || fail "no node with InternalIP $NODE_IP is in the cluster"
  echo "MECPLANE_RESULT remove=already-gone ip=$NODE_IP"
  exit 0
fi

if [[ $ACTION == uncordon ]]; then
  microk8s kubectl uncordon "$name" >/dev/null || fail "microk8s kubectl uncordon $name failed"
  deadline=$((SECONDS + WAIT_TIMEOUT))
  while :; do
    read -r _ ready version <<<"$(node_line)"
    if [[ $ready == Ready && ( -z ${EXPECT_VERSION:-} || $version == "$EXPECT_VERSION"* ) ]]; then
      echo "MECPLANE_RESULT uncordon=ok node=$name version=$version"
      exit 0
    fi
    (( SECONDS < deadline )) || fail "$name is ${ready:-gone} on ${version:-no version} ${WAIT_TIMEOUT}s after uncordon, not Ready on ${EXPECT_VERSION:-any version}"
    sleep 2
  done
fi

drain=drained
drain_args=("$name" --ignore-daemonsets --delete-emptydir-data "--timeout=${DRAIN_TIMEOUT}s")
read -r _ ready _ <<<"$line"
if [[ $ACTION == remove && $ready != Ready ]]; then
  # Its kubelet is gone: evictions would never be confirmed. Its pods go with the node.
  echo "note: $name is $ready; removing it without draining"
  drain=skipped
elif ! microk8s kubectl drain "${drain_args[@]}"; then
  echo "note: draining $name did not finish within ${DRAIN_TIMEOUT}s; draining again with --force"
  drain=forced
  if ! microk8s kubectl drain "${drain_args[@]}" --force; then
    echo "note: the forced drain of $name did not finish either; going on with its pods"
    drain=incomplete
  fi
fi
if [[ $ACTION == drain ]]; then
  echo "MECPLANE_RESULT drain=$drain node=$name"
  exit 0
fi

force=()
[[ ${FORCE:-0} == 1 ]] && force=(--force)
if ! microk8s remove-node "$name" "${force[@]}"; then
  # Removed meanwhile (a retried command): what was asked is done.
  [[ -z $(node_line) ]] || fail "microk8s remove-node $name ${force[*]} failed"
fi
echo "MECPLANE_RESULT remove=removed node=$name drain=$drain"
