#!/usr/bin/env bash
# mecplane-script: bootstrap
# Installs MicroK8s on the first control-plane node. Safe to run twice.
# Environment: MK8S_CHANNEL (e.g. 1.32/stable), MK8S_ADDONS (space-separated list of add-ons, each
# `name` or `name:arguments`, as `metallb:10.0.0.10-10.0.0.20,10.0.1.0/24`: the arguments, commas
# included, are one argument of `microk8s enable`), EXTRA_SANS (comma list), WAIT_TIMEOUT (seconds),
# POD_SECURITY (privileged|baseline|restricted, default baseline: the Pod Security Standard the API
# server enforces, below).
set -euo pipefail

fail() { echo "bootstrap: $*" >&2; exit 1; }
for var in MK8S_CHANNEL WAIT_TIMEOUT; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
MK8S_ADDONS=${MK8S_ADDONS:-}
EXTRA_SANS=${EXTRA_SANS:-}
[[ $MK8S_CHANNEL =~ ^[0-9]+\.[0-9]+/(stable|candidate|beta|edge)$ ]] || fail "MK8S_CHANNEL '$MK8S_CHANNEL' is not <major>.<minor>/<risk>"
[[ $WAIT_TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "WAIT_TIMEOUT '$WAIT_TIMEOUT' is not a positive number of seconds"
ADDON_RE='^[a-z0-9-]+(:[A-Za-z0-9=_.,/:-]+)?$'
read -ra ADDONS <<<"$MK8S_ADDONS"
for addon in "${ADDONS[@]}"; do
  [[ $addon =~ $ADDON_RE ]] || fail "MK8S_ADDONS item '$addon' is not an add-on name with optional :arguments"
done
[[ -z $EXTRA_SANS || $EXTRA_SANS =~ ^[A-Za-z0-9.:-]+(,[A-Za-z0-9.:-]+)*$ ]] || fail "EXTRA_SANS '$EXTRA_SANS' is not a comma list of IPs or DNS names"

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

LAUNCH_CONFIG=/var/snap/microk8s/common/.microk8s.yaml

installed_channel() {
  # "Tracking" column of `snap list microk8s`; empty when the snap is not installed.
  { snap list microk8s 2>/dev/null || true; } | awk 'NR == 2 { print $4 }'
}

write_launch_config() {
  local item
  mkdir -p "$(dirname "$LAUNCH_CONFIG")"
  {
    echo "---"
    echo "version: 0.1.0"
    if [[ -n $EXTRA_SANS ]]; then
      echo "extraSANs:"
      IFS=, read -ra items <<<"$EXTRA_SANS"
      for item in "${items[@]}"; do echo "  - $item"; done
    fi
    if (( ${#ADDONS[@]} )); then
      # MicroK8s runs `microk8s enable <name> <args...>` for each entry.
      echo "addons:"
      for item in "${ADDONS[@]}"; do
        echo "  - name: ${item%%:*}"
        if [[ $item == *:* ]]; then echo "    args: [\"${item#*:}\"]"; fi
      done
    fi
    pod_security_launch_config
  } >"$LAUNCH_CONFIG.tmp"
  mv "$LAUNCH_CONFIG.tmp" "$LAUNCH_CONFIG"
}

current=$(installed_channel)
if [[ -z $current ]]; then
  # The launch configuration is read once, at install time: write it first.
  write_launch_config
  snap install microk8s --classic --channel="$MK8S_CHANNEL"
elif [[ $current != "$MK8S_CHANNEL" ]]; then
  fail "microk8s is already installed from channel $current, not $MK8S_CHANNEL; refusing to change it"
else
  echo "microk8s $current is already installed"
fi
snap refresh --hold microk8s
microk8s status --wait-ready --timeout "$WAIT_TIMEOUT" >/dev/null || fail "microk8s did not become ready within ${WAIT_TIMEOUT}s"
echo "MECPLANE_RESULT bootstrap=ok channel=$MK8S_CHANNEL"
