#!/usr/bin/env bash
# mecplane-script: join
# Installs MicroK8s (same channel as the cluster) and joins this node to the cluster at JOIN_ADDRESS,
# as a worker (--worker) or as a control-plane node. Safe to run twice: a node that is already a
# member reports join=already-member.
# Environment: MK8S_CHANNEL, JOIN_ADDRESS (<ip>:25000), JOIN_TOKEN, NODE_ROLE (control-plane|worker),
# WAIT_TIMEOUT (seconds), EXTRA_SANS (comma list, optional: a control plane's extra certificate names,
# written to the launch configuration before the install, as the bootstrap does).
set -euo pipefail

fail() { echo "join: $*" >&2; exit 1; }
for var in MK8S_CHANNEL JOIN_ADDRESS JOIN_TOKEN NODE_ROLE WAIT_TIMEOUT; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
[[ $MK8S_CHANNEL =~ ^[0-9]+\.[0-9]+/(stable|candidate|beta|edge)$ ]] || fail "MK8S_CHANNEL '$MK8S_CHANNEL' is not <major>.<minor>/<risk>"
[[ $JOIN_ADDRESS =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}:25000$ ]] || fail "JOIN_ADDRESS '$JOIN_ADDRESS' is not <ip>:25000"
[[ $JOIN_TOKEN =~ ^[A-Za-z0-9]{32}$ ]] || fail "JOIN_TOKEN is not 32 alphanumeric characters"
[[ $NODE_ROLE == control-plane || $NODE_ROLE == worker ]] || fail "NODE_ROLE '$NODE_ROLE' is not control-plane or worker"
[[ $WAIT_TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "WAIT_TIMEOUT '$WAIT_TIMEOUT' is not a positive number of seconds"
EXTRA_SANS=${EXTRA_SANS:-}
[[ -z $EXTRA_SANS || $EXTRA_SANS =~ ^[A-Za-z0-9.:-]+(,[A-Za-z0-9.:-]+)*$ ]] || fail "EXTRA_SANS '$EXTRA_SANS' is not a comma list of IPs or DNS names"
JOIN_IP=${JOIN_ADDRESS%:*}
LAUNCH_CONFIG=/var/snap/microk8s/common/.microk8s.yaml

installed_channel() {
  { snap list microk8s 2>/dev/null || true; } | awk 'NR == 2 { print $4 }'
}

# Whether this node already belongs to the cluster at JOIN_IP.
already_member() {
  local status
  status=$(microk8s status 2>/dev/null) || return 1
  if [[ $NODE_ROLE == worker ]]; then
    grep -q "acting as a node in a cluster" <<<"$status"
  else
    # The datastore nodes of a control plane that joined include the node it joined.
    grep -E '^[[:space:]]*datastore master nodes:' <<<"$status" | grep -qF " $JOIN_IP:19001"
  fi
}

current=$(installed_channel)
if [[ -z $current ]]; then
  if [[ -n $EXTRA_SANS ]]; then
    # The launch configuration is read once, at install time: write it first.
    mkdir -p "$(dirname "$LAUNCH_CONFIG")"
    {
      echo "---"
      echo "version: 0.1.0"
      echo "extraSANs:"
      IFS=, read -ra items <<<"$EXTRA_SANS"
      for item in "${items[@]}"; do echo "  - $item"; done
    } >"$LAUNCH_CONFIG.tmp"
    mv "$LAUNCH_CONFIG.tmp" "$LAUNCH_CONFIG"
  fi
  snap install microk8s --classic --channel="$MK8S_CHANNEL"
elif [[ $current != "$MK8S_CHANNEL" ]]; then
  fail "microk8s is already installed from channel $current, not the cluster's $MK8S_CHANNEL"
fi
snap refresh --hold microk8s
microk8s status --wait-ready --timeout "$WAIT_TIMEOUT" >/dev/null || fail "microk8s did not become ready within ${WAIT_TIMEOUT}s"

if already_member; then
  echo "MECPLANE_RESULT join=already-member"
  exit 0
fi

join_args=("$JOIN_ADDRESS/$JOIN_TOKEN")
if [[ $NODE_ROLE == worker ]]; then
  join_args+=(--worker)
fi
if ! microk8s join "${join_args[@]}"; then
  fail "microk8s join $JOIN_ADDRESS as $NODE_ROLE failed"
fi
if [[ $NODE_ROLE == control-plane ]]; then
  microk8s status --wait-ready --timeout "$WAIT_TIMEOUT" >/dev/null || fail "microk8s did not become ready within ${WAIT_TIMEOUT}s after joining"
fi
echo "MECPLANE_RESULT join=joined"
