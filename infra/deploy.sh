#!/usr/bin/env bash
# `make deploy`: build the one Rust binary of the 22 functions for arm64 and deploy the stack with AWS SAM.
#
# The first deploy (no samconfig.toml) runs `sam deploy --guided`, which asks for the settings and
# saves them in samconfig.toml; later deploys run `sam deploy` with it. Without a terminal (CI) the
# first deploy is not guided: it takes the settings from the environment and saves them instead.
# Settings: infra/README.md. Needs AWS credentials for the target account (the usual AWS_* variables
# or a profile).
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

"$ROOT/infra/build.sh"

mapfile -t common < <(common_options)
mapfile -t overrides < <(parameter_overrides)
first_unguided=0
if [[ ! -f "$SAMCONFIG" ]] && ! [[ -t 0 && -z "${CI:-}" ]]; then
    first_unguided=1
    if [[ -z "$REGION" ]]; then
        echo "deploy: no terminal for --guided and no region: set MECPLANE_REGION (or AWS_REGION)" >&2
        exit 2
    fi
    # Clusters default to the stack's region, so it must be allowed.
    [[ -z "$ALLOWED_REGIONS" ]] && overrides+=("AllowedRegions=$REGION")
fi
override_args=()
[[ ${#overrides[@]} -gt 0 ]] && override_args=(--parameter-overrides "${overrides[@]}")

deploy=(sam deploy --template-file .aws-sam/build/template.yaml "${common[@]}" "${override_args[@]}")
if [[ -f "$SAMCONFIG" ]]; then
    echo "==> sam deploy (settings from $SAMCONFIG and the environment)"
    "${deploy[@]}" --no-fail-on-empty-changeset
elif [[ $first_unguided -eq 0 ]]; then
    echo "==> first deploy: sam deploy --guided (answers are saved to $SAMCONFIG)"
    "${deploy[@]}" --guided --capabilities CAPABILITY_IAM
else
    echo "==> first deploy without a terminal: settings from the environment, saved to $SAMCONFIG"
    "${deploy[@]}" --capabilities CAPABILITY_IAM --resolve-s3 --no-confirm-changeset --save-params
fi

echo "==> stack outputs"
sam list stack-outputs "${common[@]}" --output table
