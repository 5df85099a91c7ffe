#!/usr/bin/env bash
# mecplane-script: issue-token
# Runs on a member control plane for one joining node: makes a new random join token here,
# registers it for a single use (`microk8s add-node --token-ttl -1`: the first join attempt with it
# consumes it, whether that join succeeds or not) and prints it only sealed to the joining node's
# one-time public key (JOIN_KEY, printed by that node's join-key command), in the format of
# mecplane/src/sealed.rs: RSA-OAEP SHA-256 wraps a random AES-256 and HMAC-SHA-256 key; AES-256-CTR;
# HMAC over IV and ciphertext. The token is never printed in clear and never travels in a command's
# parameters. Safe to run twice: each run registers and seals a token of its own.
# Environment: JOIN_KEY (base64 DER SubjectPublicKeyInfo of the joining node's RSA key).
set -euo pipefail

fail() { echo "issue-token: $*" >&2; exit 1; }
[[ -n ${JOIN_KEY:-} ]] || fail "required environment variable JOIN_KEY is not set"
[[ $JOIN_KEY =~ ^[A-Za-z0-9+/]+=*$ ]] || fail "JOIN_KEY is not base64"
command -v openssl >/dev/null || fail "openssl is not installed"

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hex() { od -An -v -tx1 | tr -d ' \n'; }

printf '%s' "$JOIN_KEY" | base64 -d >"$work/key.der" 2>/dev/null || fail "JOIN_KEY is not base64"
microk8s status --wait-ready --timeout 60 >/dev/null || fail "microk8s is not ready on this node"

# 32 hexadecimal characters (128 random bits), the shape of the tokens MicroK8s makes itself.
token=$(openssl rand -hex 16)
[[ $token =~ ^[0-9a-f]{32}$ ]] || fail "openssl rand failed"
# Sealed before it is registered: a key that cannot be used leaves no token behind.
openssl rand 64 >"$work/keys"
openssl rand 16 >"$work/iv"
printf '%s' "$token" |
  openssl enc -aes-256-ctr -K "$(head -c 32 "$work/keys" | hex)" -iv "$(hex <"$work/iv")" -out "$work/ct" ||
  fail "openssl enc failed"
cat "$work/iv" "$work/ct" |
  openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(tail -c 32 "$work/keys" | hex)" -binary >"$work/mac" ||
  fail "openssl dgst failed"
openssl pkeyutl -encrypt -pubin -keyform DER -inkey "$work/key.der" \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 \
  -in "$work/keys" -out "$work/wrapped" 2>/dev/null || fail "JOIN_KEY is not a usable RSA public key"

# add-node echoes the token and the join URLs: keep them out of the command output.
if ! err=$(microk8s add-node --token "$token" --token-ttl -1 --format json 2>&1 >/dev/null); then
  fail "microk8s add-node failed: ${err//$token/[redacted]}"
fi
b64() { base64 -w0 "$1"; }
echo "MECPLANE_SEALED v1 $(b64 "$work/wrapped") $(b64 "$work/iv") $(b64 "$work/ct") $(b64 "$work/mac")"
echo "MECPLANE_RESULT token=sealed"
