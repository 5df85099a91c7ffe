#!/usr/bin/env bash
# mecplane-script: join-key
# Runs on a node before it joins a cluster: makes its one-time join key, an RSA-2048 private key in
# a root-only file that never leaves the node, and prints only the public half. The member control
# plane seals a new join token to it (issue-token) and the join script opens that token with the
# private key, then deletes it. Nothing printed here is secret. Safe to run twice: an existing key
# is kept and its public half printed again.
# Environment: none.
set -euo pipefail

fail() { echo "join-key: $*" >&2; exit 1; }
command -v openssl >/dev/null || fail "openssl is not installed"
KEY_DIR=/var/lib/mecplane
KEY_FILE=$KEY_DIR/join-key.pem

umask 077
mkdir -p "$KEY_DIR"
chmod 700 "$KEY_DIR"
if ! openssl pkey -in "$KEY_FILE" -noout 2>/dev/null; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEY_FILE.tmp" 2>/dev/null ||
    fail "openssl genpkey failed"
  mv "$KEY_FILE.tmp" "$KEY_FILE"
fi
public=$(openssl pkey -in "$KEY_FILE" -pubout -outform DER | base64 -w0) ||
  fail "the join key in $KEY_FILE is unreadable"
echo "MECPLANE_RESULT join-key=ready public-key=$public"
