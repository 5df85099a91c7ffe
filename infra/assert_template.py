#!/usr/bin/env python3
"""The project's own assertions on infra/template.yaml, beyond what cfn-lint and checkov know.

Each assertion prints `ok   <name>` or `FAIL <name>: <why>` (one line per problem); the exit code
is 1 when any failed. The facts checked come from docs/architecture.md (the contract) and the
state-machine files the template points at.

Usage: assert_template.py [TEMPLATE] [--contract docs/architecture.md]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from samtranslator.yaml_helper import yaml_parse

# Actions that support no resource-level permissions: the only ones allowed with Resource "*".
NO_RESOURCE_LEVEL_ACTIONS = {
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "ec2:DescribeImages",
    "ssm:DescribeInstanceInformation",
    "ssm:GetCommandInvocation",
    "ssm:ListCommands",
    "ssm:ListCommandInvocations",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    # CloudWatch Logs delivery for Step Functions logging (vended logs).
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}

# The routes of the HTTP API (docs/architecture.md, design brief): every one AWS_IAM.
REQUIRED_ROUTES = {
    ("POST", "/clusters"),
    ("GET", "/clusters"),
    ("GET", "/clusters/{id}"),
    ("DELETE", "/clusters/{id}"),
    ("GET", "/clusters/{id}/events"),
    ("GET", "/clusters/{id}/kubeconfig"),
    ("GET", "/healthz"),
}

NODE_ROLE = "NodeRole"
SSM_CORE = "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
REQUIRED_ENV = ["MECPLANE_TABLE", "MECPLANE_NODE_INSTANCE_PROFILE", "MECPLANE_AMI_PARAMETER_PREFIX"]
API_ENV = ["MECPLANE_CREATE_STATE_MACHINE_ARN", "MECPLANE_DELETE_STATE_MACHINE_ARN"]


def pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def getatt_target(value) -> str | None:
    """`!GetAtt X.Arn` -> "X"."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        if isinstance(target, str):
            target = target.split(".", 1)
        if len(target) == 2 and target[1] == "Arn":
            return target[0]
    return None


def contract_functions(contract: Path) -> list[str]:
    """Function names from the `## Functions` table of docs/architecture.md."""
    text = contract.read_text()
    section = text.split("## Functions", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", section, flags=re.M)


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failures += len(problems)
            for p in problems:
                print(f"FAIL {name}: {p}")
        else:
            print(f"ok   {name}")


def statements(template: dict):
    """Every IAM policy statement in the template: (where, statement)."""

    def walk(node, where):
        if isinstance(node, dict):
            if "Effect" in node and ("Action" in node or "NotAction" in node):
                yield where, node
            for key, value in node.items():
                yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}[{i}]")

    for logical_id, resource in template.get("Resources", {}).items():
        yield from walk(resource, logical_id)


def check_actions(template: dict) -> list[str]:
    problems = []
    for where, st in statements(template):
        for key in ("Action", "NotAction"):
            for action in as_list(st.get(key)):
                if not isinstance(action, str) or "*" in action:
                    problems.append(f"{where}: {key} {action!r} is a wildcard (name every action)")
        if st.get("Effect") == "Allow" and ("NotAction" in st or "NotResource" in st):
            problems.append(f"{where}: Allow with NotAction/NotResource grants everything else")
    return problems


def check_star_resources(template: dict) -> list[str]:
    problems = []
    for where, st in statements(template):
        if "*" in as_list(st.get("Resource")):
            bad = [a for a in as_list(st.get("Action")) if a not in NO_RESOURCE_LEVEL_ACTIONS]
            if bad:
                problems.append(f"{where}: Resource \"*\" for {bad}, which support resource-level permissions")
    return problems


