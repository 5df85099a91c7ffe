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

declare -A ID=([10.0.1.5]=i-cp0 [10.0.1.6]=i-worker0 [10.0.1.7]=i-cp1 [10.0.1.8]=i-cp2 [10.0.1.9]=i-cp3)
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

# shellcheck disable=SC2054  # comma lists are values, not separators
boot=(MK8S_CHANNEL=1.32/stable "MK8S_ADDONS=dns hostpath-storage metallb:10.0.0.10-10.0.0.20,10.0.1.0/24" EXTRA_SANS=10.0.1.5,api.example.com WAIT_TIMEOUT=30)
for n in 1 2; do
  check "bootstrap run $n" "MECPLANE_RESULT bootstrap=ok channel=1.32/stable" "$(run 10.0.1.5 bootstrap "${boot[@]}")"
done
check "launch config has extraSANs" "api.example.com" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/.microk8s.yaml")"
check "addons from the launch config" "hostpath-storage" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/addons")"
check "add-on arguments from the launch config, comma kept" "metallb 10.0.0.10-10.0.0.20,10.0.1.0/24" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/addon-args")"
check "held" "held" "$(ls "$work/instances/i-cp0/var/lib/snapd-sim/microk8s")"
expect_fail "bootstrap with another channel" "already installed from channel 1.32/stable" run 10.0.1.5 bootstrap MK8S_CHANNEL=1.31/stable WAIT_TIMEOUT=30
expect_fail "bootstrap with an unknown Pod Security level" "POD_SECURITY 'none' is not" run 10.0.1.5 bootstrap "${boot[@]}" POD_SECURITY=none
# Pod Security admission (POD_SECURITY unset: baseline): the launch configuration's file and API
# server argument, as MicroK8s applies them, and the policy the API server loaded.
args=$work/instances/i-cp0/var/snap/microk8s/current/args
check "admission configuration written with the arguments" "name: PodSecurity" "$(cat "$args/mecplane-admission.yaml")"
check "MicroK8s' EventRateLimit kept" "path: eventconfig.yaml" "$(cat "$args/mecplane-admission.yaml")"
# shellcheck disable=SC2016  # MicroK8s expands ${SNAP_DATA} itself
check "the API server names it" '--admission-control-config-file=${SNAP_DATA}/args/mecplane-admission.yaml' "$(cat "$args/kube-apiserver")"
[[ $(grep -c '^--admission-control-config-file=' "$args/kube-apiserver") == 1 ]] || { echo "FAIL - the argument is not replaced in place"; failures=$((failures + 1)); }
check "baseline enforced" "enforce baseline" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/pod-security")"
check "kube-system exempt" "exempt kube-system" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/pod-security")"
expect_fail "bootstrap without WAIT_TIMEOUT" "WAIT_TIMEOUT is not set" run 10.0.1.5 bootstrap MK8S_CHANNEL=1.32/stable

