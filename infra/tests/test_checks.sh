#!/usr/bin/env bash
# Proves that every check of infra/check.sh can fail: each case makes a copy of the checked files in
# a temporary directory, breaks one thing, and asserts that the check meant to catch it fails (and
# says why). The clean copy must pass every check.
#
# Usage: infra/tests/test_checks.sh        (needs the tools of infra/check.sh installed)
#
# While statemachine/*.asl.json do not exist yet, the copies get placeholder definitions generated
# here from the template's DefinitionSubstitutions (only in the temporary directory, never in the
# repository).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHECK="$REPO/infra/check.sh"
PY="${MECPLANE_INFRA_VENV:-$REPO/.venv-infra}/bin/python"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0

# A clean copy of everything the checks read, at $1.
clean_copy() {
    local dst="$1"
    mkdir -p "$dst/infra" "$dst/docs" "$dst/statemachine" "$dst/mecplane/scripts" "$dst/local" "$dst/functions/src"
    cp "$REPO/infra/template.yaml" "$REPO/infra/adopt.py" "$dst/infra/"
    cp "$REPO/functions/src/main.rs" "$dst/functions/src/"
    cp "$REPO/docs/architecture.md" "$dst/docs/"
    shopt -s nullglob
    local asl=("$REPO"/statemachine/*.asl.json) scripts=("$REPO"/mecplane/scripts/*.sh)
    shopt -u nullglob
    if [[ ${#asl[@]} -gt 0 ]]; then
        cp "${asl[@]}" "$dst/statemachine/"
    else
        placeholders "$dst"
    fi
    [[ ${#scripts[@]} -gt 0 ]] && cp "${scripts[@]}" "$dst/mecplane/scripts/"
    (cd "$REPO" && find local -name '*.sh' -not -path '*/node_modules/*' -print0 |
        xargs -0 -r cp --parents -t "$dst") || true
}

# Placeholder state machines: a chain of Task states, one per substitution of the template.
placeholders() {
    "$PY" - "$REPO/infra/template.yaml" "$1/statemachine" <<'EOF'
import json, sys
from samtranslator.yaml_helper import yaml_parse
template = yaml_parse(open(sys.argv[1]).read())
for r in template["Resources"].values():
    if r["Type"] != "AWS::Serverless::StateMachine":
        continue
    names = sorted(r["Properties"]["DefinitionSubstitutions"])
    states = {}
    for i, name in enumerate(names):
        state = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "${%s}" % name, "Payload.$": "$"},
                 "OutputPath": "$.Payload"}
        state.update({"Next": names[i + 1]} if i + 1 < len(names) else {"End": True})
        states[name] = state
    path = sys.argv[2] + "/" + r["Properties"]["DefinitionUri"].rsplit("/", 1)[1]
    json.dump({"Comment": "placeholder for the checks' tests", "StartAt": names[0], "States": states},
              open(path, "w"), indent=2)
EOF
}

# expect WANT(pass|fail) NAME CHECK [GREP]: runs one check on $CASE and compares.
expect() {
    local want="$1" name="$2" check="$3" grep_for="${4:-}" out rc
    out="$(MECPLANE_CHECK_ROOT="$CASE" "$CHECK" "$check" 2>&1)"
    rc=$?
    local ok=1
    if [[ $want == fail && $rc -eq 0 ]]; then ok=0; fi
    if [[ $want == pass && $rc -ne 0 ]]; then ok=0; fi
    if [[ $ok -eq 1 && -n "$grep_for" ]] && ! grep -qF -- "$grep_for" <<<"$out"; then ok=0; fi
    if [[ $ok -eq 1 ]]; then
        passed=$((passed + 1))
        echo "ok   $name: $check -> $want${grep_for:+ (\"$grep_for\")}"
    else
        failed=$((failed + 1))
        echo "FAIL $name: expected $check to ${want}${grep_for:+ mentioning \"$grep_for\"}, exit $rc:"
        while IFS= read -r line; do echo "    $line"; done <<<"$out"
    fi
}

# new_case NAME: a fresh clean copy at $CASE.
new_case() {
    CASE="$TMP/$1"
    clean_copy "$CASE"
}

# edit FILE PYTHON-EXPR: rewrites FILE as s -> EXPR (s is the text); fails if nothing changed.
edit() {
    "$PY" - "$1" "$2" <<'EOF'
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
new = eval(expr, {"s": s})
if new == s:
    sys.exit(f"edit: {expr!r} changed nothing in {path}")
open(path, "w").write(new)
EOF
}

# stmt_edit FILE SID OLD NEW: replaces OLD by NEW inside the first IAM statement with that Sid (up
# to the next statement or the end of its resource); fails if nothing changed.
stmt_edit() {
    "$PY" - "$@" <<'EOF'
import sys
path, sid, old, new = sys.argv[1:5]
s = open(path).read()
start = s.find(f"- Sid: {sid}\n")
if start < 0:
    sys.exit(f"stmt_edit: no statement {sid} in {path}")
ends = [i for i in (s.find("- Sid: ", start + 1), s.find("\n\n", start) + 1) if i > 0]
end = min(ends) if ends else len(s)
body = s[start:end]
if old not in body:
    sys.exit(f"stmt_edit: {old!r} not in statement {sid}")
open(path, "w").write(s[:start] + body.replace(old, new, 1) + s[end:])
EOF
}

asl_edit() {
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
path, code = sys.argv[1], sys.argv[2]
d = json.load(open(path))
exec(code, {"d": d})
json.dump(d, open(path, "w"), indent=2)
EOF
}

first_state() {
    "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["StartAt"])' "$1"
}

if ! compgen -G "$REPO/statemachine/*.asl.json" >/dev/null; then
    echo "note: statemachine/*.asl.json do not exist yet - the copies use generated placeholders"
fi
echo "== the clean copy passes every check"
new_case clean
for check in cfn-lint cfn-lint-transformed asl checkov assert shellcheck adopt; do
    expect pass "clean copy" "$check"
done

echo "== broken copies fail the check meant to catch them"
T=infra/template.yaml
CREATE=statemachine/create-cluster.asl.json

new_case star-action
edit "$CASE/$T" 's.replace("- dynamodb:GetItem", "- dynamodb:*", 1)'
expect fail "a dynamodb:* action" assert "wildcard"

new_case star-action-bare
edit "$CASE/$T" 's.replace("- ec2:TerminateInstances", "- \"*\"", 1)'
expect fail "a \"*\" action" assert "wildcard"

new_case not-action
edit "$CASE/$T" 's.replace("                Action:\n                  - ec2:TerminateInstances", "                NotAction:\n                  - iam:CreateUser", 1)'
expect fail "an Allow with NotAction" assert "NotAction"

new_case route-auth-none
edit "$CASE/$T" 's.replace("Authorizer: AWS_IAM", "Authorizer: NONE", 1)'
expect fail "a route with Auth NONE" assert "not AWS_IAM"

new_case default-authorizer
edit "$CASE/$T" 's.replace("        DefaultAuthorizer: AWS_IAM\n", "", 1)'
expect fail "an HTTP API without the IAM default authorizer" assert "DefaultAuthorizer"

new_case any-instance-type
edit "$CASE/$T" 's.replace("                    ec2:InstanceType: !Ref AllowedInstanceTypes\n", "", 1)'
expect fail "ec2:RunInstances on instances of any type" assert "ec2:InstanceType"

new_case any-ami-owner
edit "$CASE/$T" 's.replace("                    ec2:Owner: !Ref AmiOwners\n", "", 1)'
expect fail "ec2:RunInstances from anyone's AMI" assert "ec2:Owner"

new_case default-type-not-allowed
edit "$CASE/$T" 's.replace("    Default: t4g.medium\n", "    Default: p5.48xlarge\n", 1)'
expect fail "a default instance type the guardrail refuses" assert "not in AllowedInstanceTypes"

new_case kubeconfig-whole-cluster
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
edit "$CASE/$T" 's.replace("parameter/${NamePrefix}/clusters/*/kubeconfig\"\n              - Sid: StartClusterExecutions", "parameter/${NamePrefix}/clusters/*\"\n              - Sid: StartClusterExecutions", 1)'
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
expect fail "a kubeconfig read on every parameter of a cluster" assert 'want .../${NamePrefix}/clusters/*/kubeconfig'

new_case shared-role
edit "$CASE/$T" 's.replace("Role: !GetAtt ActivateRole.Arn", "Role: !GetAtt MarkFailedRole.Arn", 1)'
expect fail "two functions sharing a role" assert "shared by"

new_case sam-policies
edit "$CASE/$T" 's.replace("      Role: !GetAtt VerifyRole.Arn\n", "      Policies:\n        - AmazonDynamoDBFullAccess\n", 1)'
expect fail "a SAM-generated role" assert "SAM Policies"

new_case star-resource
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
edit "$CASE/$T" 's.replace("Resource: !Sub \"arn:${AWS::Partition}:ssm:*::document/AWS-RunShellScript\"", "Resource: \"*\"", 1)'
expect fail "ssm:SendCommand on Resource \"*\"" assert "resource-level"

new_case pass-role
edit "$CASE/$T" 's.replace("Resource: !GetAtt NodeRole.Arn", "Resource: !GetAtt ApiRole.Arn", 1)'
expect fail "iam:PassRole on another role" assert "PassRole"

new_case own-code-uri
edit "$CASE/$T" 's.replace("      Handler: verify\n", "      Handler: verify\n      CodeUri: ../functions/verify\n", 1)'
expect fail "a function with a code location of its own" assert "second artifact"

new_case unknown-handler
edit "$CASE/$T" 's.replace("      Handler: verify\n", "      Handler: verifyy\n", 1)'
expect fail "a Handler the binary does not serve" assert "not in functions/src/main.rs"

new_case handler-without-function
edit "$CASE/functions/src/main.rs" 's.replace("pub const HANDLERS: &[(&str, Start)] = &[\n", "pub const HANDLERS: &[(&str, Start)] = &[\n    (\"orphan\", || Box::pin(api::serve())),\n", 1)'
expect fail "a handler with no function in the template" assert "handler orphan"

new_case other-binary
edit "$CASE/$T" 's.replace("        Binary: bootstrap\n", "        Binary: verify\n", 1)'
expect fail "a function building another binary" assert "Binary is not bootstrap"

new_case reconcile-rule-states
edit "$CASE/$T" 's.replace("            - stopping\n            - stopped\n", "            - stopped\n", 1)'
expect fail "an EC2 state-change rule that misses instances stopping" assert "EventPattern.detail.state"

new_case reconcile-schedule-target
edit "$CASE/$T" 's.replace("        Arn: !GetAtt ReconcileFunction.Arn\n        RoleArn:", "        Arn: !GetAtt VerifyFunction.Arn\n        RoleArn:", 1)'
expect fail "a schedule that does not run the reconcile function" assert "no AWS::Scheduler::Schedule targets"

new_case missing-substitution
"$PY" - "$CASE/$CREATE" <<'EOF'
import re, sys
p = sys.argv[1]; s = open(p).read()
open(p, "w").write(re.sub(r"\$\{[A-Za-z]+FunctionArn\}", "${Missing}", s, count=1))
EOF
expect fail "a \${Missing} in a definition" assert "\${Missing}"

new_case unused-substitution
edit "$CASE/$T" 's.replace("      DefinitionSubstitutions:\n", "      DefinitionSubstitutions:\n        UnusedArn: !GetAtt ApiFunction.Arn\n", 1)'
expect fail "a substitution the definition does not use" assert "not used"

new_case next-missing
asl_edit "$CASE/$CREATE" 'd["States"][d["StartAt"]].pop("End", None); d["States"][d["StartAt"]]["Next"] = "NoSuchState"'
expect fail "a Next to a missing state" asl "INVALID"

new_case no-timeout-retry
asl_edit "$CASE/statemachine/delete-cluster.asl.json" 'next(r for s in d["States"].values() for r in s.get("Retry", []) if "Sandbox.Timedout" in r["ErrorEquals"])["ErrorEquals"].remove("Sandbox.Timedout")'
expect fail "a Task that does not retry a Lambda timeout" assert "does not retry Sandbox.Timedout"

new_case mark-failed-skips-cleanup
# shellcheck disable=SC2016  # the ${...} is the definition's placeholder, not the shell's
asl_edit "$CASE/$CREATE" 'next(s for s in d["States"].values() if s.get("Resource") == "${MarkFailedFunctionArn}")["Catch"][0]["Next"] = "CreateFailed"'
expect fail "a failure inside MarkFailed that skips the cleanup" assert "not to the cleanup"

new_case bad-state-type
start="$(first_state "$CASE/$CREATE")"
asl_edit "$CASE/$CREATE" "d['States']['$start']['Type'] = 'Taskk'"
expect fail "an unknown state type (seen only after the transform)" cfn-lint-transformed "E3601"

new_case missing-definition
rm "$CASE/$CREATE"
expect fail "a DefinitionUri file that does not exist" cfn-lint-transformed "does not exist"

new_case invalid-property
edit "$CASE/$T" 's.replace("      BillingMode: PAY_PER_REQUEST\n", "      BillingMode: PAY_PER_REQUEST\n      Colour: blue\n", 1)'
expect fail "an invalid property" cfn-lint "E3002"

new_case key-for-another-role
edit "$CASE/$T" 's.replace("AWS: !GetAtt ApiRole.Arn", "AWS: !GetAtt LaunchNodesRole.Arn", 1)'
expect fail "the secrets key usable by a role that needs no secret" assert "LaunchNodesRole may"

new_case key-root-decrypts
edit "$CASE/$T" 's.replace("              - kms:CreateAlias\n", "              - kms:CreateAlias\n              - kms:Decrypt\n", 1)'
expect fail "the account root may decrypt with the secrets key" assert "not a role of the template"

new_case key-outside-ssm
edit "$CASE/$T" 's.replace("kms:ViaService: !Sub \"ssm.", "kms:ViaService: !Sub \"lambda.", 1)'
expect fail "a key grant usable outside SSM" assert "kms:ViaService"

new_case node-reads-parameters
stmt_edit "$CASE/$T" DenyParameterReads '                  - ssm:GetParametersByPath
' ''
expect fail "a node role that may read parameters by path" assert "no unconditional Deny of ['ssm:GetParametersByPath']"

new_case node-reads-other-parameters
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
stmt_edit "$CASE/$T" DenyParameterReads 'Resource: "*"' 'Resource: !Sub "arn:${AWS::Partition}:ssm:*:${AWS::AccountId}:parameter/${NamePrefix}/*"'
expect fail "a node role denied only the project's parameters (the account's others readable)" assert "no unconditional Deny"

new_case node-uses-key
stmt_edit "$CASE/$T" DenyProjectKey '                  - kms:GenerateDataKeyWithoutPlaintext
' ''
expect fail "a node role not denied every use of the secrets key" assert "kms:GenerateDataKeyWithoutPlaintext"

new_case node-allows-something
edit "$CASE/$T" 's.replace("              - Sid: DenyProjectKey\n                Effect: Deny", "              - Sid: DenyProjectKey\n                Effect: Allow", 1)'
expect fail "an Allow in the node role's inline policy beyond the agent's calls" assert "allows only the SSM agent's calls"

new_case node-managed-policy
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
edit "$CASE/$T" 's.replace("      Policies:\n        - PolicyName: ssm-agent\n", "      ManagedPolicyArns:\n        - !Sub \"arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore\"\n      Policies:\n        - PolicyName: ssm-agent\n", 1)'
expect fail "the node role with AmazonSSMManagedInstanceCore back" assert "managed policies"

new_case node-agent-reads-documents
stmt_edit "$CASE/$T" SsmAgentMessages '                  - ec2messages:SendReply
' '                  - ec2messages:SendReply
                  - ssm:GetDocument
'
expect fail "the node role allowed a call the agent does not need for Run Command" assert "ssm:GetDocument"

echo "== ownership: IAM checks the deployment tag's value, the node profile, tags only at creation"

new_case terminate-tag-exists
stmt_edit "$CASE/$T" TerminateClusterInstancesOnly '                  StringEquals:
                    aws:ResourceTag/mecplane:deployment: !Ref NamePrefix
' '                  "Null":
                    aws:ResourceTag/mecplane:deployment: "false"
                  StringEquals:
'
expect fail "terminate on any instance that has the tag key" assert "only checks that a tag key exists"

new_case terminate-fixed-value
stmt_edit "$CASE/$T" TerminateClusterInstancesOnly 'aws:ResourceTag/mecplane:deployment: !Ref NamePrefix' 'aws:ResourceTag/mecplane:deployment: mecplane'
expect fail "terminate on another deployment's instances (a fixed value, not NamePrefix)" assert "ec2:TerminateInstances on instance without StringEquals"

new_case terminate-any-profile
stmt_edit "$CASE/$T" TerminateClusterInstancesOnly '                  ArnEquals:
                    ec2:InstanceProfile: !GetAtt NodeInstanceProfile.Arn
' ''
expect fail "terminate on instances of any instance profile" assert "ec2:TerminateInstances on instances without ArnEquals ec2:InstanceProfile"

new_case launch-any-profile
stmt_edit "$CASE/$T" LaunchTaggedInstancesWithImdsV2Only '                  ArnEquals:
                    ec2:InstanceProfile: !GetAtt NodeInstanceProfile.Arn
' ''
expect fail "launch with any instance profile" assert "ec2:RunInstances on instances without ArnEquals ec2:InstanceProfile"

new_case send-command-tag-exists
stmt_edit "$CASE/$T" RunCommandOnClusterNodesOnly '                  StringEquals:
                    ssm:resourceTag/mecplane:deployment: !Ref NamePrefix
' '                  "Null":
                    ssm:resourceTag/mecplane:deployment: "false"
                  StringEquals:
'
expect fail "SendCommand to any instance that has the tag key" assert "ssm:SendCommand on instance without StringEquals"

new_case security-group-tag-exists
stmt_edit "$CASE/$T" ChangeIngressOnClusterGroupsOnly '                  StringEquals:
                    aws:ResourceTag/mecplane:deployment: !Ref NamePrefix
' '                  "Null":
                    aws:ResourceTag/mecplane:cluster: "false"
                  StringEquals:
'
expect fail "ingress changes on any group with a cluster tag" assert "ec2:AuthorizeSecurityGroupIngress on security-group without StringEquals"

new_case balancer-tag-exists
stmt_edit "$CASE/$T" DeleteClusterBalancersOnly '                  StringEquals:
                    aws:ResourceTag/mecplane:deployment: !Ref NamePrefix
' '                  "Null":
                    aws:ResourceTag/mecplane:cluster: "false"
                  StringEquals:
'
expect fail "deleting any balancer with a cluster tag" assert "elasticloadbalancing:DeleteLoadBalancer on loadbalancer without StringEquals"

new_case create-untagged-group
stmt_edit "$CASE/$T" CreateOnlyTaggedSecurityGroups '                    aws:RequestTag/mecplane:deployment: !Ref NamePrefix
' ''
expect fail "a security group created without the deployment tag" assert "ec2:CreateSecurityGroup creates a security-group without StringEquals aws:RequestTag/mecplane:deployment"

new_case create-untagged-balancer
stmt_edit "$CASE/$T" CreateOnlyTaggedBalancersAndTargetGroups '                    aws:RequestTag/mecplane:deployment: !Ref NamePrefix
' ''
expect fail "a load balancer created without the deployment tag" assert "elasticloadbalancing:CreateLoadBalancer creates a loadbalancer without"

new_case tags-after-creation
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
edit "$CASE/$T" 's.replace("              - Sid: PassNodeRoleToEc2Only\n", "              - Sid: IndexTagsAfterLaunch\n                Effect: Allow\n                Action:\n                  - ec2:CreateTags\n                Resource: !Sub \"arn:${AWS::Partition}:ec2:*:${AWS::AccountId}:instance/*\"\n                Condition:\n                  StringEquals:\n                    aws:ResourceTag/mecplane:deployment: !Ref NamePrefix\n              - Sid: PassNodeRoleToEc2Only\n", 1)'
expect fail "ec2:CreateTags on the deployment's instances after launch" assert "IndexTagsAfterLaunch): ec2:CreateTags without StringEquals ec2:CreateAction"

new_case tags-other-create
stmt_edit "$CASE/$T" TagOnLaunch 'ec2:CreateAction: RunInstances' 'ec2:CreateAction: CreateVolume'
expect fail "ec2:CreateTags inside a create the project does not make" assert "ec2:CreateTags without StringEquals ec2:CreateAction"

new_case elb-tags-after-creation
stmt_edit "$CASE/$T" TagBalancersOnCreate '                    elasticloadbalancing:CreateAction:
                      - CreateLoadBalancer
                      - CreateTargetGroup
                      - CreateListener
' ''
expect fail "elasticloadbalancing:AddTags outside a create" assert "elasticloadbalancing:AddTags without StringEquals elasticloadbalancing:CreateAction"

new_case delete-tags
stmt_edit "$CASE/$T" TagOnLaunch '                  - ec2:CreateTags
' '                  - ec2:CreateTags
                  - ec2:DeleteTags
'
expect fail "a role that may remove tags" assert "allows ec2:DeleteTags"

new_case fixed-parameter-root
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
stmt_edit "$CASE/$T" DeleteClusterParameters 'parameter/${NamePrefix}/clusters/*' 'parameter/mecplane/clusters/*'
# shellcheck disable=SC2016  # the ${...} is CloudFormation's, not the shell's
expect fail "a parameter ARN under the fixed /mecplane root" assert 'outside /${NamePrefix}/clusters/'

new_case no-deployment-env
edit "$CASE/$T" 's.replace("        MECPLANE_DEPLOYMENT: !Ref NamePrefix\n", "", 1)'
expect fail "functions that do not know their deployment" assert "MECPLANE_DEPLOYMENT"

new_case long-prefix
edit "$CASE/$T" 's.replace("AllowedPattern: \"^[a-z][a-z0-9-]{0,12}$\"", "AllowedPattern: \"^[a-z][a-z0-9-]{0,30}$\"", 1)'
expect fail "a NamePrefix too long for ELB names" assert "NamePrefix AllowedPattern"

new_case hop-limit-two
edit "$CASE/$T" 's.replace("ec2:MetadataHttpPutResponseHopLimit: 1", "ec2:MetadataHttpPutResponseHopLimit: 2", 1)'
expect fail "nodes launchable with an IMDS hop limit of 2" assert "MetadataHttpPutResponseHopLimit: 1"

new_case secrets-default-key
# shellcheck disable=SC2016  # the template's own ${NamePrefix}
edit "$CASE/$T" 's.replace("        MECPLANE_SECRETS_KEY: !Sub \"alias/${NamePrefix}-secrets\"\n", "", 1)'
expect fail "stages writing SecureStrings with the account's aws/ssm key" assert "MECPLANE_SECRETS_KEY"

new_case missing-resource
edit "$CASE/$T" 's.replace("Role: !GetAtt VerifyRole.Arn", "Role: !GetAtt NoSuchRole.Arn", 1)'
expect fail "a GetAtt of a resource that does not exist" cfn-lint "E1010"

new_case timeout-too-long
edit "$CASE/$T" 's.replace("    Timeout: 60\n", "    Timeout: 9000\n", 1)'
expect fail "a function timeout over the maximum" cfn-lint "E3034"

new_case no-pitr
edit "$CASE/$T" 's.replace("PointInTimeRecoveryEnabled: true", "PointInTimeRecoveryEnabled: false", 1)'
expect fail "a table without point-in-time recovery" checkov "CKV_AWS_28"

new_case shell-error
cat >"$CASE/mecplane/scripts/broken.sh" <<'EOF'
#!/usr/bin/env bash
# mecplane-script: broken
for f in $(ls /etc/*.conf); do echo $f; done
EOF
expect fail "a shell script with shellcheck errors" shellcheck "SC2045"

new_case local-shell-error
mkdir -p "$CASE/local/sim/bin"
# shellcheck disable=SC2016  # the broken script's own $1
printf '#!/bin/sh\ncd $1\nrm -rf "$1"/*\n' >"$CASE/local/sim/bin/broken.sh"
expect fail "a local/**/*.sh script with shellcheck errors" shellcheck "SC2086"

echo "== infra/adopt.py tags only what live records name"

new_case adopt-deleted-records
edit "$CASE/infra/adopt.py" 's.replace("            if status != DELETED:\n", "            if True:\n", 1)'
expect fail "adopt.py adopting a DELETED record's instances" adopt "FAIL only what the live record names is tagged"

new_case adopt-lookalike-groups
edit "$CASE/infra/adopt.py" 's.replace("filters = [{\"Name\": \"group-name\", \"Values\": names},\n                   {", "filters = [{", 1)'
expect fail "adopt.py adopting every group with the cluster tag" adopt "FAIL only what the live record names is tagged"

new_case adopt-dry-run-tags
edit "$CASE/infra/adopt.py" 's.replace("        if not dry_run:\n            ec2.create_tags", "        if True:\n            ec2.create_tags", 1)'
expect fail "adopt.py --dry-run that tags" adopt "FAIL --dry-run tags nothing"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