def check_http_api(resources: dict) -> list[str]:
    problems = []
    apis = {k for k, r in resources.items() if r.get("Type") == "AWS::Serverless::HttpApi"}
    if not apis:
        problems.append("no AWS::Serverless::HttpApi")
    for api in sorted(apis):
        auth = resources[api].get("Properties", {}).get("Auth", {})
        if auth.get("DefaultAuthorizer") != "AWS_IAM":
            problems.append(f"{api}: Auth.DefaultAuthorizer is {auth.get('DefaultAuthorizer')!r}, not AWS_IAM")
        if auth.get("EnableIamAuthorizer") is not True:
            problems.append(f"{api}: Auth.EnableIamAuthorizer is not true")
        if "AccessLogSettings" not in resources[api].get("Properties", {}):
            problems.append(f"{api}: no AccessLogSettings")
    for k, r in resources.items():
        if r.get("Type") in ("AWS::Serverless::Api", "AWS::ApiGateway::RestApi", "AWS::ApiGatewayV2::Api",
                             "AWS::ApiGatewayV2::Route", "AWS::Lambda::Url"):
            problems.append(f"{k}: {r['Type']} outside the checked HTTP API")
    routes = set()
    for fn, r in resources.items():
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        for ev_name, ev in (r.get("Properties", {}).get("Events") or {}).items():
            if ev.get("Type") != "HttpApi":
                if ev.get("Type") in ("Api",):
                    problems.append(f"{fn}.{ev_name}: REST Api event outside the checked HTTP API")
                continue
            props = ev.get("Properties") or {}
            api_id = props.get("ApiId")
            if not (isinstance(api_id, dict) and api_id.get("Ref") in apis):
                problems.append(f"{fn}.{ev_name}: ApiId is not a Ref to the template's HttpApi (implicit API)")
            authorizer = (props.get("Auth") or {}).get("Authorizer", "AWS_IAM")
            if authorizer != "AWS_IAM":
                problems.append(f"{fn}.{ev_name}: Auth.Authorizer is {authorizer!r}, not AWS_IAM")
            routes.add((str(props.get("Method", "")).upper(), props.get("Path")))
    for method, path in sorted(REQUIRED_ROUTES - routes):
        problems.append(f"route {method} {path} is missing")
    return problems


def check_roles(resources: dict, globals_: dict) -> list[str]:
    problems = []
    if "Policies" in (globals_.get("Function") or {}) or "Role" in (globals_.get("Function") or {}):
        problems.append("Globals.Function sets Policies/Role (shared by every function)")
    owners: dict[str, list[str]] = {}
    for k, r in resources.items():
        if r.get("Type") not in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            continue
        props = r.get("Properties", {})
        if "Policies" in props:
            problems.append(f"{k}: SAM Policies (a generated role); give it a role of its own")
        role = getatt_target(props.get("Role"))
        if role is None or resources.get(role, {}).get("Type") != "AWS::IAM::Role":
            problems.append(f"{k}: Role is not !GetAtt <a role of this template>.Arn")
            continue
        owners.setdefault(role, []).append(k)
    for role, users in sorted(owners.items()):
        if len(users) > 1:
            problems.append(f"{role} is shared by {', '.join(sorted(users))}")
        if role == NODE_ROLE:
            problems.append(f"{role} (the node role) is used by {', '.join(users)}")
    return problems


def binary_handlers(functions_main: Path) -> list[str]:
    """The handler names the one `bootstrap` binary serves (`HANDLERS` in functions/src/main.rs)."""
    text = functions_main.read_text()
    table = text[text.index("pub const HANDLERS"):]
    table = table[: table.index("];")]
    return re.findall(r'\("([a-z0-9-]+)",', table)


def check_functions(resources: dict, globals_: dict, names: list[str], handlers: list[str]) -> list[str]:
    """Every function of the contract, each serving its own handler of the one binary, all sharing
    one code location and build (so `sam build` compiles and links once)."""
    problems = []
    if not names:
        return ["no functions found in the contract's Functions table"]
    fn_globals = globals_.get("Function") or {}
    if fn_globals.get("CodeUri") != "../functions":
        problems.append(f"Globals.Function.CodeUri {fn_globals.get('CodeUri')!r}, want ../functions (one artifact)")
    expected = {f"{pascal(n)}Function": n for n in names}
    present = {k for k, r in resources.items() if r.get("Type") == "AWS::Serverless::Function"}
    metadata = set()
    for logical, name in sorted(expected.items()):
        r = resources.get(logical)
        if r is None or r.get("Type") != "AWS::Serverless::Function":
            problems.append(f"{logical} ({name}) is missing")
            continue
        props, meta = r.get("Properties", {}), r.get("Metadata", {})
        if "CodeUri" in props:
            problems.append(f"{logical}: a CodeUri of its own ({props['CodeUri']!r}) builds a second artifact")
        if props.get("Handler") != name:
            problems.append(f"{logical}: Handler {props.get('Handler')!r}, want {name}")
        if props.get("Handler") not in handlers:
            problems.append(f"{logical}: handler {props.get('Handler')!r} is not in functions/src/main.rs HANDLERS")
        if meta.get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{logical}: Metadata.BuildMethod is not rust-cargolambda")
        if (meta.get("BuildProperties") or {}).get("Binary") != "bootstrap":
            problems.append(f"{logical}: Metadata.BuildProperties.Binary is not bootstrap")
        metadata.add(repr(sorted(meta.items())))
    if len(metadata) > 1:
        problems.append("functions differ in Metadata: sam build would build more than once")
    for extra in sorted(present - set(expected)):
        problems.append(f"{extra} is not in the contract (docs/architecture.md)")
    for handler in sorted(set(handlers) - set(names)):
        problems.append(f"handler {handler} of functions/src/main.rs has no function in the contract")
    return problems


