#!/usr/bin/env bash
# Offline checks of the infrastructure: the SAM template, the state machines, the shell scripts.
#
# Usage: infra/check.sh [CHECK...]     (no argument: every check, in this order)
#   - cfn-lint:             cfn-lint on infra/template.yaml (SAM)
#   - cfn-lint-transformed: aws-sam-translator (infra/transform.py, definitions inlined), then
#                           cfn-lint on the CloudFormation it produces (state machines checked here)
#   - asl:                  asl-validator on every statemachine/*.asl.json, ${...} -> fake ARNs
#   - checkov:              checkov on the SAM and the transformed template (skips: infra/checkov.yaml)
#   - assert:               the project's own assertions (infra/assert_template.py)
#   - shellcheck:           mecplane/scripts/*.sh, local/**/*.sh and infra/**/*.sh
#   - adopt:                infra/tests/test_adopt.py: infra/adopt.py against moto in-process (the
#                           local stack's venv, .venv: `make setup-python`)
#
# Tools (installed by the project, see infra/README.md):
#   python3 -m venv .venv-infra && .venv-infra/bin/pip install -r infra/requirements.txt
#   npm ci            (asl-validator, from package.json / package-lock.json)
#   apt-get install -y shellcheck
#
# MECPLANE_CHECK_ROOT=DIR checks the tree at DIR instead of this repository (the tools still come
# from this repository); infra/tests/test_checks.sh uses it on broken copies.
set -uo pipefail

TOOLS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "${MECPLANE_CHECK_ROOT:-$TOOLS_ROOT}" && pwd)"
VENV="${MECPLANE_INFRA_VENV:-$TOOLS_ROOT/.venv-infra}"
PY="$VENV/bin/python"
TEMPLATE="$ROOT/infra/template.yaml"
ALL_CHECKS=(cfn-lint cfn-lint-transformed asl checkov assert shellcheck adopt)
# infra/adopt.py's test needs moto, which the local stack's venv has (not .venv-infra).
LOCAL_PY="${MECPLANE_VENV:-$TOOLS_ROOT/.venv}/bin/python"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
failed_names=()

# run_check NAME FUNCTION: runs FUNCTION with its output captured; one line per check, the
# captured output (indented) only when it failed.
run_check() {
    local name="$1" fn="$2" out="$WORK/$1.out" started=$SECONDS
    if "$fn" >"$out" 2>&1; then
        passed=$((passed + 1))
        echo "PASS $name ($((SECONDS - started))s)$(summary_line "$out")"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "FAIL $name ($((SECONDS - started))s)"
        sed 's/^/    /' "$out"
    fi
}

# The last line of a passing check that starts with "note:" (e.g. what was skipped).
summary_line() {
    local note
    note="$(grep '^note:' "$1" | tail -n 1 || true)"
    [[ -n "$note" ]] && echo " - ${note#note: }"
    return 0
}

need() {
    if [[ ! -x "$1" ]]; then
        echo "missing tool $1 - $2"
        return 1
    fi
}

check_cfn_lint() {
    need "$VENV/bin/cfn-lint" "install: python3 -m venv .venv-infra && .venv-infra/bin/pip install -r infra/requirements.txt" || return 1
    "$VENV/bin/cfn-lint" -- "$TEMPLATE"
}

# Writes $WORK/transformed.json once; later checks reuse it.
transformed() {
    if [[ ! -s "$WORK/transformed.json" ]]; then
        need "$PY" "install: python3 -m venv .venv-infra && .venv-infra/bin/pip install -r infra/requirements.txt" || return 1
        "$PY" "$TOOLS_ROOT/infra/transform.py" "$TEMPLATE" -o "$WORK/transformed.json" || {
            rm -f "$WORK/transformed.json"
            return 1
        }
    fi
}

check_cfn_lint_transformed() {
    transformed || return 1
    "$VENV/bin/cfn-lint" -- "$WORK/transformed.json"
}

