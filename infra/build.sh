#!/usr/bin/env bash
# `make sam-build` (and the first step of `make deploy`): build every function of
# infra/template.yaml for arm64 with `sam build` (cargo lambda, release, zig; no Docker) into
# .aws-sam/build, installing the deploy tools while the binary compiles. Needs no AWS credentials.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    echo "==> adding the Rust target aarch64-unknown-linux-gnu (the functions run on arm64)"
    rustup target add aarch64-unknown-linux-gnu
fi

started=$SECONDS
# The compile starts while aws-sam-cli installs: the command `sam build` runs for this template
# (aws-lambda-builders' rust-cargolambda workflow, provided.al2023 on arm64, in the CodeUri, into
# the workspace's target/), so the one that sam runs next finds the binary fresh and only copies it.
ensure_build_tools
echo "==> cargo lambda build --release --arm64 --bin bootstrap (the one binary of every function), while the deploy tools install"
(cd functions && cargo lambda build --release --arm64 --bin bootstrap) &
compiling=$!
trap 'kill "$compiling" 2>/dev/null || true' EXIT
ensure_tools
wait "$compiling"
trap - EXIT

echo "==> sam build (one bootstrap binary for every function: one build and one link, copied 27 times)"
sam build --template infra/template.yaml --build-dir .aws-sam/build --cache-dir .aws-sam/cache "$@"
echo "==> built in $((SECONDS - started)) s"
