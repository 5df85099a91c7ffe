#!/usr/bin/env bash
# mecplane-script: addons
# Changes the cluster's add-ons from a control-plane node: disables each name in DISABLE, then enables
# each entry in ENABLE (`name` or `name:arguments`; the arguments, commas included, are one argument of
# `microk8s enable`, as on create). Safe to run twice: MicroK8s says an add-on is already enabled or
# disabled and succeeds.
# Environment: DISABLE, ENABLE (space-separated), WAIT_TIMEOUT (seconds).
set -euo pipefail

fail() { echo "addons: $*" >&2; exit 1; }
[[ ${WAIT_TIMEOUT:-} =~ ^[1-9][0-9]*$ ]] || fail "WAIT_TIMEOUT '${WAIT_TIMEOUT:-}' is not a positive number of seconds"
read -ra disable <<<"${DISABLE:-}"
read -ra enable <<<"${ENABLE:-}"
(( ${#disable[@]} + ${#enable[@]} )) || fail "neither DISABLE nor ENABLE names an add-on"
for name in "${disable[@]}"; do
  [[ $name =~ ^[a-z0-9-]+$ ]] || fail "DISABLE item '$name' is not an add-on name"
done
for addon in "${enable[@]}"; do
  [[ $addon =~ ^[a-z0-9-]+(:[A-Za-z0-9=_.,/:-]+)?$ ]] || fail "ENABLE item '$addon' is not an add-on name with optional :arguments"
done

microk8s status --wait-ready --timeout "$WAIT_TIMEOUT" >/dev/null || fail "microk8s was not ready within ${WAIT_TIMEOUT}s"
for name in "${disable[@]}"; do
  microk8s disable "$name" || fail "microk8s disable $name failed"
done
for addon in "${enable[@]}"; do
  if [[ $addon == *:* ]]; then
    microk8s enable "${addon%%:*}" "${addon#*:}" || fail "microk8s enable ${addon%%:*} failed"
  else
    microk8s enable "$addon" || fail "microk8s enable $addon failed"
  fi
done
echo "MECPLANE_RESULT addons=ok disabled=${#disable[@]} enabled=${#enable[@]}"