check_asl() {
    local asl="$TOOLS_ROOT/node_modules/.bin/asl-validator" files=() f status=0
    need "$asl" "install: npm ci (in $TOOLS_ROOT)" || return 1
    shopt -s nullglob
    files=("$ROOT"/statemachine/*.asl.json)
    shopt -u nullglob
    if [[ ${#files[@]} -eq 0 ]]; then
        echo "no statemachine/*.asl.json in $ROOT (the template needs create-cluster and delete-cluster)"
        return 1
    fi
    for f in "${files[@]}"; do
        local fake="$WORK/${f##*/}"
        # ${Name} -> a fake ARN, the way the DefinitionSubstitutions fill them in at deploy time.
        "$PY" - "$f" "$fake" <<'EOF' || { status=1; continue; }
import re, sys
text = open(sys.argv[1]).read()
def fake(m):
    name = m.group(1)
    if name.endswith("FunctionArn"):
        return f"arn:aws:lambda:us-east-1:123456789012:function:{name[:-3]}"
    if name.endswith("Arn"):
        return f"arn:aws:states:us-east-1:123456789012:stateMachine:{name[:-3]}"
    return f"fake-{name}"
open(sys.argv[2], "w").write(re.sub(r"\$\{([^}]*)\}", fake, text))
EOF
        if "$asl" --json-path "$fake"; then
            echo "$(basename "$f"): valid"
        else
            echo "$(basename "$f"): INVALID"
            status=1
        fi
    done
    return $status
}

check_checkov() {
    need "$VENV/bin/checkov" "install: .venv-infra/bin/pip install -r infra/requirements.txt" || return 1
    transformed || { echo "the transformed template is needed (see cfn-lint-transformed)"; return 1; }
    # checkov names files relative to the current directory; run where the template is.
    (cd "$ROOT" && "$VENV/bin/checkov" --config-file "$TOOLS_ROOT/infra/checkov.yaml" \
        -f infra/template.yaml -f "$WORK/transformed.json")
}

check_assert() {
    need "$PY" "install: python3 -m venv .venv-infra && .venv-infra/bin/pip install -r infra/requirements.txt" || return 1
    "$PY" "$TOOLS_ROOT/infra/assert_template.py" "$TEMPLATE" --contract "$ROOT/docs/architecture.md"
}

check_shellcheck() {
    local files=()
    shopt -s nullglob globstar
    files=("$ROOT"/mecplane/scripts/*.sh "$ROOT"/local/**/*.sh "$ROOT"/infra/**/*.sh)
    shopt -u nullglob globstar
    if [[ ${#files[@]} -eq 0 ]]; then
        echo "note: no mecplane/scripts/*.sh, local/**/*.sh or infra/**/*.sh yet - nothing to check"
        return 0
    fi
    if ! command -v shellcheck >/dev/null; then
        echo "missing tool shellcheck - install: apt-get install -y shellcheck"
        return 1
    fi
    shellcheck --external-sources -- "${files[@]}" && echo "note: ${#files[@]} script(s) clean"
}

check_adopt() {
    need "$LOCAL_PY" "install: make setup-python (the local stack's venv, with moto)" || return 1
    "$LOCAL_PY" "$TOOLS_ROOT/infra/tests/test_adopt.py" "$ROOT/infra/adopt.py"
}

fn_for() {
    case "$1" in
        cfn-lint) echo check_cfn_lint ;;
        cfn-lint-transformed) echo check_cfn_lint_transformed ;;
        asl) echo check_asl ;;
        checkov) echo check_checkov ;;
        assert) echo check_assert ;;
        shellcheck) echo check_shellcheck ;;
        adopt) echo check_adopt ;;
        *) return 1 ;;
    esac
}

checks=("$@")
[[ ${#checks[@]} -eq 0 ]] && checks=("${ALL_CHECKS[@]}")
for name in "${checks[@]}"; do
    if ! fn="$(fn_for "$name")"; then
        echo "unknown check '$name' (known: ${ALL_CHECKS[*]})" >&2
        exit 2
    fi
    run_check "$name" "$fn"
done

if [[ $failed -gt 0 ]]; then
    echo "infra/check.sh: $failed of $((passed + failed)) checks FAILED: ${failed_names[*]}"
    exit 1
fi
echo "infra/check.sh: all $passed checks passed"
