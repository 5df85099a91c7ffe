# shellcheck shell=bash
# Settings and tools shared by infra/deploy.sh and infra/destroy.sh (sourced, not run).
#
# Every setting comes from a MECPLANE_* variable, or else samconfig.toml / the template default.
# infra/README.md lists them. (The IEC Type 2 Terraform blueprint's TF_VAR_* variables describe a
# cluster, not this stack: `mecctl create NAME --from-tf-vars` reads them.)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MECPLANE_DEPLOY_VENV:-$ROOT/.venv-deploy}"
# Where SAM looks by default (next to the template); git-ignored: it names an account's bucket.
SAMCONFIG="${MECPLANE_SAMCONFIG:-$ROOT/infra/samconfig.toml}"
export SAM_CLI_TELEMETRY=0

# A region list as CloudFormation wants it: "a,b". Accepts "a,b", "a b" and Terraform's
# '["a", "b"]'.
region_list() {
    local v="$1"
    v="${v//[\[\]\"\' ]/,}"
    v="$(tr -s ',' <<<"$v")"
    v="${v#,}"
    printf '%s' "${v%,}"
}

STACK_NAME="${MECPLANE_STACK_NAME:-mecplane}"
REGION="${MECPLANE_REGION:-${AWS_REGION:-${AWS_DEFAULT_REGION:-}}}"
ALLOWED_REGIONS="$(region_list "${MECPLANE_ALLOWED_REGIONS:-}")"
NAME_PREFIX="${MECPLANE_NAME_PREFIX:-}"
DEFAULT_INSTANCE_TYPE="${MECPLANE_DEFAULT_INSTANCE_TYPE:-}"
AMI_PARAMETER_PREFIX="${MECPLANE_AMI_PARAMETER_PREFIX:-}"
LOG_RETENTION_DAYS="${MECPLANE_LOG_RETENTION_DAYS:-}"
# Cost guardrails and access (see infra/README.md, Settings).
ALLOWED_INSTANCE_TYPES="$(region_list "${MECPLANE_ALLOWED_INSTANCE_TYPES:-}")"
MAX_ROOT_VOLUME_GIB="${MECPLANE_MAX_ROOT_VOLUME_GIB:-}"
MAX_NODES_PER_CLUSTER="${MECPLANE_MAX_NODES_PER_CLUSTER:-}"
MAX_CLUSTERS_PER_PRINCIPAL="${MECPLANE_MAX_CLUSTERS_PER_PRINCIPAL:-}"
OWN_CLUSTERS_ONLY="${MECPLANE_OWN_CLUSTERS_ONLY:-}"
RECONCILE_PRINCIPALS="$(region_list "${MECPLANE_RECONCILE_PRINCIPALS:-}")"
AMI_OWNERS="$(region_list "${MECPLANE_AMI_OWNERS:-}")"
PROFILE="${MECPLANE_PROFILE:-${AWS_PROFILE:-}}"

# The options every sam command gets from the settings above.
common_options() {
    local opts=(--stack-name "$STACK_NAME")
    [[ -n "$REGION" ]] && opts+=(--region "$REGION")
    [[ -n "$PROFILE" ]] && opts+=(--profile "$PROFILE")
    # Always named, so --guided saves where later runs read (a missing file is not an error).
    opts+=(--config-file "$SAMCONFIG")
    printf '%s\n' "${opts[@]}"
}

# Template parameters set through the environment (the rest keep samconfig's or the defaults).
parameter_overrides() {
    local p=()
    [[ -n "$NAME_PREFIX" ]] && p+=("NamePrefix=$NAME_PREFIX")
    [[ -n "$ALLOWED_REGIONS" ]] && p+=("AllowedRegions=$ALLOWED_REGIONS")
    [[ -n "$DEFAULT_INSTANCE_TYPE" ]] && p+=("DefaultInstanceType=$DEFAULT_INSTANCE_TYPE")
    [[ -n "$AMI_PARAMETER_PREFIX" ]] && p+=("AmiParameterPrefix=$AMI_PARAMETER_PREFIX")
    [[ -n "$LOG_RETENTION_DAYS" ]] && p+=("LogRetentionDays=$LOG_RETENTION_DAYS")
    [[ -n "$ALLOWED_INSTANCE_TYPES" ]] && p+=("AllowedInstanceTypes=$ALLOWED_INSTANCE_TYPES")
    [[ -n "$MAX_ROOT_VOLUME_GIB" ]] && p+=("MaxRootVolumeGib=$MAX_ROOT_VOLUME_GIB")
    [[ -n "$MAX_NODES_PER_CLUSTER" ]] && p+=("MaxNodesPerCluster=$MAX_NODES_PER_CLUSTER")
    [[ -n "$MAX_CLUSTERS_PER_PRINCIPAL" ]] && p+=("MaxClustersPerPrincipal=$MAX_CLUSTERS_PER_PRINCIPAL")
    [[ -n "$OWN_CLUSTERS_ONLY" ]] && p+=("OwnClustersOnly=$OWN_CLUSTERS_ONLY")
    [[ -n "$RECONCILE_PRINCIPALS" ]] && p+=("ReconcilePrincipals=$RECONCILE_PRINCIPALS")
    [[ -n "$AMI_OWNERS" ]] && p+=("AmiOwners=$AMI_OWNERS")
    # Nothing set prints nothing (an empty line would reach sam as an empty override).
    [[ ${#p[@]} -eq 0 ]] || printf '%s\n' "${p[@]}"
}

# The deploy tools in $VENV, installed (again) when infra/requirements-deploy.txt changed: by the
# pinned uv the Makefile installs for every venv (.venv-uv; `make sam-build`, `make deploy`), else
# (a script run by hand before any make) by pip, ~50 s slower.
ensure_tools() {
    local req="$ROOT/infra/requirements-deploy.txt" stamp="$VENV/.requirements.sha256" sum
    local uv="$ROOT/.venv-uv/bin/uv"
    sum="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ ! -x "$VENV/bin/sam" || "$(cat "$stamp" 2>/dev/null)" != "$sum" ]]; then
        echo "==> installing the deploy tools into $VENV (aws-sam-cli, cargo-lambda, ziglang)"
        python3 -m venv "$VENV"
        if [[ -x "$uv" ]]; then
            "$uv" pip install --quiet --python "$VENV/bin/python" -r "$req"
        else
            "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
        fi
        echo "$sum" >"$stamp"
    fi
    # cargo-lambda, sam and the python that runs `python -m ziglang` (cargo-lambda's zig).
    export PATH="$VENV/bin:$PATH"
}
