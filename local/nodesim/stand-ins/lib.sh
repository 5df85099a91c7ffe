#!/usr/bin/env bash
# Shared helpers of the node simulator's stand-ins (sourced, not run).
# State layout inside the instance's /var (the sandbox bind-mounts its own directory there):
#   /var/lib/snapd-sim/microk8s/channel      installed channel (absent = not installed)
#   /var/lib/snapd-sim/microk8s/held         refresh hold
#   /var/snap/microk8s/common/.microk8s.yaml launch configuration (written by the node script)
#   /var/snap/microk8s/current/args/         kube-apiserver arguments and the files they name
#                                            (MicroK8s' defaults, then the launch configuration's)
#   /var/snap/microk8s/common/sim/           this node: ready, role, datastore, joined-to,
#                                            extra-sans, join-attempts.log, pod-security
#   /var/snap/microk8s/common/sim/cluster/   on the datastore node: members, tokens, addons, addon-args,
#                                            joins.log, removals.log, left, cordoned, ca-seed, lock,
#                                            join-in-progress, pods
# Other nodes are reached only through $MECPLANE_SIM_NET/<ip>/var/... (the net dir protocol).
# Next to each node's var, in $MECPLANE_SIM_NET/<ip>/: instance-state (kept by the simulator from
# EC2), faults (the fault rules matching that node, "<fault> <script|*>" per line, kept by the
# simulator) and dead (written by the node_dies fault: the node stopped answering for good).

# shellcheck disable=SC2034  # used by the scripts that source this file
SIM_SNAP_DIR=/var/lib/snapd-sim/microk8s
SIM_DIR=/var/snap/microk8s/common/sim
SIM_LAUNCH_CONFIG=/var/snap/microk8s/common/.microk8s.yaml

sim_ip() { printf '%s\n' "${MECPLANE_SIM_IP:?MECPLANE_SIM_IP is not set (not inside the node simulator?)}"; }
sim_hostname() { printf '%s\n' "${MECPLANE_SIM_HOSTNAME:-ip-$(sim_ip | tr . -)}"; }
sim_net() { printf '%s\n' "${MECPLANE_SIM_NET:?MECPLANE_SIM_NET is not set}"; }
sim_has_fault() { [[ ",${MECPLANE_SIM_FAULTS:-}," == *",$1,"* ]]; }
sim_now() { date +%s; }

# The /var of the node with this IP (our own /var for our IP).
sim_node_var() {
  local ip=$1
  if [[ $ip == "$(sim_ip)" ]]; then printf '/var\n'; return; fi
  local dir
  dir="$(sim_net)/$ip"
  [[ -d $dir/var ]] || return 1
  printf '%s/var\n' "$dir"
}

# Whether the node with this IP is a running instance that still answers (not dead).
sim_node_running() {
  local ip=$1 state dir
  dir="$(sim_net)/$ip"
  [[ ! -e $dir/dead ]] || return 1
  state=$(cat "$dir/instance-state" 2>/dev/null || echo running)
  [[ $state == running ]]
}

# Whether a fault rule named $2 matches the node with IP $1 (for faults about another node, such as
# drain_times_out of the node being drained; a rule narrowed to a script counts while that script runs).
sim_node_has_fault() {
  local f
  f="$(sim_net)/$1/faults"
  [[ -f $f ]] || return 1
  awk -v n="$2" -v s="${MECPLANE_SIM_SCRIPT:-}" '$1 == n && ($2 == "*" || $2 == s) { found = 1 } END { exit !found }' "$f"
}

# The node_dies fault: this node stops answering for good (other nodes see it unreachable, its SSM
# agent goes ConnectionLost and what runs on it never finishes).
sim_die() {
  sim_now >"$(sim_net)/$(sim_ip)/dead"
  while :; do sleep 1; done
}

# Kubernetes version and snap revision of a channel (the simulator's latest track is 1.32).
sim_track() { local t=${1%%/*}; [[ $t == latest ]] && t=1.32; printf '%s\n' "$t"; }
sim_version() { printf 'v%s.0\n' "$(sim_track "$1")"; }
sim_revision() { local t; t=$(sim_track "$1"); printf '%s\n' $((7000 + 10 * ${t#*.})); }

sim_installed() { [[ -s $SIM_SNAP_DIR/channel ]]; }

# The cluster directory (shared state) this node belongs to.
sim_cluster_dir() {
  local ds var
  ds=$(cat "$SIM_DIR/datastore" 2>/dev/null) || return 1
  var=$(sim_node_var "$ds") || return 1
  printf '%s/snap/microk8s/common/sim/cluster\n' "$var"
}

# Runs "$@" holding the cluster lock of the cluster directory $1.
sim_with_lock() {
  local dir=$1; shift
  mkdir -p "$dir"
  (
    flock -w 30 9 || { echo "timed out waiting for the cluster lock" >&2; exit 1; }
    "$@"
  ) 9>"$dir/lock"
}

sim_not_installed() {
  echo "${0##*/}: command not found (the microk8s snap is not installed)" >&2
  exit 127
}