def check_environment(resources: dict, globals_: dict) -> list[str]:
    problems = []
    env = ((globals_.get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    for var in REQUIRED_ENV:
        if var not in env:
            problems.append(f"Globals.Function.Environment lacks {var}")
    api = resources.get("ApiFunction", {}).get("Properties", {})
    api_env = (api.get("Environment") or {}).get("Variables") or {}
    for var in API_ENV:
        if var not in api_env:
            problems.append(f"ApiFunction environment lacks {var}")
    return problems


def check_state_machines(resources: dict, base: Path, stage_functions: list[str]) -> list[str]:
    problems = []
    machines = {k: r for k, r in resources.items() if r.get("Type") == "AWS::Serverless::StateMachine"}
    if not machines:
        return ["no AWS::Serverless::StateMachine"]
    used_functions: set[str] = set()
    all_loaded = True
    for k, r in sorted(machines.items()):
        props = r.get("Properties", {})
        uri = props.get("DefinitionUri")
        if not isinstance(uri, str):
            problems.append(f"{k}: no local DefinitionUri")
            continue
        path = (base / uri).resolve()
        if not path.exists():
            problems.append(f"{k}: {uri} does not exist")
            all_loaded = False
            continue
        text = path.read_text()
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(f"{k}: {uri} is not JSON: {e}")
        placeholders = set(re.findall(r"\$\{([^}]*)\}", text))
        subs = props.get("DefinitionSubstitutions") or {}
        for name in sorted(placeholders - set(subs)):
            problems.append(f"{k}: ${{{name}}} in {uri} has no DefinitionSubstitutions entry")
        for name in sorted(set(subs) - placeholders):
            problems.append(f"{k}: substitution {name} is not used by {uri}")
        invoked = set()
        for name, value in subs.items():
            target = getatt_target(value)
            if name.endswith("FunctionArn"):
                if target != name[: -len("Arn")]:
                    problems.append(f"{k}: {name} is not !GetAtt {name[:-len('Arn')]}.Arn")
                elif resources.get(target, {}).get("Type") != "AWS::Serverless::Function":
                    problems.append(f"{k}: {name} points at {target}, not a function of this template")
                else:
                    invoked.add(target)
        used_functions |= invoked
        # The machine's role invokes exactly the functions its definition names.
        role = getatt_target(props.get("Role"))
        allowed = set()
        for _, st in statements({"Resources": {role: resources.get(role, {})}}):
            if "lambda:InvokeFunction" in as_list(st.get("Action")):
                for res in as_list(st.get("Resource")):
                    t = getatt_target(res)
                    allowed.add(t if t else json.dumps(res))
        if allowed != invoked:
            problems.append(f"{k}: role {role} may invoke {sorted(allowed - invoked)} beyond, "
                            f"or misses {sorted(invoked - allowed)}, the definition's functions")
        logging = props.get("Logging") or {}
        if logging.get("IncludeExecutionData") is not False:
            problems.append(f"{k}: Logging.IncludeExecutionData must be false (execution data holds secrets)")
        if logging.get("Level") not in ("ERROR", "ALL"):
            problems.append(f"{k}: Logging.Level is {logging.get('Level')!r}, want ERROR or ALL")
    for name in stage_functions if all_loaded else []:
        if f"{pascal(name)}Function" not in used_functions:
            problems.append(f"stage function {name} is used by no state machine")
    return problems


def check_pass_role(template: dict, resources: dict) -> list[str]:
    problems = []
    for where, st in statements(template):
        if any(isinstance(a, str) and a.lower() == "iam:passrole" for a in as_list(st.get("Action"))):
            targets = as_list(st.get("Resource"))
            if len(targets) != 1 or getatt_target(targets[0]) != NODE_ROLE:
                problems.append(f"{where}: iam:PassRole on {targets}, not only !GetAtt {NODE_ROLE}.Arn")
            if st.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService") is None:
                problems.append(f"{where}: iam:PassRole without an iam:PassedToService condition")
    node = resources.get(NODE_ROLE)
    if node is None:
        problems.append(f"no {NODE_ROLE}")
    else:
        props = node.get("Properties", {})
        managed = [m.get("Fn::Sub", m) if isinstance(m, dict) else m for m in props.get("ManagedPolicyArns", [])]
        if managed != [SSM_CORE]:
            problems.append(f"{NODE_ROLE}: managed policies {managed}, want only AmazonSSMManagedInstanceCore")
        if props.get("Policies"):
            problems.append(f"{NODE_ROLE}: inline policies; the node role has SSM core only")
    return problems


def check_table(resources: dict) -> list[str]:
    t = resources.get("ClustersTable")
    if not t or t.get("Type") != "AWS::DynamoDB::Table":
        return ["ClustersTable (AWS::DynamoDB::Table) is missing"]
    p = t.get("Properties", {})
    problems = []
    keys = [(k["AttributeName"], k["KeyType"]) for k in p.get("KeySchema", [])]
    if keys != [("pk", "HASH"), ("sk", "RANGE")]:
        problems.append(f"ClustersTable key {keys}, want pk HASH, sk RANGE")
    gsis = {g["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in g["KeySchema"]]
            for g in p.get("GlobalSecondaryIndexes", [])}
    if gsis.get("gsi1") != [("gsi1pk", "HASH"), ("gsi1sk", "RANGE")]:
        problems.append(f"ClustersTable gsi1 is {gsis.get('gsi1')}, want gsi1pk HASH, gsi1sk RANGE")
    if p.get("BillingMode") != "PAY_PER_REQUEST":
        problems.append("ClustersTable BillingMode is not PAY_PER_REQUEST")
    if (p.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is not True:
        problems.append("ClustersTable has no point-in-time recovery")
    if (p.get("SSESpecification") or {}).get("SSEEnabled") is not True:
        problems.append("ClustersTable SSESpecification.SSEEnabled is not true")
    return problems


def check_log_groups(resources: dict) -> list[str]:
    return [f"{k}: no RetentionInDays" for k, r in resources.items()
            if r.get("Type") == "AWS::Logs::LogGroup" and "RetentionInDays" not in r.get("Properties", {})]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("template", nargs="?", type=Path, default=here / "template.yaml")
    parser.add_argument("--contract", type=Path, help="docs/architecture.md (default: next to the template's parent)")
    args = parser.parse_args()
    contract = args.contract or args.template.resolve().parent.parent / "docs" / "architecture.md"

    try:
        template = yaml_parse(args.template.read_text())
    except Exception as e:  # a YAML error is one failure, not a traceback
        print(f"FAIL {args.template} does not parse: {e}")
        return 1
    resources = template.get("Resources", {})
    globals_ = template.get("Globals", {})
    names = contract_functions(contract)
    stage_functions = [n for n in names if n != "api"]

    report = Report()
    report.check("no wildcard in any Action/NotAction", check_actions(template))
    report.check("Resource \"*\" only for actions without resource-level permissions", check_star_resources(template))
    report.check("every HTTP API route is AWS_IAM", check_http_api(resources))
    report.check("every function and state machine has a role of its own", check_roles(resources, globals_))
    handlers = binary_handlers(args.template.resolve().parent.parent / "functions" / "src" / "main.rs")
    report.check("functions match the contract: one artifact, a handler each", check_functions(resources, globals_, names, handlers))
    report.check("environment per the contract", check_environment(resources, globals_))
    report.check("state machine substitutions: each used, each defined, invoke = definition",
                 check_state_machines(resources, args.template.resolve().parent, stage_functions))
    report.check("iam:PassRole only on the node role; node role has SSM core only", check_pass_role(template, resources))
    report.check("ClustersTable per the contract", check_table(resources))
    report.check("every log group has a retention", check_log_groups(resources))
    if report.failures:
        print(f"assert_template: {report.failures} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
