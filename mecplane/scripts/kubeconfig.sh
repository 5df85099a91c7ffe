#!/usr/bin/env bash
# mecplane-script: kubeconfig
# Prints the cluster's kubeconfig from the first control-plane node (this script's stdout is secret).
set -euo pipefail

fail() { echo "kubeconfig: $*" >&2; exit 1; }
config=$(microk8s config) || fail "microk8s config failed"
[[ $config == *"server: https://"* ]] || fail "microk8s config printed no server address"
printf '%s\n' "$config"
echo "MECPLANE_RESULT kubeconfig=ok"