# on <ip> [NAME=value...] -- <command line>: runs it on that node (as SSM runs a command); prints stdout.
on() {
  local ip=$1 envs=(); shift
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
  # shellcheck disable=SC2016  # expanded by the inner bash
  env -i PATH="$stand_ins:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" HOME=/root \
    MECPLANE_SIM_INSTANCE_ID="${ID[$ip]}" MECPLANE_SIM_IP="$ip" MECPLANE_SIM_HOSTNAME="ip-${ip//./-}" \
    MECPLANE_SIM_NET="$work/net" MECPLANE_SIM_FAULTS="" MECPLANE_SIM_JOIN_SECONDS=0 "${envs[@]}" \
    unshare --mount --propagation private -- bash -c 'mount --bind "$1" /var && exec bash -c "$2"' _ \
    "$work/instances/${ID[$ip]}/var" "$*"
}
# Join tokens: the joining node makes a one-time key (join-key), the control plane makes a
# single-use token and prints it only sealed to that key (issue-token), the node opens it (join).
key_of() { sed -n 's/^MECPLANE_RESULT join-key=ready public-key=//p' <<<"$1"; }
sealed_of() { grep '^MECPLANE_SEALED v1 ' <<<"$1"; }
tokens() { cut -d' ' -f1 "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/tokens"; }
key_file() { echo "$work/instances/${ID[$1]}/var/lib/mecplane/join-key.pem"; }
# open_sealed <ip> <sealed line>: the token, opened here with that node's key (white box, as the
# join script opens it there).
open_sealed() {
  local wrapped iv ct
  read -r _ _ wrapped iv ct _ <<<"$2"
  base64 -d <<<"$wrapped" | openssl pkeyutl -decrypt -inkey "$(key_file "$1")" -pkeyopt rsa_padding_mode:oaep \
    -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 >"$work/keys"
  base64 -d <<<"$iv" >"$work/iv"
  base64 -d <<<"$ct" | openssl enc -d -aes-256-ctr -K "$(head -c 32 "$work/keys" | od -An -v -tx1 | tr -d ' \n')" \
    -iv "$(od -An -v -tx1 <"$work/iv" | tr -d ' \n')"
}
join=(MK8S_CHANNEL=1.32/stable JOIN_ADDRESS=10.0.1.5:25000 WAIT_TIMEOUT=30)
# join_node <ip> <role> [<control plane ip>]: the three commands of one join; prints the join's output.
join_node() {
  local ip=$1 role=$2 cp=${3:-10.0.1.5} key sealed
  key=$(key_of "$(run "$ip" join-key)")
  sealed=$(sealed_of "$(run "$cp" issue-token JOIN_KEY="$key")")
  run "$ip" join MK8S_CHANNEL=1.32/stable JOIN_ADDRESS="$cp:25000" WAIT_TIMEOUT=30 NODE_ROLE="$role" SEALED_TOKEN="$sealed"
}

out1=$(run 10.0.1.6 join-key)
out2=$(run 10.0.1.6 join-key)
key6=$(key_of "$out1")
check "join-key run 1 prints a public key" "MECPLANE_RESULT join-key=ready public-key=MII" "$out1"
check "join-key run 2 prints the same key" "$key6" "$(key_of "$out2")"
check "join key file root-only" "600 700" "$(stat -c %a "$(key_file 10.0.1.6)") $(stat -c %a "$(dirname "$(key_file 10.0.1.6)")")"
[[ $out1 != *PRIVATE* ]] || { echo "FAIL - join-key printed its private key"; failures=$((failures + 1)); }
key7=$(key_of "$(run 10.0.1.7 join-key)")
[[ $key7 != "$key6" ]] || { echo "FAIL - two nodes made the same join key"; failures=$((failures + 1)); }

before=$(tokens | wc -l)
for n in 1 2; do
  out=$(run 10.0.1.5 issue-token JOIN_KEY="$key6")
  check "issue-token run $n" "MECPLANE_RESULT token=sealed" "$out"
  sealed[n]=$(sealed_of "$out")
  token[n]=$(open_sealed 10.0.1.6 "${sealed[n]}")
  check "issue-token run $n: the sealed token is registered" "${token[n]}" "$(tokens)"
  check "issue-token run $n: single use" "${token[n]} - 1" "$(cat "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/tokens")"
  [[ $out != *"${token[n]}"* ]] || { echo "FAIL - issue-token printed the token"; failures=$((failures + 1)); }
done
[[ ${token[1]} != "${token[2]}" && $(tokens | wc -l) == $((before + 2)) ]] || { echo "FAIL - issue-token did not make a new token per run"; failures=$((failures + 1)); }
expect_fail "issue-token without a key" "JOIN_KEY is not set" run 10.0.1.5 issue-token
expect_fail "issue-token with a key that is not RSA" "not a usable RSA public key" run 10.0.1.5 issue-token JOIN_KEY=QUJDRA==
[[ $(tokens | wc -l) == $((before + 2)) ]] || { echo "FAIL - a refused issue-token left a token behind"; failures=$((failures + 1)); }

