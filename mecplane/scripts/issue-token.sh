#!/usr/bin/env bash
# mecplane-script: issue-token
# Registers a join token chosen by the control plane on the first control-plane node. Never prints
# the token. Safe to run twice (registering the same token again only renews its lifetime).
# Environment: JOIN_TOKEN (32 alphanumeric characters), TOKEN_TTL (seconds, -1 = single use).
set -euo pipefail

fail() { echo "issue-token: $*" >&2; exit 1; }
for var in JOIN_TOKEN TOKEN_TTL; do
  [[ -n ${!var:-} ]] || fail "required environment variable $var is not set"
done
[[ $JOIN_TOKEN =~ ^[A-Za-z0-9]{32}$ ]] || fail "JOIN_TOKEN is not 32 alphanumeric characters"
[[ $TOKEN_TTL =~ ^(-1|[1-9][0-9]*)$ ]] || fail "TOKEN_TTL '$TOKEN_TTL' is not -1 or a positive number of seconds"

microk8s status --wait-ready --timeout 60 >/dev/null || fail "microk8s is not ready on this node"
# add-node echoes the token and join URLs: keep them out of the command output.
if ! microk8s add-node --token "$JOIN_TOKEN" --token-ttl "$TOKEN_TTL" --format json >/dev/null; then
  fail "microk8s add-node failed"
fi
echo "MECPLANE_RESULT token=issued"
