#!/usr/bin/env bash
# mecplane-script: verify
# Lists the cluster's nodes from a control-plane node: one NODE line per node (name, Ready or
# NotReady, internal IP, role, when the Ready condition last changed or "-"), then the counts.
# Exit 0 whenever the API answered; the verify stage compares the counts with EXPECTED_NODES, the
# reconcile's sampled node check reads how long a node has been NotReady.
# Environment: EXPECTED_NODES (number of nodes the cluster should have).
set -euo pipefail

fail() { echo "verify: $*" >&2; exit 1; }
[[ -n ${EXPECTED_NODES:-} ]] || fail "required environment variable EXPECTED_NODES is not set"
[[ $EXPECTED_NODES =~ ^[1-9][0-9]*$ ]] || fail "EXPECTED_NODES '$EXPECTED_NODES' is not a positive number"

nodes_json=$(microk8s kubectl get nodes -o json) || fail "microk8s kubectl get nodes failed"
# python3 ships with Ubuntu cloud images; jq does not.
python3 -c '
import json, sys
nodes = json.load(sys.stdin).get("items", [])
ready = 0
for n in nodes:
    meta, status = n.get("metadata", {}), n.get("status", {})
    labels = meta.get("labels", {})
    cond = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    ok = cond.get("status") == "True"
    since = cond.get("lastTransitionTime") or "-"
    ready += ok
    ip = next((a.get("address") for a in status.get("addresses", []) if a.get("type") == "InternalIP"), "-")
    worker = "node.kubernetes.io/microk8s-worker" in labels or "node-role.kubernetes.io/worker" in labels
    role = "worker" if worker else "control-plane"
    print("NODE %s %s %s %s %s" % (meta.get("name", "-"), "Ready" if ok else "NotReady", ip, role, since))
print("MECPLANE_RESULT nodes=%d ready=%d" % (len(nodes), ready))
' <<<"$nodes_json"