expect_fail "join with a token sealed to another node's key" "not sealed to this node's join key" \
  run 10.0.1.7 join "${join[@]}" SEALED_TOKEN="${sealed[1]}" NODE_ROLE=control-plane
[[ ! -e $(key_file 10.0.1.7) ]] || { echo "FAIL - a join attempt kept its key"; failures=$((failures + 1)); }
expect_fail "join without a join key" "has no join key" run 10.0.1.7 join "${join[@]}" SEALED_TOKEN="${sealed[1]}" NODE_ROLE=control-plane
out=$(run 10.0.1.6 join "${join[@]}" SEALED_TOKEN="${sealed[1]}" NODE_ROLE=worker)
check "worker join run 1" "MECPLANE_RESULT join=joined" "$out"
[[ $out != *"${token[1]}"* ]] || { echo "FAIL - join printed the token"; failures=$((failures + 1)); }
[[ ! -e $(key_file 10.0.1.6) ]] || { echo "FAIL - the join key outlived the join"; failures=$((failures + 1)); }
check "worker join run 2" "MECPLANE_RESULT join=already-member" "$(run 10.0.1.6 join "${join[@]}" SEALED_TOKEN="${sealed[1]}" NODE_ROLE=worker)"
if tokens | grep -qxF "${token[1]}"; then echo "FAIL - the used token is still registered"; failures=$((failures + 1)); fi
# Replays: a used token, and a token consumed by a join refused for another reason, are refused.
on 10.0.1.9 -- snap install microk8s --classic --channel=1.32/stable >/dev/null
expect_fail "replaying a used token" "Invalid token" on 10.0.1.9 -- microk8s join "10.0.1.5:25000/${token[1]}" --worker
echo "ip-10-0-1-8 $(( $(date +%s) + 60 ))" >"$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/join-in-progress"
expect_fail "a join refused while another runs" "Another join is in progress" on 10.0.1.9 -- microk8s join "10.0.1.5:25000/${token[2]}" --worker
rm "$work/instances/i-cp0/var/snap/microk8s/common/sim/cluster/join-in-progress"
expect_fail "that refused join consumed its single-use token" "Invalid token" on 10.0.1.9 -- microk8s join "10.0.1.5:25000/${token[2]}" --worker
# A token with a TTL is refused once it has expired.
ttl_token=ttltoken0000000000000000000000000
on 10.0.1.5 -- microk8s add-node --token "$ttl_token" --token-ttl 1 --format json >/dev/null
sleep 2
expect_fail "an expired token" "Invalid token" on 10.0.1.9 -- microk8s join "10.0.1.5:25000/$ttl_token" --worker
check "control-plane join run 1" "MECPLANE_RESULT join=joined" "$(join_node 10.0.1.7 control-plane)"
check "control-plane join run 2" "MECPLANE_RESULT join=already-member" "$(run 10.0.1.7 join "${join[@]}" SEALED_TOKEN="${sealed[1]}" NODE_ROLE=control-plane)"
check "a joined control plane enforces the cluster's level" "enforce baseline" "$(cat "$work/instances/i-cp1/var/snap/microk8s/common/sim/pod-security")"
check "a joined control plane names its admission configuration" "mecplane-admission.yaml" "$(cat "$work/instances/i-cp1/var/snap/microk8s/current/args/kube-apiserver")"
[[ ! -e $work/instances/i-worker0/var/snap/microk8s/current/args/mecplane-admission.yaml && ! -e $work/instances/i-worker0/var/snap/microk8s/common/sim/pod-security ]] \
  || { echo "FAIL - a worker got Pod Security admission (it runs no API server)"; failures=$((failures + 1)); }
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

