#!/usr/bin/env bash
# mecplane-script: join
# Installs MicroK8s (same channel as the cluster) and joins this node to the cluster at JOIN_ADDRESS,
# as a worker (--worker) or as a control-plane node. The join token comes sealed to this node's
# one-time join key (made by the join-key script; format in mecplane/src/sealed.rs): only this node
# can open it, it is never printed, and the key is deleted once a join was attempted with it (the
# token is single-use: an attempt consumes it, even a failed one). Safe to run twice: a node that
# is already a member reports join=already-member.
# Environment: MK8S_CHANNEL, JOIN_ADDRESS (<ip>:25000), SEALED_TOKEN (the MECPLANE_SEALED line the
# issue-token command printed on the control plane at JOIN_ADDRESS), NODE_ROLE (control-plane|worker),
# WAIT_TIMEOUT (seconds), EXTRA_SANS (comma list, optional: a control plane's extra certificate names,
# written to the launch configuration before the install, as the bootstrap does).
set -euo pipefail

fail() { echo "join: $*" >&2; exit 1; }
for var in MK8S_CHANNEL JOIN_ADDRESS SEALED_TOKEN NODE_ROLE WAIT_TIMEOUT; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
[[ $MK8S_CHANNEL =~ ^[0-9]+\.[0-9]+/(stable|candidate|beta|edge)$ ]] || fail "MK8S_CHANNEL '$MK8S_CHANNEL' is not <major>.<minor>/<risk>"
[[ $JOIN_ADDRESS =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}:25000$ ]] || fail "JOIN_ADDRESS '$JOIN_ADDRESS' is not <ip>:25000"
b64='[A-Za-z0-9+/]+=*'
[[ $SEALED_TOKEN =~ ^MECPLANE_SEALED\ v1\ $b64\ $b64\ $b64\ $b64$ ]] || fail "SEALED_TOKEN is not a MECPLANE_SEALED v1 line"
[[ $NODE_ROLE == control-plane || $NODE_ROLE == worker ]] || fail "NODE_ROLE '$NODE_ROLE' is not control-plane or worker"
[[ $WAIT_TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "WAIT_TIMEOUT '$WAIT_TIMEOUT' is not a positive number of seconds"
EXTRA_SANS=${EXTRA_SANS:-}
[[ -z $EXTRA_SANS || $EXTRA_SANS =~ ^[A-Za-z0-9.:-]+(,[A-Za-z0-9.:-]+)*$ ]] || fail "EXTRA_SANS '$EXTRA_SANS' is not a comma list of IPs or DNS names"
JOIN_IP=${JOIN_ADDRESS%:*}
LAUNCH_CONFIG=/var/snap/microk8s/common/.microk8s.yaml
KEY_FILE=/var/lib/mecplane/join-key.pem
hex() { od -An -v -tx1 | tr -d ' \n'; }

# Prints the token sealed in SEALED_TOKEN, opened with this node's join key (MAC checked first).
open_token() {
  local work wrapped iv ct mac want token
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" RETURN
  read -r _ _ wrapped iv ct mac <<<"$SEALED_TOKEN"
  base64 -d <<<"$wrapped" >"$work/wrapped" 2>/dev/null || { echo "the sealed keys are not base64" >&2; return 1; }
  base64 -d <<<"$iv" >"$work/iv" 2>/dev/null || { echo "the IV is not base64" >&2; return 1; }
  base64 -d <<<"$ct" >"$work/ct" 2>/dev/null || { echo "the ciphertext is not base64" >&2; return 1; }
  if ! openssl pkeyutl -decrypt -inkey "$KEY_FILE" -pkeyopt rsa_padding_mode:oaep \
    -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in "$work/wrapped" -out "$work/keys" 2>/dev/null ||
    [[ $(wc -c <"$work/keys") != 64 ]]; then
    echo "the token is not sealed to this node's join key" >&2
    return 1
  fi
  want=$(cat "$work/iv" "$work/ct" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(tail -c 32 "$work/keys" | hex)" -binary | base64 -w0)
  [[ $want == "$mac" ]] || { echo "the sealed token failed its MAC check" >&2; return 1; }
  token=$(openssl enc -d -aes-256-ctr -K "$(head -c 32 "$work/keys" | hex)" -iv "$(hex <"$work/iv")" -in "$work/ct") ||
    { echo "openssl enc failed" >&2; return 1; }
  [[ $token =~ ^[A-Za-z0-9]{32,}$ ]] || { echo "the sealed secret is not a join token" >&2; return 1; }
  printf '%s\n' "$token"
}

# >>> pod-security: the same block in bootstrap.sh and join.sh (mecplane/src/scripts.rs checks it).
# Pod Security admission on this node's API server. MicroK8s (1.28-1.33) starts kube-apiserver with
# --admission-control-config-file=${SNAP_DATA}/args/admission-control-config-file.yaml, which
# configures EventRateLimit only: the launch configuration (read at install, before any service
# starts; extraConfigFiles and extraKubeAPIServerArgs exist from MicroK8s 1.27) writes
# $SNAP_DATA/args/mecplane-admission.yaml, the same EventRateLimit entry plus the PodSecurity
# plugin's configuration, and points the API server at it. POD_SECURITY is enforced, audited and
# warned about in every namespace but those MicroK8s add-ons install into (the core add-ons'
# manifests and enable scripts, 1.28-1.33, and the community add-ons mecplane accepts):
# kube-system (dns, ha-cluster/calico, hostpath-storage, metrics-server, kube-ovn), ingress,
# metallb-system, cert-manager, observability (also prometheus), container-registry (registry),
# kubernetes-dashboard (dashboard), minio-operator (minio), rook-ceph and rook-ceph-external
# (rook-ceph), mayastor, gpu-operator-resources (gpu, nvidia), nvidia-network-operator (nvidia),
# istio-system (istio) and nfs-server-provisioner (nfs).
POD_SECURITY=${POD_SECURITY:-baseline}
[[ $POD_SECURITY =~ ^(privileged|baseline|restricted)$ ]] || fail "POD_SECURITY '$POD_SECURITY' is not privileged, baseline or restricted"
PSA_EXEMPT=(kube-system ingress metallb-system cert-manager observability container-registry
  kubernetes-dashboard minio-operator rook-ceph rook-ceph-external mayastor gpu-operator-resources
  nvidia-network-operator istio-system nfs-server-provisioner)
# Prints the launch configuration's keys that set it up.
pod_security_launch_config() {
  local ns
  # ${SNAP_DATA} stays for MicroK8s to expand, as in its own arguments.
  cat <<EOF_PSA
extraKubeAPIServerArgs:
  --admission-control-config-file: "\${SNAP_DATA}/args/mecplane-admission.yaml"
extraConfigFiles:
  mecplane-admission.yaml: |
    apiVersion: apiserver.config.k8s.io/v1
    kind: AdmissionConfiguration
    plugins:
      - name: EventRateLimit
        path: eventconfig.yaml
      - name: PodSecurity
        configuration:
          apiVersion: pod-security.admission.config.k8s.io/v1
          kind: PodSecurityConfiguration
          defaults:
            enforce: $POD_SECURITY
            enforce-version: latest
            audit: $POD_SECURITY
            audit-version: latest
            warn: $POD_SECURITY
            warn-version: latest
          exemptions:
            usernames: []
            runtimeClasses: []
            namespaces:
EOF_PSA
  for ns in "${PSA_EXEMPT[@]}"; do echo "              - $ns"; done
}
# <<< pod-security

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
  if [[ -n $EXTRA_SANS || $NODE_ROLE == control-plane ]]; then
    # The launch configuration is read once, at install time: write it first. Only a control
    # plane runs an API server, so only its launch configuration sets up Pod Security admission.
    mkdir -p "$(dirname "$LAUNCH_CONFIG")"
    {
      echo "---"
      echo "version: 0.1.0"
      if [[ -n $EXTRA_SANS ]]; then
        echo "extraSANs:"
        IFS=, read -ra items <<<"$EXTRA_SANS"
        for item in "${items[@]}"; do echo "  - $item"; done
      fi
      if [[ $NODE_ROLE == control-plane ]]; then pod_security_launch_config; fi
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
  rm -f "$KEY_FILE"
  echo "MECPLANE_RESULT join=already-member"
  exit 0
fi

[[ -f $KEY_FILE ]] || fail "this node has no join key ($KEY_FILE): the join-key command makes it, and a join attempt uses it up"
# One key, one token, one attempt: whatever happens next, the key is gone.
trap 'rm -f "$KEY_FILE"' EXIT
token=$(open_token) || fail "cannot open SEALED_TOKEN"
join_args=("$JOIN_ADDRESS/$token")
if [[ $NODE_ROLE == worker ]]; then
  join_args+=(--worker)
fi
# What microk8s join prints never carries the token into the command output.
if ! out=$(microk8s join "${join_args[@]}" 2>&1); then
  printf '%s\n' "${out//$token/[redacted]}" >&2
  fail "microk8s join $JOIN_ADDRESS as $NODE_ROLE failed"
fi
printf '%s\n' "${out//$token/[redacted]}"
if [[ $NODE_ROLE == control-plane ]]; then
  microk8s status --wait-ready --timeout "$WAIT_TIMEOUT" >/dev/null || fail "microk8s did not become ready within ${WAIT_TIMEOUT}s after joining"
fi
echo "MECPLANE_RESULT join=joined"
