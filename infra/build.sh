#!/usr/bin/env bash
# `make sam-build` (and the first step of `make deploy`): install the deploy tools, then build every
# function of infra/template.yaml for arm64 with `sam build` (cargo lambda, release, zig; no Docker)
# into .aws-sam/build. Needs no AWS credentials.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

ensure_tools

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    echo "==> adding the Rust target aarch64-unknown-linux-gnu (the functions run on arm64)"
    rustup target add aarch64-unknown-linux-gnu
fi

echo "==> sam build (cargo lambda, release, arm64: one bootstrap binary for every function, one build and one link)"
started=$SECONDS
sam build --template infra/template.yaml --build-dir .aws-sam/build --cache-dir .aws-sam/cache "$@"
echo "==> built in $((SECONDS - started)) s"
