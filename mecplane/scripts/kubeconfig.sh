#!/usr/bin/env bash
# mecplane-script: kubeconfig
# Reads the cluster's kubeconfig on the first control-plane node and prints it sealed to the
# stage's one-time public key, never in clear: SSM keeps command output for 30 days, readable by
# anyone allowed ssm:GetCommandInvocation. Format and algorithms: mecplane/src/sealed.rs (RSA-OAEP
# SHA-256 wraps a random AES-256 and HMAC-SHA-256 key; AES-256-CTR; HMAC over IV and ciphertext).
# Environment: TRANSPORT_KEY (base64 DER SubjectPublicKeyInfo of an RSA key).
set -euo pipefail

fail() { echo "kubeconfig: $*" >&2; exit 1; }
[[ -n ${TRANSPORT_KEY:-} ]] || fail "required environment variable TRANSPORT_KEY is not set"
[[ $TRANSPORT_KEY =~ ^[A-Za-z0-9+/]+=*$ ]] || fail "TRANSPORT_KEY is not base64"
command -v openssl >/dev/null || fail "openssl is not installed"

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hex() { od -An -v -tx1 | tr -d ' \n'; }

config=$(microk8s config) || fail "microk8s config failed"
[[ $config == *"server: https://"* ]] || fail "microk8s config printed no server address"

printf '%s' "$TRANSPORT_KEY" | base64 -d >"$work/key.der" 2>/dev/null || fail "TRANSPORT_KEY is not base64"
openssl rand 64 >"$work/keys"
openssl rand 16 >"$work/iv"
printf '%s\n' "$config" |
  openssl enc -aes-256-ctr -K "$(head -c 32 "$work/keys" | hex)" -iv "$(hex <"$work/iv")" -out "$work/ct" ||
  fail "openssl enc failed"
cat "$work/iv" "$work/ct" |
  openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(tail -c 32 "$work/keys" | hex)" -binary >"$work/mac" ||
  fail "openssl dgst failed"
openssl pkeyutl -encrypt -pubin -keyform DER -inkey "$work/key.der" \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 \
  -in "$work/keys" -out "$work/wrapped" 2>/dev/null || fail "TRANSPORT_KEY is not a usable RSA public key"

b64() { base64 -w0 "$1"; }
echo "MECPLANE_SEALED v1 $(b64 "$work/wrapped") $(b64 "$work/iv") $(b64 "$work/ct") $(b64 "$work/mac")"
echo "MECPLANE_RESULT kubeconfig=sealed"
