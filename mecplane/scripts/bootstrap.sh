#!/usr/bin/env bash
# mecplane-script: bootstrap
# Installs MicroK8s on the first control-plane node. Safe to run twice.
# Environment: MK8S_CHANNEL (e.g. 1.32/stable), MK8S_ADDONS (space-separated list of add-ons, each
# `name` or `name:arguments`, as `metallb:10.0.0.10-10.0.0.20,10.0.1.0/24`: the arguments, commas
# included, are one argument of `microk8s enable`), EXTRA_SANS (comma list), WAIT_TIMEOUT (seconds).
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
