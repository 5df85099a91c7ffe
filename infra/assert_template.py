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
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "ec2:DescribeImages",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeRouteTables",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTags",
    "ssm:DescribeInstanceInformation",
    "ssm:DescribeParameters",
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
    ("PATCH", "/clusters/{id}"),
    ("DELETE", "/clusters/{id}"),
    ("GET", "/clusters/{id}/events"),
    ("GET", "/clusters/{id}/kubeconfig"),
    ("GET", "/clusters/{id}/updates"),
    ("GET", "/clusters/{id}/updates/{update_id}"),
    ("POST", "/clusters/{id}/nodes/{instance_id}/replace"),
    ("POST", "/reconcile"),
    ("GET", "/healthz"),
}

NODE_ROLE = "NodeRole"
NODE_PROFILE = "NodeInstanceProfile"
# What the node role may do: the SSM agent's own calls (docs/ownership.md). The heartbeat names the
# caller's instance; the message services support no resource-level permissions (Resource "*").
NODE_AGENT_HEARTBEAT = {"ssm:UpdateInstanceInformation"}
NODE_AGENT_MESSAGES = {
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
}
# Every parameter read the node role must deny itself, on every parameter ("*").
PARAMETER_READS = {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"}
REQUIRED_ENV = ["MECPLANE_TABLE", "MECPLANE_NODE_INSTANCE_PROFILE", "MECPLANE_AMI_PARAMETER_PREFIX",
                "MECPLANE_DEPLOYMENT"]
API_ENV = [
    "MECPLANE_CREATE_STATE_MACHINE_ARN",
    "MECPLANE_DELETE_STATE_MACHINE_ARN",
    "MECPLANE_UPDATE_STATE_MACHINE_ARN",
]

# The reconcile function: not a stage of any state machine but started by its triggers (an
# EventBridge Scheduler schedule with this input, an EventBridge rule on these EC2 instance states).
RECONCILE_FUNCTION = "ReconcileFunction"
TRIGGERED_FUNCTIONS = {"reconcile"}
RECONCILE_SCHEDULE_INPUT = {"source": "mecplane.schedule"}
RECONCILE_EC2_DETAIL_TYPE = "EC2 Instance State-change Notification"
RECONCILE_EC2_STATES = ["stopping", "stopped", "shutting-down", "terminated"]
# Its environment beyond every function's: variable -> the !Ref it must be.
RECONCILE_ENV = {
    "MECPLANE_CREATE_STATE_MACHINE_ARN": "CreateClusterStateMachine",
    "MECPLANE_DELETE_STATE_MACHINE_ARN": "DeleteClusterStateMachine",
    "MECPLANE_UPDATE_STATE_MACHINE_ARN": "UpdateClusterStateMachine",
    "MECPLANE_RECONCILE_GRACE_SECONDS": "ReconcileGraceSeconds",
    "MECPLANE_ORPHAN_GRACE_SECONDS": "OrphanGraceSeconds",
    "MECPLANE_MAX_UNHEALTHY_PERCENT": "MaxUnhealthyPercent",
    "MECPLANE_MAX_REPAIRS_PER_RUN": "MaxRepairsPerRun",
    "MECPLANE_ORPHANS_REPORT_ONLY": "OrphansReportOnly",
    "MECPLANE_HEALTH_INTERVAL_SECONDS": "HealthIntervalSeconds",
    "MECPLANE_RECONCILE_RATE_MINUTES": "ReconcileRateMinutes",
}

# What every Task of both state machines retries: the stages' transient errors, Lambda's service
# trouble, and a Lambda that timed out — a timeout is retried, not a reason to tear a cluster down.
RETRIED_BY_EVERY_TASK = [
    "Transient",
    "RecordConflict",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Sandbox.Timedout",
    "Lambda.ClientExecutionTimeoutException",
]
MARK_FAILED = "${MarkFailedFunctionArn}"
TERMINATE_NODES = "${TerminateNodesFunctionArn}"


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
        if ".KeyPolicy." in where or st.get("Effect") == "Deny":
            continue  # a key policy's "*" is the key itself (check_secrets_key); a Deny only narrows
        if "*" in as_list(st.get("Resource")):
            allowed = NO_RESOURCE_LEVEL_ACTIONS | (NODE_AGENT_MESSAGES if where.startswith(f"{NODE_ROLE}.") else set())
            bad = [a for a in as_list(st.get("Action")) if a not in allowed]
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
    if RECONCILE_FUNCTION in resources:
        props = resources[RECONCILE_FUNCTION].get("Properties") or {}
        reconcile_env = (props.get("Environment") or {}).get("Variables") or {}
        for var, ref in RECONCILE_ENV.items():
            if reconcile_env.get(var) != {"Ref": ref}:
                problems.append(f"{RECONCILE_FUNCTION} environment {var} is not !Ref {ref}")
    return problems


def targets_reconcile(value) -> bool:
    """`!GetAtt ReconcileFunction.Arn` (or `!Ref ReconcileFunction`, for a FunctionName)."""
    return getatt_target(value) == RECONCILE_FUNCTION or value == {"Ref": RECONCILE_FUNCTION}


def check_reconcile_triggers(resources: dict, params: dict) -> list[str]:
    """The reconcile function runs on a schedule and when an EC2 instance stops or goes away: an
    EventBridge Scheduler schedule (rate from ReconcileRateMinutes, no flexible window, a retry
    policy, the input the function takes for a scheduled run) whose own role may invoke that
    function and nothing else; an EventBridge rule on exactly the four EC2 states, targeting it, with
    the Lambda permission for that rule; an alarm on its errors."""
    problems = []
    fn = resources.get(RECONCILE_FUNCTION) or {}
    if fn.get("Type") != "AWS::Serverless::Function":
        return [f"{RECONCILE_FUNCTION} (AWS::Serverless::Function) is missing"]
    of_type = lambda t: {k: r for k, r in resources.items() if r.get("Type") == t}  # noqa: E731

    rate = params.get("ReconcileRateMinutes") or {}
    if (str(rate.get("Default")), str(rate.get("MinValue")), str(rate.get("MaxValue"))) != ("5", "1", "60"):
        problems.append("Parameter ReconcileRateMinutes is not Default 5, MinValue 1, MaxValue 60")
    schedules = {k: r for k, r in of_type("AWS::Scheduler::Schedule").items()
                 if targets_reconcile(((r.get("Properties") or {}).get("Target") or {}).get("Arn"))}
    if not schedules:
        problems.append(f"no AWS::Scheduler::Schedule targets !GetAtt {RECONCILE_FUNCTION}.Arn")
    for k, r in sorted(schedules.items()):
        props = r.get("Properties") or {}
        target = props.get("Target") or {}
        if "${ReconcileRateMinutes}" not in json.dumps(props.get("ScheduleExpression")):
            problems.append(f"{k}: ScheduleExpression does not take its rate from ReconcileRateMinutes")
        if (props.get("FlexibleTimeWindow") or {}).get("Mode") != "OFF":
            problems.append(f"{k}: FlexibleTimeWindow.Mode is not OFF")
        if props.get("State", "ENABLED") != "ENABLED":
            problems.append(f"{k}: State is {props.get('State')!r}, not ENABLED")
        try:
            schedule_input = json.loads(target.get("Input") or "null")
        except (TypeError, json.JSONDecodeError):
            schedule_input = None
        if schedule_input != RECONCILE_SCHEDULE_INPUT:
            problems.append(f"{k}: Target.Input is {target.get('Input')!r}, want {json.dumps(RECONCILE_SCHEDULE_INPUT)}")
        if not target.get("RetryPolicy"):
            problems.append(f"{k}: Target has no RetryPolicy")
        role = getatt_target(target.get("RoleArn"))
        if role is None or resources.get(role, {}).get("Type") != "AWS::IAM::Role":
            problems.append(f"{k}: Target.RoleArn is not !GetAtt <a role of this template>.Arn")
            continue
        trusted = [st.get("Principal") for st in as_list(
            ((resources[role].get("Properties") or {}).get("AssumeRolePolicyDocument") or {}).get("Statement"))]
        if trusted != [{"Service": "scheduler.amazonaws.com"}]:
            problems.append(f"{k}: role {role} trusts {trusted}, want only scheduler.amazonaws.com")
        grants = [st for _, st in statements({"Resources": {role: resources[role]}})
                  if st.get("Effect") == "Allow" and "Principal" not in st]
        if not grants or any(as_list(st.get("Action")) != ["lambda:InvokeFunction"]
                             or not all(targets_reconcile(res) for res in as_list(st.get("Resource")))
                             for st in grants):
            problems.append(f"{k}: role {role} may do more than lambda:InvokeFunction on {RECONCILE_FUNCTION}")
        users = [u for u, ur in resources.items() if u != k and role in json.dumps(ur)]
        if users:
            problems.append(f"{k}: role {role} is also used by {sorted(users)}")

    rules = {k: r for k, r in of_type("AWS::Events::Rule").items()
             if any(targets_reconcile(t.get("Arn")) for t in (r.get("Properties") or {}).get("Targets") or [])}
    if not rules:
        problems.append(f"no AWS::Events::Rule targets !GetAtt {RECONCILE_FUNCTION}.Arn")
    for k, r in sorted(rules.items()):
        props = r.get("Properties") or {}
        pattern = props.get("EventPattern") or {}
        if as_list(pattern.get("source")) != ["aws.ec2"]:
            problems.append(f"{k}: EventPattern.source is {pattern.get('source')!r}, want [aws.ec2]")
        if as_list(pattern.get("detail-type")) != [RECONCILE_EC2_DETAIL_TYPE]:
            problems.append(f"{k}: EventPattern.detail-type is {pattern.get('detail-type')!r}, "
                            f"want [{RECONCILE_EC2_DETAIL_TYPE}]")
        states = as_list((pattern.get("detail") or {}).get("state"))
        if sorted(states) != sorted(RECONCILE_EC2_STATES) or len(set(states)) != len(states):
            problems.append(f"{k}: EventPattern.detail.state is {states}, want exactly {RECONCILE_EC2_STATES}")
        if props.get("State", "ENABLED") != "ENABLED":
            problems.append(f"{k}: State is {props.get('State')!r}, not ENABLED")
        allowed = [p for p, pr in of_type("AWS::Lambda::Permission").items()
                   if (pr.get("Properties") or {}).get("Principal") == "events.amazonaws.com"
                   and targets_reconcile((pr.get("Properties") or {}).get("FunctionName"))
                   and getatt_target((pr.get("Properties") or {}).get("SourceArn")) == k]
        if not allowed:
            problems.append(f"{k}: no AWS::Lambda::Permission lets events.amazonaws.com invoke "
                            f"{RECONCILE_FUNCTION} with SourceArn !GetAtt {k}.Arn")

    alarms = [k for k, r in of_type("AWS::CloudWatch::Alarm").items()
              if (r.get("Properties") or {}).get("MetricName") == "Errors"
              and (r.get("Properties") or {}).get("Namespace") == "AWS/Lambda"
              and {"Name": "FunctionName", "Value": {"Ref": RECONCILE_FUNCTION}}
              in as_list((r.get("Properties") or {}).get("Dimensions"))]
    if not alarms:
        problems.append(f"no AWS::CloudWatch::Alarm on the AWS/Lambda Errors of {RECONCILE_FUNCTION}")
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


def machine_definitions(resources: dict, base: Path) -> dict[str, dict]:
    """The state machines' definitions that load, by DefinitionUri (the other checks report the rest)."""
    out = {}
    for r in resources.values():
        if r.get("Type") != "AWS::Serverless::StateMachine":
            continue
        uri = (r.get("Properties") or {}).get("DefinitionUri")
        if not isinstance(uri, str):
            continue
        try:
            out[uri] = json.loads((base / uri).resolve().read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


def check_task_retries(definitions: dict[str, dict]) -> list[str]:
    problems = []
    if not definitions:
        return ["no state machine definition loaded"]
    for uri, d in sorted(definitions.items()):
        for name, st in (d.get("States") or {}).items():
            if st.get("Type") != "Task":
                continue
            retried = {e for r in st.get("Retry") or [] for e in r.get("ErrorEquals") or []}
            missing = [e for e in RETRIED_BY_EVERY_TASK if e not in retried]
            if missing:
                problems.append(f"{uri}: Task {name} does not retry {', '.join(missing)}")
    return problems


def next_task(states: dict, name: str | None) -> str | None:
    """Follows Next, and a Choice's Default, through Pass and Choice states to the first other state."""
    for _ in range(len(states) + 1):
        st = states.get(name) or {}
        if st.get("Type") == "Pass":
            name = st.get("Next")
        elif st.get("Type") == "Choice":
            name = st.get("Default")
        else:
            return name
    return name


def check_mark_failed_cleanup(definitions: dict[str, dict]) -> list[str]:
    """The Task that records a failed create (MarkFailed, whose success path goes on to terminate
    the nodes) must lead to that cleanup from its Catch too: a failure inside it still removes
    what was made, and the execution still fails with the error that failed the create."""
    problems = []
    recorders = 0
    for uri, d in sorted(definitions.items()):
        states = d.get("States") or {}

        def resource(name: str | None, states: dict = states) -> str | None:
            return (states.get(name) or {}).get("Resource")

        for name, st in states.items():
            if st.get("Type") != "Task" or st.get("Resource") != MARK_FAILED:
                continue
            if resource(next_task(states, st.get("Next"))) != TERMINATE_NODES:
                continue  # records a cleanup that failed: the cleanup has run already
            recorders += 1
            catches = st.get("Catch") or []
            if not catches:
                problems.append(f"{uri}: {name} has no Catch: a failure inside it skips the cleanup")
            for catch in catches:
                to = next_task(states, catch.get("Next"))
                if resource(to) != TERMINATE_NODES:
                    problems.append(f"{uri}: a failure inside {name} goes to {to}, not to the cleanup")
        if any(st.get("Resource") == MARK_FAILED for st in states.values()):
            if not any(st.get("Type") == "Fail" and st.get("ErrorPath") == "$.error.Error"
                       for st in states.values()):
                problems.append(f"{uri}: no Fail state reports $.error (the error that failed the create)")
    if recorders == 0:
        problems.append("no MarkFailed Task goes on to the cleanup")
    return problems


def resource_text(res) -> str:
    """A Resource entry as text: a literal, or the string of its !Sub."""
    if isinstance(res, dict) and "Fn::Sub" in res:
        sub = res["Fn::Sub"]
        return sub if isinstance(sub, str) else str(sub[0])
    return res if isinstance(res, str) else json.dumps(res)


def check_launch_guardrails(template: dict, resources: dict, globals_: dict) -> list[str]:
    """The cost guardrails the API enforces and the launch role's conditions agree: every
    ec2:RunInstances grant on instances is bound to AllowedInstanceTypes (ec2:InstanceType), the
    functions read the same parameter, the default type is among the allowed ones, and every
    grant on images is bound to AmiOwners (ec2:Owner)."""
    problems = []
    params = template.get("Parameters") or {}
    allowed = params.get("AllowedInstanceTypes")
    if not allowed or allowed.get("Type") != "CommaDelimitedList":
        problems.append("Parameter AllowedInstanceTypes (CommaDelimitedList) is missing")
    else:
        default = str((params.get("DefaultInstanceType") or {}).get("Default"))
        types = [t.strip() for t in str(allowed.get("Default", "")).split(",")]
        if default not in types:
            problems.append(f"DefaultInstanceType {default} is not in AllowedInstanceTypes' default {types}")
    for name in ("MaxRootVolumeGib", "MaxNodesPerCluster", "MaxClustersPerPrincipal", "OwnClustersOnly", "AmiOwners"):
        if "Default" not in (params.get(name) or {}):
            problems.append(f"Parameter {name} (with a Default) is missing")
    env = ((globals_.get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    want = {"Fn::Join": [",", {"Ref": "AllowedInstanceTypes"}]}
    if env.get("MECPLANE_ALLOWED_INSTANCE_TYPES") != want:
        problems.append("Globals.Function.Environment MECPLANE_ALLOWED_INSTANCE_TYPES is not !Join [\",\", !Ref AllowedInstanceTypes]")
    for var, param in (("MECPLANE_MAX_ROOT_VOLUME_GIB", "MaxRootVolumeGib"), ("MECPLANE_MAX_NODES", "MaxNodesPerCluster")):
        if env.get(var) != {"Ref": param}:
            problems.append(f"Globals.Function.Environment {var} is not !Ref {param}")
    api_env = ((resources.get("ApiFunction", {}).get("Properties", {}).get("Environment") or {}).get("Variables")) or {}
    for var, param in (("MECPLANE_MAX_CLUSTERS_PER_PRINCIPAL", "MaxClustersPerPrincipal"),
                       ("MECPLANE_OWN_CLUSTERS_ONLY", "OwnClustersOnly")):
        if api_env.get(var) != {"Ref": param}:
            problems.append(f"ApiFunction environment {var} is not !Ref {param}")
    if (params.get("ReconcilePrincipals") or {}).get("Type") != "CommaDelimitedList":
        problems.append("Parameter ReconcilePrincipals (CommaDelimitedList) is missing")
    elif str(params["ReconcilePrincipals"].get("Default", "x")) != "":
        problems.append("Parameter ReconcilePrincipals must default to empty (nobody may run a reconcile that acts)")
    if api_env.get("MECPLANE_RECONCILE_PRINCIPALS") != {"Fn::Join": [",", {"Ref": "ReconcilePrincipals"}]}:
        problems.append("ApiFunction environment MECPLANE_RECONCILE_PRINCIPALS is not !Join [\",\", !Ref ReconcilePrincipals]")
    instance_grants = image_grants = 0
    for where, st in statements(template):
        if st.get("Effect") != "Allow" or "ec2:RunInstances" not in as_list(st.get("Action")):
            continue
        targets = [resource_text(r) for r in as_list(st.get("Resource"))]
        equals = (st.get("Condition") or {}).get("StringEquals") or {}
        if any(t.endswith(":instance/*") or t == "*" for t in targets):
            instance_grants += 1
            if equals.get("ec2:InstanceType") != {"Ref": "AllowedInstanceTypes"}:
                problems.append(f"{where}: ec2:RunInstances on instances without "
                                "StringEquals ec2:InstanceType: !Ref AllowedInstanceTypes")
        if any(":image/" in t or t == "*" for t in targets):
            image_grants += 1
            if equals.get("ec2:Owner") != {"Ref": "AmiOwners"}:
                problems.append(f"{where}: ec2:RunInstances on images without StringEquals ec2:Owner: !Ref AmiOwners")
    if instance_grants == 0 or image_grants == 0:
        problems.append("no ec2:RunInstances grant on instances and images found")
    return problems


def check_kubeconfig_scope(template: dict) -> list[str]:
    """A statement about kubeconfigs (its Sid names one) reaches only `.../<cluster>/kubeconfig`
    parameters, never a cluster's whole parameter path (its join token, its transport key)."""
    problems = []
    found = 0
    for where, st in statements(template):
        if "kubeconfig" not in str(st.get("Sid", "")).lower():
            continue
        if not any(str(a).lower().startswith("ssm:") for a in as_list(st.get("Action"))):
            continue
        found += 1
        for res in as_list(st.get("Resource")):
            if not resource_text(res).endswith(f":parameter{PARAMETER_ROOT}/*/kubeconfig"):
                problems.append(f"{where} ({st.get('Sid')}): Resource {resource_text(res)!r}, want ...{PARAMETER_ROOT}/*/kubeconfig")
    if found == 0:
        problems.append("no SSM statement whose Sid names the kubeconfig")
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
        managed = [m.get("Fn::Sub", m) if isinstance(m, dict) else m for m in as_list(props.get("ManagedPolicyArns"))]
        if managed:
            problems.append(f"{NODE_ROLE}: managed policies {managed}; the node role has none "
                            "(AmazonSSMManagedInstanceCore allows ssm:GetParameter* on \"*\")")
        if props.get("PermissionsBoundary") is not None:
            problems.append(f"{NODE_ROLE}: a PermissionsBoundary of the template's own is not checked here")
        for res in template.get("Resources", {}).values():
            if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and \
                    {"Ref": NODE_ROLE} in as_list((res.get("Properties") or {}).get("Roles")):
                problems.append(f"{NODE_ROLE}: a policy resource attached to it; its policies are inline, checked here")
        for policy in props.get("Policies") or []:
            for st in as_list((policy.get("PolicyDocument") or {}).get("Statement")):
                if st.get("Effect") == "Deny":
                    continue
                actions = set(as_list(st.get("Action")))
                resources = [resource_text(r) for r in as_list(st.get("Resource"))]
                heartbeat = actions <= NODE_AGENT_HEARTBEAT and all(r.endswith(":instance/*") for r in resources)
                messages = actions <= NODE_AGENT_MESSAGES
                if not (heartbeat or messages):
                    problems.append(f"{NODE_ROLE}: inline policy {policy.get('PolicyName')} allows "
                                    f"{sorted(actions - NODE_AGENT_HEARTBEAT - NODE_AGENT_MESSAGES) or sorted(actions)} "
                                    f"on {resources} ({st.get('Sid')}); the node role allows only the SSM agent's calls")
    return problems


# ---------------------------------------------------------------- ownership (docs/ownership.md)

DEPLOYMENT_TAG = "mecplane:deployment"
DEPLOYMENT = {"Ref": "NamePrefix"}
NAME_PREFIX_PATTERN = "^[a-z][a-z0-9-]{0,12}$"
PARAMETER_ROOT = "/${NamePrefix}/clusters"
# The resources whose ownership IAM checks, by the ARN's resource part.
OWNED_KINDS = (":instance/", ":security-group/", ":loadbalancer/", ":targetgroup/", ":listener/")
# Create calls, by the kind of resource they make: that resource carries the deployment tag from
# the start (aws:RequestTag); every other resource of such a call is an existing one.
CREATES = {
    "ec2:RunInstances": ":instance/",
    "ec2:CreateSecurityGroup": ":security-group/",
    "elasticloadbalancing:CreateLoadBalancer": ":loadbalancer/",
    "elasticloadbalancing:CreateTargetGroup": ":targetgroup/",
    "elasticloadbalancing:CreateListener": ":listener/",
}
# The only calls that write tags, and the creates they may be part of.
TAGGING = {
    "ec2:CreateTags": ("ec2:CreateAction", {"RunInstances", "CreateSecurityGroup"}),
    "elasticloadbalancing:AddTags": ("elasticloadbalancing:CreateAction",
                                     {"CreateLoadBalancer", "CreateTargetGroup", "CreateListener"}),
}
UNTAGGING = {"ec2:DeleteTags", "elasticloadbalancing:RemoveTags"}
NEEDS_PROFILE = {"ec2:TerminateInstances", "ec2:RunInstances"}


def is_read(action: str) -> bool:
    name = action.split(":", 1)[-1]
    return name.startswith(("Describe", "Get", "List"))


def check_ownership(template: dict, resources: dict, globals_: dict) -> list[str]:
    """IAM agrees with the record (docs/ownership.md): every call that changes an instance,
    security group, load balancer, listener or target group is conditioned on the *value* of its
    mecplane:deployment tag (a Null condition only says a tag key exists, and anyone with
    ec2:CreateTags can make one exist); terminate and launch also on the node instance profile;
    every create must carry the deployment tag; tags are written only inside a create and never
    removed; parameters live under the deployment's root; the functions know the deployment."""
    problems = []
    params = template.get("Parameters") or {}
    prefix = params.get("NamePrefix") or {}
    if prefix.get("AllowedPattern") != NAME_PREFIX_PATTERN:
        problems.append(f"Parameter NamePrefix AllowedPattern is {prefix.get('AllowedPattern')!r}, want "
                        f"{NAME_PREFIX_PATTERN!r} (<prefix>-<cluster id> fits ELB's 32 characters)")
    env = ((globals_.get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    if env.get("MECPLANE_DEPLOYMENT") != DEPLOYMENT:
        problems.append("Globals.Function.Environment MECPLANE_DEPLOYMENT is not !Ref NamePrefix")
    profile = {"Fn::GetAtt": [NODE_PROFILE, "Arn"]}

    for where, st in statements(template):
        if st.get("Effect") != "Allow" or ".KeyPolicy." in where or ".AssumeRolePolicyDocument." in where:
            continue
        if where.startswith(f"{NODE_ROLE}."):
            continue  # the SSM agent's calls about its own instance (check_pass_role)
        actions = [a for a in as_list(st.get("Action")) if isinstance(a, str)]
        targets = [resource_text(r) for r in as_list(st.get("Resource"))]
        cond = st.get("Condition") or {}
        equals = cond.get("StringEquals") or {}
        nulls = sorted(k for k in (cond.get("Null") or {}) if "mecplane:" in k)
        only_null = f" (Null {nulls} only checks that a tag key exists)" if nulls else ""
        sid = f"{where} ({st.get('Sid')})"

        for action in actions:
            if action in UNTAGGING:
                problems.append(f"{sid}: allows {action}; no role removes the project's tags")
            if action in TAGGING:
                key, creates = TAGGING[action]
                given = set(as_list(equals.get(key)))
                if not given or not given <= creates:
                    problems.append(f"{sid}: {action} without StringEquals {key} in {sorted(creates)}: "
                                    "tags could be added or changed after creation")

        for target in targets:
            # Parameters: only under the deployment's root (or the public AMI parameters).
            if ":parameter" in target and "${AmiParameterPrefix}" not in target \
                    and not target.split(":parameter", 1)[1].startswith(PARAMETER_ROOT + "/"):
                problems.append(f"{sid}: parameter {target!r} outside {PARAMETER_ROOT}/")

            kind = next((k for k in OWNED_KINDS if k in target), None)
            if kind is None and target != "*":
                continue
            for action in actions:
                if is_read(action) or action in TAGGING or action.lower() == "iam:passrole":
                    continue
                if not action.startswith(("ec2:", "elasticloadbalancing:", "ssm:")):
                    continue
                if action.startswith("ssm:") and kind != ":instance/":
                    continue  # documents, parameters: not a resource the deployment tags
                if target == "*":
                    problems.append(f"{sid}: {action} on Resource \"*\" cannot be bound to the deployment")
                    continue
                made_here = {CREATES[a] for a in actions if a in CREATES}
                if action in CREATES and kind in made_here and CREATES[action] != kind:
                    continue  # CreateLoadBalancer does not touch the target group of the same statement
                if CREATES.get(action) == kind:
                    if equals.get(f"aws:RequestTag/{DEPLOYMENT_TAG}") != DEPLOYMENT:
                        problems.append(f"{sid}: {action} creates a {kind.strip(':/')} without StringEquals "
                                        f"aws:RequestTag/{DEPLOYMENT_TAG}: !Ref NamePrefix{only_null}")
                else:
                    keys = [f"aws:ResourceTag/{DEPLOYMENT_TAG}"]
                    if action == "ssm:SendCommand":
                        keys.append(f"ssm:resourceTag/{DEPLOYMENT_TAG}")
                    if not any(equals.get(k) == DEPLOYMENT for k in keys):
                        problems.append(f"{sid}: {action} on {kind.strip(':/')} without StringEquals "
                                        f"{' or '.join(keys)}: !Ref NamePrefix{only_null}")
                if action in NEEDS_PROFILE and kind == ":instance/":
                    arn_equals = (cond.get("ArnEquals") or {}).get("ec2:InstanceProfile")
                    if arn_equals != profile and equals.get("ec2:InstanceProfile") != profile:
                        problems.append(f"{sid}: {action} on instances without ArnEquals "
                                        f"ec2:InstanceProfile: !GetAtt {NODE_PROFILE}.Arn")
    return problems


# Who may use the secrets key, through SSM, for which parameters (suffix under
# /${NamePrefix}/clusters/*/): store-kubeconfig writes kubeconfigs and its transport keys, the API reads
# kubeconfigs. Nobody else (join tokens are never stored: stages/join_nodes.rs).
SECRETS_KEY_USERS = {
    ("StoreKubeconfigRole", "kubeconfig"): {"kms:Encrypt", "kms:GenerateDataKey"},
    ("StoreKubeconfigRole", "transport-key"): {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"},
    ("ApiRole", "kubeconfig"): {"kms:Decrypt"},
}
KMS_USE = {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
           "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:CreateGrant"}


def check_secrets_key(template: dict, resources: dict, globals_: dict) -> list[str]:
    """Three layers keep a node (and so a pod) from the project's secrets: the stages write every
    SecureString with a key of the template, whose policy lets only the roles that need it use it,
    only through SSM and only for their parameters; the node role denies itself the parameters and
    the key; nodes launch with an IMDS hop limit of 1, enforced by the launch role."""
    problems = []
    key = resources.get("SecretsKey") or {}
    if key.get("Type") != "AWS::KMS::Key":
        return ["no AWS::KMS::Key SecretsKey"]
    props = key.get("Properties") or {}
    if props.get("EnableKeyRotation") is not True:
        problems.append("SecretsKey: EnableKeyRotation is not true")
    alias = next((r for r in resources.values() if r.get("Type") == "AWS::KMS::Alias"
                  and (r.get("Properties") or {}).get("TargetKeyId") == {"Ref": "SecretsKey"}), None)
    env = ((globals_.get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    if alias is None:
        problems.append("no AWS::KMS::Alias targeting SecretsKey")
    elif env.get("MECPLANE_SECRETS_KEY") != alias["Properties"].get("AliasName"):
        problems.append("Globals.Function.Environment MECPLANE_SECRETS_KEY is not SecretsKey's alias")
    granted = {}
    for i, st in enumerate(as_list((props.get("KeyPolicy") or {}).get("Statement"))):
        where = f"SecretsKey.KeyPolicy[{i}] ({st.get('Sid')})"
        if st.get("Effect") != "Allow":
            continue
        actions = set(as_list(st.get("Action")))
        principal = (st.get("Principal") or {}).get("AWS")
        role = getatt_target(principal)
        if role is None:
            if actions & KMS_USE:
                problems.append(f"{where}: {sorted(actions & KMS_USE)} for {principal}, not a role of the template")
            continue
        cond = st.get("Condition") or {}
        via = resource_text((cond.get("StringEquals") or {}).get("kms:ViaService"))
        arn = resource_text((cond.get("StringLike") or {}).get("kms:EncryptionContext:PARAMETER_ARN"))
        if not via.startswith("ssm."):
            problems.append(f"{where}: no StringEquals kms:ViaService ssm.<region>")
        marker = f":parameter{PARAMETER_ROOT}/*/"
        suffix = arn.split(marker, 1)[1] if marker in arn else None
        if suffix is None:
            problems.append(f"{where}: no StringLike kms:EncryptionContext:PARAMETER_ARN ...{PARAMETER_ROOT}/*/<name>")
            continue
        granted.setdefault((role, suffix), set()).update(actions)
    for grant, actions in granted.items():
        want = SECRETS_KEY_USERS.get(grant)
        if want is None or not actions <= want:
            problems.append(f"SecretsKey: {grant[0]} may {sorted(actions)} on {grant[1]}; allowed: {sorted(want or [])}")
    for grant in SECRETS_KEY_USERS:
        if grant not in granted:
            problems.append(f"SecretsKey: {grant[0]} cannot use the key for {grant[1]}")

    node = (resources.get(NODE_ROLE) or {}).get("Properties") or {}
    denies = [st for policy in node.get("Policies") or []
              for st in as_list((policy.get("PolicyDocument") or {}).get("Statement")) if st.get("Effect") == "Deny"]
    denied_reads = set()
    for st in denies:
        if as_list(st.get("Resource")) == ["*"] and not st.get("Condition"):
            denied_reads |= set(as_list(st.get("Action"))) & PARAMETER_READS
    alias_name = (alias or {}).get("Properties", {}).get("AliasName")
    denied_use = set()
    for st in denies:
        if as_list(st.get("Resource")) == ["*"] and \
                ((st.get("Condition") or {}).get("ForAnyValue:StringEquals") or {}).get("kms:ResourceAliases") == alias_name:
            denied_use |= set(as_list(st.get("Action"))) & KMS_USE
    if denied_reads != PARAMETER_READS:
        problems.append(f"{NODE_ROLE}: no unconditional Deny of {sorted(PARAMETER_READS - denied_reads)} "
                        "on Resource \"*\" (every parameter of the account)")
    if denied_use != KMS_USE:
        problems.append(f"{NODE_ROLE}: no Deny of {sorted(KMS_USE - denied_use)} on the key of SecretsKey's alias "
                        "(kms:ResourceAliases)")

    launches = 0
    for where, st in statements(template):
        if st.get("Effect") != "Allow" or "ec2:RunInstances" not in as_list(st.get("Action")):
            continue
        if not any(resource_text(r).endswith(":instance/*") or r == "*" for r in as_list(st.get("Resource"))):
            continue
        launches += 1
        hop = ((st.get("Condition") or {}).get("NumericEquals") or {}).get("ec2:MetadataHttpPutResponseHopLimit")
        if str(hop) != "1":
            problems.append(f"{where}: ec2:RunInstances on instances without NumericEquals "
                            "ec2:MetadataHttpPutResponseHopLimit: 1")
    if launches == 0:
        problems.append("no ec2:RunInstances grant on instances found")
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
    stage_functions = [n for n in names if n != "api" and n not in TRIGGERED_FUNCTIONS]

    report = Report()
    report.check("no wildcard in any Action/NotAction", check_actions(template))
    report.check("Resource \"*\" only for actions without resource-level permissions", check_star_resources(template))
    report.check("every HTTP API route is AWS_IAM", check_http_api(resources))
    report.check("every function and state machine has a role of its own", check_roles(resources, globals_))
    handlers = binary_handlers(args.template.resolve().parent.parent / "functions" / "src" / "main.rs")
    report.check("functions match the contract: one artifact, a handler each", check_functions(resources, globals_, names, handlers))
    report.check("environment per the contract", check_environment(resources, globals_))
    report.check("reconcile triggers: a schedule and the EC2 state-change rule target ReconcileFunction",
                 check_reconcile_triggers(resources, template.get("Parameters") or {}))
    report.check("state machine substitutions: each used, each defined, invoke = definition",
                 check_state_machines(resources, args.template.resolve().parent, stage_functions))
    definitions = machine_definitions(resources, args.template.resolve().parent)
    report.check("every Task retries transient errors and Lambda timeouts", check_task_retries(definitions))
    report.check("a failure inside MarkFailed still runs the cleanup", check_mark_failed_cleanup(definitions))
    report.check("iam:PassRole only on the node role; node role: the SSM agent's calls only, no managed policy",
                 check_pass_role(template, resources))
    report.check("cost guardrails: the API's limits and the launch role's ec2:InstanceType/ec2:Owner agree",
                 check_launch_guardrails(template, resources, globals_))
    report.check("kubeconfig statements name only */kubeconfig parameters", check_kubeconfig_scope(template))
    report.check("secrets: KMS key policy, node role Deny, IMDS hop limit 1", check_secrets_key(template, resources, globals_))
    report.check("ownership: tag values, node profile, tags only at creation, the deployment's parameter root",
                 check_ownership(template, resources, globals_))
    report.check("ClustersTable per the contract", check_table(resources))
    report.check("every log group has a retention", check_log_groups(resources))
    if report.failures:
        print(f"assert_template: {report.failures} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