# The kubeconfig leaves the node sealed to a one-time RSA key (mecplane/src/sealed.rs): opened
# here with openssl, as the stage opens it with aws-lc-rs.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/transport.pem" 2>/dev/null
public=$(openssl pkey -in "$work/transport.pem" -pubout -outform DER | base64 -w0)
hex() { od -An -v -tx1 | tr -d ' \n'; }
for n in 1 2; do
  out=$(run 10.0.1.5 kubeconfig TRANSPORT_KEY="$public")
  check "kubeconfig run $n result" "MECPLANE_RESULT kubeconfig=sealed" "$out"
  [[ $out != *"server: https://"* ]] || { echo "FAIL - kubeconfig run $n printed the kubeconfig in clear"; failures=$((failures + 1)); }
  read -r _ version wrapped iv ct mac <<<"$(grep '^MECPLANE_SEALED ' <<<"$out")"
  check "kubeconfig run $n format" "v1" "$version"
  base64 -d <<<"$wrapped" >"$work/wrapped"
  openssl pkeyutl -decrypt -inkey "$work/transport.pem" -pkeyopt rsa_padding_mode:oaep \
    -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in "$work/wrapped" -out "$work/keys"
  base64 -d <<<"$iv" >"$work/iv"
  base64 -d <<<"$ct" >"$work/ct"
  want_mac=$(cat "$work/iv" "$work/ct" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(tail -c 32 "$work/keys" | hex)" -binary | base64 -w0)
  check "kubeconfig run $n MAC" "$mac" "$want_mac"
  plain=$(openssl enc -d -aes-256-ctr -K "$(head -c 32 "$work/keys" | hex)" -iv "$(hex <"$work/iv")" -in "$work/ct")
  check "kubeconfig run $n opened" "server: https://10.0.1.5:16443" "$plain"
done
expect_fail "kubeconfig without a transport key" "TRANSPORT_KEY is not set" run 10.0.1.5 kubeconfig

# ---- day 2: stand-in commands run directly on a node ------------------------------------------
expect_code() { # expect_code <description> <exit code> <expected output substring> <command...>
  local desc=$1 want=$2 text=$3 out rc=0; shift 3
  out=$("$@" 2>&1) || rc=$?
  if [[ $rc != "$want" ]]; then echo "FAIL - $desc: exit $rc, not $want: $out"; failures=$((failures + 1)); return; fi
  check "$desc" "$text" "$out"
}
state() { cat "$work/instances/$1/instance-state"; }
set_state() { echo "$2" >"$work/instances/$1/instance-state"; }
cluster_file() { cat "$work/instances/$1/var/snap/microk8s/common/sim/cluster/$2"; }

# Pod Security admission (baseline) through the first control plane's API server.
hostnet='{"spec": {"hostNetwork": true}}'
expect_fail "a hostNetwork pod in default is refused" 'pods "sniff" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)' \
  on 10.0.1.5 -- "microk8s kubectl run sniff --image=busybox --overrides='$hostnet'"
check "a hostNetwork pod in kube-system is admitted" "pod/sniff created" "$(on 10.0.1.5 -- "microk8s kubectl run sniff -n kube-system --image=busybox --overrides='$hostnet'")"
check "a plain pod in default is admitted" "pod/web created" "$(on 10.0.1.5 -- microk8s kubectl run web --image=nginx)"
expect_fail "a pod of the same name again" 'pods "web" already exists' on 10.0.1.5 -- microk8s kubectl run web --image=nginx
printf '%s' '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "peek"}, "spec": {"hostPID": true, "hostIPC": true, "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}, "ports": [{"containerPort": 80, "hostPort": 8080}]}], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}' >"$work/instances/i-cp0/var/peek.json"
expect_fail "apply of a host-reaching pod is refused, every violation named" 'error when creating "/var/peek.json": pods "peek" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostPID=true, hostIPC=true), privileged (container "c" must not set securityContext.privileged=true), hostPath volumes ("root"), hostPort (container "c" uses hostPort 8080)' \
  on 10.0.1.5 -- microk8s kubectl apply -f /var/peek.json
check "the same pod in metallb-system is admitted" "pod/peek created" "$(on 10.0.1.5 -- microk8s kubectl apply -f /var/peek.json -n metallb-system)"
check "applied twice: configured" "pod/peek configured" "$(on 10.0.1.5 -- microk8s kubectl apply -f - -n metallb-system <"$work/instances/i-cp0/var/peek.json")"
check "admitted pods listed" "pod/web" "$(on 10.0.1.5 -- microk8s kubectl get pods -o name)"

set_state i-worker0 running
check "control plane 3 joins" "MECPLANE_RESULT join=joined" "$(join_node 10.0.1.8 control-plane)"
status=$(on 10.0.1.5 -- microk8s status)
check "status: three voters" "datastore master nodes: 10.0.1.5:19001 10.0.1.7:19001 10.0.1.8:19001" "$status"
check "status: high availability" "high-availability: yes" "$status"
check "get nodes -o wide: version and IP" "v1.32.0   10.0.1.6" "$(on 10.0.1.5 -- microk8s kubectl get nodes -o wide)"

# cordon / uncordon / drain
check "cordon" "node/ip-10-0-1-6 cordoned" "$(on 10.0.1.5 -- microk8s kubectl cordon ip-10-0-1-6)"
check "cordoned node shown SchedulingDisabled" "ip-10-0-1-6   Ready,SchedulingDisabled" "$(on 10.0.1.5 -- microk8s kubectl get nodes)"
check "cordoned node unschedulable in json" "true" "$(on 10.0.1.5 -- microk8s kubectl get node ip-10-0-1-6 -o json | jq .spec.unschedulable)"
check "uncordon" "node/ip-10-0-1-6 uncordoned" "$(on 10.0.1.5 -- microk8s kubectl uncordon ip-10-0-1-6)"
expect_fail "cordon of an unknown node" 'nodes "ip-10-9-9-9" not found' on 10.0.1.5 -- microk8s kubectl cordon ip-10-9-9-9
expect_fail "drain without --ignore-daemonsets" "cannot delete DaemonSet-managed Pods" on 10.0.1.5 -- microk8s kubectl drain ip-10-0-1-6
check "drain" "node/ip-10-0-1-6 drained" "$(on 10.0.1.5 -- microk8s kubectl drain ip-10-0-1-6 --ignore-daemonsets --delete-emptydir-data --timeout=30s --force 2>/dev/null)"
check "drained node SchedulingDisabled" "Ready,SchedulingDisabled" "$(on 10.0.1.5 -- microk8s kubectl get nodes)"
expect_fail "drain with a timeout without unit" 'missing unit in duration "30"' on 10.0.1.5 -- microk8s kubectl drain ip-10-0-1-6 --ignore-daemonsets --timeout=30
# drain_times_out, matched on the drained node (the simulator writes <sandbox>/faults).
echo "drain_times_out *" >"$work/instances/i-worker0/faults"
started=$(date +%s)
expect_code "drain_times_out: fails after its timeout" 1 "global timeout reached: 2s" \
  on 10.0.1.5 -- microk8s kubectl drain ip-10-0-1-6 --ignore-daemonsets --delete-emptydir-data --timeout=2s
(( $(date +%s) - started >= 2 )) || { echo "FAIL - drain_times_out returned before its timeout"; failures=$((failures + 1)); }
rm "$work/instances/i-worker0/faults"
on 10.0.1.5 -- microk8s kubectl uncordon ip-10-0-1-6 >/dev/null

# snap refresh: one minor at a time, no downgrade
expect_code "refresh skipping two minors" 1 "refresh to 1.33/stable first" on 10.0.1.6 -- snap refresh microk8s --channel=1.34/stable
expect_code "refresh downgrading" 1 "downgrading MicroK8s" on 10.0.1.6 -- snap refresh microk8s --channel=1.31/stable
expect_code "refresh_fails" 1 "cannot perform the following tasks" on 10.0.1.6 MECPLANE_SIM_FAULTS=refresh_fails -- snap refresh microk8s --channel=1.33/stable
check "refresh_fails leaves the channel" "1.32/stable" "$(on 10.0.1.6 -- snap list microk8s)"
check "refresh one minor" "microk8s (1.33/stable) v1.33.0 from Canonical✓ refreshed" "$(on 10.0.1.6 -- snap refresh microk8s --channel=1.33/stable)"
check "snap list after refresh" "v1.33.0  7330  1.33/stable" "$(on 10.0.1.6 -- snap list microk8s)"
check "microk8s version after refresh" "MicroK8s v1.33.0" "$(on 10.0.1.6 -- microk8s version)"
nodes=$(on 10.0.1.5 -- microk8s kubectl get nodes)
check "get nodes: refreshed node's version" "ip-10-0-1-6   Ready    <none>" "$nodes"
check "get nodes: each node its own version" "v1.33.0" "$(grep ip-10-0-1-6 <<<"$nodes")"
check "get nodes: others unchanged" "v1.32.0" "$(grep ip-10-0-1-5 <<<"$nodes")"
check "refresh to the same channel" "has no updates available" "$(on 10.0.1.6 -- snap refresh microk8s --channel=1.33/stable)"

# enable / disable on the running cluster, from a control plane that is not the datastore node
check "disable an add-on of the launch configuration" "Addon core/metallb is disabled" "$(on 10.0.1.7 -- microk8s disable metallb 2>&1)"
[[ $(cluster_file i-cp0 addon-args) != *metallb* ]] || { echo "FAIL - disable kept the add-on's arguments"; failures=$((failures + 1)); }
check "enable with arguments" "Addon core/metallb is enabled" "$(on 10.0.1.7 -- microk8s enable metallb:10.0.0.30-10.0.0.40,10.0.2.0/24 2>&1)"
check "enable arguments recorded intact" "metallb 10.0.0.30-10.0.0.40,10.0.2.0/24" "$(cluster_file i-cp0 addon-args)"
check "enable again" "Addon core/metallb is already enabled" "$(on 10.0.1.7 -- microk8s enable metallb:10.0.0.50-10.0.0.60 2>/dev/null)"
check "enable unix-style arguments" "Addon core/ingress is enabled" "$(on 10.0.1.7 -- microk8s enable ingress --default-ssl-certificate=ns/cert 2>&1)"
check "unix-style arguments recorded" "ingress --default-ssl-certificate=ns/cert" "$(cluster_file i-cp0 addon-args)"
check "status lists enabled add-ons" "metallb              # (core)" "$(on 10.0.1.5 -- microk8s status | sed -n '/enabled:/,/disabled:/p')"
check "disable" "Addon core/ingress is disabled" "$(on 10.0.1.5 -- microk8s disable ingress 2>&1)"
[[ $(cluster_file i-cp0 addon-args) != *ingress* ]] || { echo "FAIL - disable kept the add-on's arguments"; failures=$((failures + 1)); }
expect_fail "enable an unknown add-on" "Addon nosuch was not found in any repository" on 10.0.1.5 -- microk8s enable nosuch
expect_fail "metallb with a bad range" "is not a valid IP Range" on 10.0.1.5 -- microk8s disable metallb ';' microk8s enable metallb:10.0.0.1
expect_fail "enable on a worker" "acting as a node in a cluster" on 10.0.1.6 -- microk8s enable dns

# remove-node: an unreachable voter only with --force; unknown nodes; the removals log
set_state i-cp2 stopped
expect_code "remove-node of an unreachable voter without --force" 1 "is registered with dqlite" on 10.0.1.5 -- microk8s remove-node ip-10-0-1-8
expect_code "remove-node of a reachable control plane that did not leave" 1 "run first 'microk8s leave'" on 10.0.1.5 -- microk8s remove-node ip-10-0-1-7
expect_code "remove-node of a node that is not a member" 1 "Node ip-10-9-9-9 does not exist in Kubernetes." on 10.0.1.5 -- microk8s remove-node ip-10-9-9-9
expect_code "remove-node --force of an unreachable voter" 0 "Removing node ip-10-0-1-8" on 10.0.1.5 -- microk8s remove-node ip-10-0-1-8 --force
check "two dqlite members: one voter" "datastore standby nodes: 10.0.1.7:19001" "$(on 10.0.1.5 -- microk8s status)"
log=$(cluster_file i-cp0 removals.log | cut -d' ' -f2-)
check "removals log, in order" "ip-10-0-1-8 10.0.1.8 control-plane - rejected unreachable-voter 10.0.1.5
ip-10-0-1-7 10.0.1.7 control-plane - rejected registered-with-dqlite 10.0.1.5
ip-10-9-9-9 - - - rejected not-a-member 10.0.1.5
ip-10-0-1-8 10.0.1.8 control-plane --force removed - 10.0.1.5" "$log"
check "leave of the only voter" "3" "$(on 10.0.1.5 -- 'microk8s leave; echo $?' 2>&1 | tail -n 1)"

# Quorum: three voters, two unreachable: dqlite has no leader, nothing can be removed.
check "control plane 4 joins" "MECPLANE_RESULT join=joined" "$(join_node 10.0.1.9 control-plane)"
set_state i-cp1 stopped; set_state i-cp3 terminated
expect_code "remove-node without quorum" 2 "no available dqlite leader" on 10.0.1.5 -- microk8s remove-node ip-10-0-1-7 --force
set_state i-cp1 running; set_state i-cp3 running

# leave: the datastore node hands the shared state over; the Node object stays until remove-node.
ca=$(on 10.0.1.5 -- microk8s config | grep certificate-authority-data)
check "the datastore node leaves an HA cluster" "Generating new cluster certificates." "$(on 10.0.1.5 -- microk8s leave)"
check "the cluster goes on from another control plane" "ip-10-0-1-5   NotReady" "$(on 10.0.1.7 -- microk8s kubectl get nodes)"
check "same CA after the hand-over" "$ca" "$(on 10.0.1.7 -- microk8s config)"
check "a node that left needs no --force" "Removing node ip-10-0-1-5" "$(on 10.0.1.7 -- microk8s remove-node ip-10-0-1-5)"
check "removals log moved with the cluster" "ip-10-0-1-5 10.0.1.5 control-plane - left - 10.0.1.5" "$(cluster_file i-cp1 removals.log)"
check "worker leaves" "Generating new cluster certificates." "$(on 10.0.1.6 -- microk8s leave)"
check "a worker that left is removed without --force" "Removing node ip-10-0-1-6" "$(on 10.0.1.7 -- microk8s remove-node ip-10-0-1-6)"

# node_dies: the node dies during snap refresh: it never finishes and the node stops answering.
check "control plane 1 joins again" "MECPLANE_RESULT join=joined" "$(join_node 10.0.1.5 control-plane 10.0.1.7 2>&1)" || true
rc=0; timeout 3 bash -c "$(declare -f on); $(declare -p ID work stand_ins); on 10.0.1.9 MECPLANE_SIM_FAULTS=node_dies -- snap refresh microk8s --channel=1.33/stable" >/dev/null 2>&1 || rc=$?
check "node_dies: the refresh never finishes" "124" "$rc"
[[ -e $work/instances/i-cp3/dead ]] || { echo "FAIL - node_dies wrote no dead marker"; failures=$((failures + 1)); }
check "node_dies: the cluster sees it NotReady" "ip-10-0-1-9   NotReady" "$(on 10.0.1.7 -- microk8s kubectl get nodes)"
check "node_dies: the refresh did not happen" "1.32/stable" "$(cat "$work/instances/i-cp3/var/lib/snapd-sim/microk8s/channel")"

if (( failures )); then echo "$failures check(s) failed"; exit 1; fi
echo "all node script checks passed"
