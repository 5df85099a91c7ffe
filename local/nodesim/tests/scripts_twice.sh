#!/usr/bin/env bash
# Runs every node script twice against the stand-ins in throwaway sandboxes (private mount
# namespaces, as the node simulator runs them) and checks they converge. Needs root, unshare, jq.
# Usage: local/nodesim/tests/scripts_twice.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
scripts=$root/mecplane/scripts
stand_ins=$here/../stand-ins
work=$(mktemp -d /tmp/mecplane-scripts-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/net"

declare -A ID=([10.0.1.5]=i-cp0 [10.0.1.6]=i-worker0 [10.0.1.7]=i-cp1)
for ip in "${!ID[@]}"; do
  mkdir -p "$work/instances/${ID[$ip]}/var"
  echo running >"$work/instances/${ID[$ip]}/instance-state"
  ln -s "$work/instances/${ID[$ip]}" "$work/net/$ip"
done

# run <ip> <script> [NAME=value...]: runs the script on that node; prints stdout, returns its status.
run() {
  local ip=$1 script=$2; shift 2
  local dir=$work/instances/${ID[$ip]}
  # shellcheck disable=SC2016  # expanded by the inner bash
  env -i PATH="$stand_ins:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" HOME=/root \
    MECPLANE_SIM_INSTANCE_ID="${ID[$ip]}" MECPLANE_SIM_IP="$ip" MECPLANE_SIM_HOSTNAME="ip-${ip//./-}" \
    MECPLANE_SIM_NET="$work/net" MECPLANE_SIM_FAULTS="" MECPLANE_SIM_JOIN_SECONDS=0 "$@" \
    unshare --mount --propagation private -- bash -c 'mount --bind "$1" /var && exec bash "$2"' _ \
    "$dir/var" "$scripts/$script.sh"
}

failures=0
check() { # check <description> <expected substring> <actual>
  if [[ $3 == *"$2"* ]]; then echo "ok   - $1"; else echo "FAIL - $1: expected '$2' in: $3"; failures=$((failures + 1)); fi
}
expect_fail() { # expect_fail <description> <expected stderr substring> <command...>
  local desc=$1 want=$2 err; shift 2
  if err=$("$@" 2>&1 >/dev/null); then echo "FAIL - $desc: succeeded"; failures=$((failures + 1)); return; fi
  check "$desc" "$want" "$err"
}

TOKEN=abcdefghijklmnopqrstuvwxyz012345
# shellcheck disable=SC2054  # comma lists are values, not separators
boot=(MK8S_CHANNEL=1.32/stable MK8S_ADDONS=dns,hostpath-storage EXTRA_SANS=10.0.1.5,api.example.com WAIT_TIMEOUT=30)
for n in 1 2; do
  check "bootstrap run $n" "MECPLANE_RESULT bootstrap=ok channel=1.32/stable" "$(run 10.0.1.5 bootstrap "${boot[@]}")"
done
check "launch config has extraSANs" "api.example.com" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/.microk8s.yaml")"
check "addons from the launch config" "hostpath-storage" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/addons")"
check "held" "held" "$(ls "$work/instances/i-cp0/var/lib/snapd-sim/microk8s")"
expect_fail "bootstrap with another channel" "already installed from channel 1.32/stable" run 10.0.1.5 bootstrap MK8S_CHANNEL=1.31/stable WAIT_TIMEOUT=30
expect_fail "bootstrap without WAIT_TIMEOUT" "WAIT_TIMEOUT is not set" run 10.0.1.5 bootstrap MK8S_CHANNEL=1.32/stable

for n in 1 2; do
  out=$(run 10.0.1.5 issue-token JOIN_TOKEN=$TOKEN TOKEN_TTL=600)
  check "issue-token run $n" "MECPLANE_RESULT token=issued" "$out"
  [[ $out != *"$TOKEN"* ]] || { echo "FAIL - issue-token printed the token"; failures=$((failures + 1)); }
done

join=(MK8S_CHANNEL=1.32/stable JOIN_ADDRESS=10.0.1.5:25000 WAIT_TIMEOUT=30)
expect_fail "join with a wrong token" "Invalid token" run 10.0.1.6 join "${join[@]}" JOIN_TOKEN=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz NODE_ROLE=worker
check "worker join run 1" "MECPLANE_RESULT join=joined" "$(run 10.0.1.6 join "${join[@]}" JOIN_TOKEN=$TOKEN NODE_ROLE=worker)"
check "worker join run 2" "MECPLANE_RESULT join=already-member" "$(run 10.0.1.6 join "${join[@]}" JOIN_TOKEN=$TOKEN NODE_ROLE=worker)"
check "control-plane join run 1" "MECPLANE_RESULT join=joined" "$(run 10.0.1.7 join "${join[@]}" JOIN_TOKEN=$TOKEN NODE_ROLE=control-plane)"
check "control-plane join run 2" "MECPLANE_RESULT join=already-member" "$(run 10.0.1.7 join "${join[@]}" JOIN_TOKEN=$TOKEN NODE_ROLE=control-plane)"
log=$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/joins.log")
check "joins log: worker joined with --worker" "ip-10-0-1-6 10.0.1.6 worker --worker joined" "$log"
check "joins log: control plane joined without flags" "ip-10-0-1-7 10.0.1.7 control-plane - joined" "$log"
[[ $(grep -c ' joined ' <<<"$log") == 2 ]] || { echo "FAIL - duplicate joins: $log"; failures=$((failures + 1)); }

for n in 1 2; do
  out=$(run 10.0.1.5 verify EXPECTED_NODES=3)
  check "verify run $n: worker" "NODE ip-10-0-1-6 Ready 10.0.1.6 worker" "$out"
  check "verify run $n: control plane" "NODE ip-10-0-1-7 Ready 10.0.1.7 control-plane" "$out"
  check "verify run $n: counts" "MECPLANE_RESULT nodes=3 ready=3" "$out"
done
echo terminated >"$work/instances/i-worker0/instance-state"
check "verify sees a terminated worker NotReady" "NODE ip-10-0-1-6 NotReady 10.0.1.6 worker" "$(run 10.0.1.5 verify EXPECTED_NODES=3)"

for n in 1 2; do
  out=$(run 10.0.1.5 kubeconfig)
  check "kubeconfig run $n" "server: https://10.0.1.5:16443" "$out"
  check "kubeconfig run $n result" "MECPLANE_RESULT kubeconfig=ok" "$out"
done

if (( failures )); then echo "$failures check(s) failed"; exit 1; fi
echo "all node script checks passed"
