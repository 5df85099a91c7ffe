#!/usr/bin/env python3
"""Create the local stack's resources in moto from the SAM template (infra/template.yaml).

Reads the template with a YAML loader that keeps CloudFormation short tags (!Ref, !Sub, !GetAtt,
!If, ...) as opaque values, then, against moto:

- creates the DynamoDB table (AWS::DynamoDB::Table or AWS::Serverless::SimpleTable) with its
  KeySchema, AttributeDefinitions, GlobalSecondaryIndexes, LocalSecondaryIndexes and BillingMode;
  an existing table gets its missing GSIs added;
- creates each AWS::Serverless::StateMachine (and AWS::StepFunctions::StateMachine) from its
  DefinitionUri / Definition, replacing every ${Name} of DefinitionSubstitutions: a function
  (!GetAtt XFunction.Arn / !Ref XFunction) becomes
  arn:aws:lambda:<region>:123456789012:function:<its Handler>; any ${...} left over is an
  error. Name = the Name property when literal, else the logical id; an existing machine is updated;
- creates AWS::IAM::InstanceProfile resources (the node instance profile);
- creates each AWS::KMS::Alias and the AWS::KMS::Key it targets (the secrets key), once: an
  existing alias is kept.

Prints one JSON object on stdout:
  {"table": name, "tables": {logical: name}, "state_machines": {logical: arn},
   "instance_profile": name|null, "functions": {name: {"logical_id", "timeout", "memory_size",
   "environment": {the variables whose values resolve locally}}},
   "parameters": {name: its value: the override, else its Default (a list for list types)}}
The gateway reads "parameters" for what the template says about the local stack's own emulation
(ReconcileRateMinutes: how often it runs the reconcile function, as the schedule would).

Values resolved: literals, parameter values (a --parameter override, else the Default), pseudo
parameters, !Ref / !GetAtt .Arn of functions, tables and instance profiles, !Sub and !Join of those.

Several local stacks can share one moto, as several deployments share an account: give each its own
NamePrefix (`--parameter NamePrefix=beta`, or MECPLANE_TEMPLATE_PARAMETERS="NamePrefix=beta" in the
environment, which is how a gateway started by a test passes it). The stack name defaults to the
NamePrefix, so the table and instance profile differ as well as the state machines and the KMS
alias; the functions' MECPLANE_DEPLOYMENT is the NamePrefix.

Usage: provision.py --template infra/template.yaml --endpoint-url http://127.0.0.1:47501
                    [--region us-east-1] [--cluster-regions us-east-1,eu-west-1]
                    [--stack-name NAME (default: the NamePrefix)] [--parameter KEY=VALUE ...]
                    [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

if __name__ == "__main__" and os.environ.get("MECPLANE_MOTO_ZYGOTE"):
    # Under `make test`: run as a fork of local/moto_zygote.py, which has imported this file,
    # boto3 and the clients' models once; when that zygote does not answer, on as usual.
    from moto_zygote import run_as_fork

    run_as_fork("provision")

import yaml  # noqa: E402

ACCOUNT_ID = "123456789012"
# The services this file makes boto3 clients of: in the stack's region, and in each region it
# serves (local/moto_zygote.py loads their models once for every run it forks).
STACK_SERVICES = ("dynamodb", "stepfunctions", "iam", "kms")
REGION_SERVICES = ("ec2", "ssm")
SFN_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/mecplane-local-states"


class ProvisionError(Exception):
    """A template the local stack cannot provision from."""


# --------------------------------------------------------------------------------------------------
# Template loading


class Tag:
    """An opaque CloudFormation short-tag value such as ``!GetAtt Foo.Arn``."""

    def __init__(self, tag: str, value):
        self.tag = tag  # without the leading "!"
        self.value = value

    def __repr__(self) -> str:
        return f"!{self.tag} {self.value!r}"


class CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that accepts every ``!Tag`` as a :class:`Tag` (libyaml's, parsing the template
    ~10× faster, when PyYAML has it; every local stack start runs this)."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> Tag:
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tag(tag_suffix, value)


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict:
    with path.open() as f:
        doc = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - CfnLoader derives from SafeLoader
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise ProvisionError(f"{path}: no Resources section")
    return doc


def intrinsic(value):
    """Normalises long-form intrinsics ({"Fn::GetAtt": ...}, {"Ref": ...}) into :class:`Tag`."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "Ref":
            return Tag("Ref", inner)
        if key.startswith("Fn::"):
            return Tag(key[4:], inner)
    return value


# --------------------------------------------------------------------------------------------------
# Resolution of the values the local stack understands


def parse_parameters(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE strings (from --parameter and MECPLANE_TEMPLATE_PARAMETERS) as a dict; later wins."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ProvisionError(f"template parameter {pair!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


class Context:
    def __init__(self, template: dict, template_dir: Path, region: str, stack: str | None,
                 overrides: dict[str, str] | None = None):
        self.template = template
        self.resources: dict = template["Resources"]
        self.globals: dict = (template.get("Globals") or {}).get("Function") or {}
        self.dir = template_dir
        self.region = region
        self.parameters: dict = template.get("Parameters") or {}
        self.overrides: dict[str, str] = dict(overrides or {})
        for name, value in self.overrides.items():
            self.check_override(name, value)
        if stack is None:
            stack = str(self.parameter("NamePrefix")) if "NamePrefix" in self.parameters else "mecplane"
        self.stack = stack
        self.table_names: dict[str, str] = {}
        self.state_machine_arns: dict[str, str] = {}

    def check_override(self, name: str, value: str) -> None:
        """An override names a parameter of the template and passes its AllowedPattern/AllowedValues,
        as CloudFormation would check it."""
        param = self.parameters.get(name)
        if not isinstance(param, dict):
            raise ProvisionError(f"--parameter {name}: the template has no parameter {name}")
        pattern = param.get("AllowedPattern")
        if isinstance(pattern, str) and not re.fullmatch(pattern, value):
            raise ProvisionError(f"--parameter {name}={value!r} does not match its AllowedPattern {pattern}")
        allowed = param.get("AllowedValues")
        if isinstance(allowed, list) and value not in [str(v) for v in allowed]:
            raise ProvisionError(f"--parameter {name}={value!r} is not one of {allowed}")

    def pseudo(self, name: str):
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.stack,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }.get(name)

    def parameter(self, name: str):
        """The value of a template parameter: its override, else its Default (a list for
        CommaDelimitedList)."""
        param = self.parameters.get(name)
        if name in self.overrides and isinstance(param, dict):
            value = self.overrides[name]
        elif not isinstance(param, dict) or "Default" not in param:
            raise ProvisionError(f"parameter {name} has no Default")
        else:
            value = param["Default"]
        if str(param.get("Type", "")).startswith("CommaDelimitedList") or str(param.get("Type", "")).startswith("List<"):
            return [v.strip() for v in str(value).split(",")] if not isinstance(value, list) else value
        return value

    def resource(self, logical_id: str) -> dict:
        res = self.resources.get(logical_id)
        if not isinstance(res, dict):
            raise ProvisionError(f"unknown resource {logical_id!r}")
        return res

    def function_name(self, logical_id: str) -> str:
        """The local function name of an AWS::Serverless::Function: its Handler (the wiring of the
        one `bootstrap` binary it serves, passed to it as _HANDLER)."""
        res = self.resource(logical_id)
        if res.get("Type") not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            raise ProvisionError(f"{logical_id} is not a function")
        props = res.get("Properties") or {}
        handler = props.get("Handler", self.globals.get("Handler"))
        if not isinstance(handler, str) or not handler.strip():
            raise ProvisionError(f"{logical_id} has no Handler")
        return handler.strip()

    def function_arn(self, logical_id: str) -> str:
        name = self.function_name(logical_id)
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    def resolve(self, value, what: str):
        """Resolves a literal, !Ref, !GetAtt or simple !Sub to a string; raises when it cannot."""
        value = intrinsic(value)
        if isinstance(value, (str, int, float, bool)):
            return value if not isinstance(value, bool) else str(value).lower()
        if not isinstance(value, Tag):
            raise ProvisionError(f"{what}: cannot resolve {value!r}")
        if value.tag == "Ref":
            target = value.value
            if isinstance(target, str) and target.startswith("AWS::"):
                return self.pseudo(target)
            if target in self.parameters:
                return self.parameter(target)
            res = self.resource(target)
            kind = res.get("Type")
            if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
                return self.function_name(target)
            if kind in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
                return self.table_name(target)
            if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
                if target in self.state_machine_arns:
                    return self.state_machine_arns[target]
            if kind == "AWS::IAM::InstanceProfile":
                return self.instance_profile_name(target)
            raise ProvisionError(f"{what}: cannot resolve !Ref {target}")
        if value.tag == "GetAtt":
            parts = value.value.split(".", 1) if isinstance(value.value, str) else list(value.value)
            if len(parts) != 2:
                raise ProvisionError(f"{what}: bad !GetAtt {value.value!r}")
            logical, attr = parts
            kind = self.resource(logical).get("Type")
            if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function") and attr == "Arn":
                return self.function_arn(logical)
            if kind in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable") and attr == "Arn":
                return f"arn:aws:dynamodb:{self.region}:{ACCOUNT_ID}:table/{self.table_name(logical)}"
            raise ProvisionError(f"{what}: cannot resolve !GetAtt {logical}.{attr}")
        if value.tag == "Sub" and isinstance(value.value, str):
            return self.substitute(value.value, {}, what)
        if value.tag == "Sub" and isinstance(value.value, list) and len(value.value) == 2:
            return self.substitute(value.value[0], value.value[1] or {}, what)
        if value.tag == "Join" and isinstance(value.value, list) and len(value.value) == 2:
            sep, items = value.value
            items = self.resolve(items, what) if not isinstance(items, list) else items
            if not isinstance(items, list):
                raise ProvisionError(f"{what}: !Join of a non-list")
            return str(sep).join(str(self.resolve(i, what)) for i in items)
        raise ProvisionError(f"{what}: cannot resolve !{value.tag}")

    def substitute(self, text: str, variables: dict, what: str) -> str:
        def repl(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.resolve(variables[name], f"{what} ${{{name}}}"))
            if name.startswith("AWS::"):
                v = self.pseudo(name)
                if v is not None:
                    return str(v)
            if name in self.parameters:
                v = self.parameter(name)
                return ",".join(map(str, v)) if isinstance(v, list) else str(v)
            if "." in name:
                return str(self.resolve(Tag("GetAtt", name), f"{what} ${{{name}}}"))
            if name in self.resources:
                return str(self.resolve(Tag("Ref", name), f"{what} ${{{name}}}"))
            raise ProvisionError(f"{what}: no value for ${{{name}}}")

        return re.sub(r"\$\{([^}]+)\}", repl, text)

    def literal_or(self, value, default: str) -> str:
        try:
            v = self.resolve(value, "name")
            return str(v) if v else default
        except ProvisionError:
            return default

    def table_name(self, logical_id: str) -> str:
        if logical_id not in self.table_names:
            props = self.resource(logical_id).get("Properties") or {}
            self.table_names[logical_id] = self.literal_or(
                props.get("TableName"), f"{self.stack}-{logical_id}"
            )
        return self.table_names[logical_id]

    def instance_profile_name(self, logical_id: str) -> str:
        props = self.resource(logical_id).get("Properties") or {}
        return self.literal_or(props.get("InstanceProfileName"), f"{self.stack}-{logical_id}")

    def of_type(self, *types: str) -> list[tuple[str, dict]]:
        return [
            (lid, res)
            for lid, res in self.resources.items()
            if isinstance(res, dict) and res.get("Type") in types
        ]


# --------------------------------------------------------------------------------------------------
# Tables

TABLE_KEYS = ("KeySchema", "AttributeDefinitions", "BillingMode", "ProvisionedThroughput")
INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
SIMPLE_TYPES = {"String": "S", "Number": "N", "Binary": "B"}


def contains_tag(value) -> bool:
    value = intrinsic(value)
    if isinstance(value, Tag):
        return True
    if isinstance(value, dict):
        return any(contains_tag(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_tag(v) for v in value)
    return False


def table_request(ctx: Context, logical_id: str, res: dict) -> dict:
    props = res.get("Properties") or {}
    name = ctx.table_name(logical_id)
    if res["Type"] == "AWS::Serverless::SimpleTable":
        pk = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
        req = {
            "TableName": name,
            "KeySchema": [{"AttributeName": pk["Name"], "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": pk["Name"], "AttributeType": SIMPLE_TYPES.get(pk.get("Type"), "S")}
            ],
        }
        if props.get("ProvisionedThroughput"):
            req["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        else:
            req["BillingMode"] = "PAY_PER_REQUEST"
        return req
    req = {"TableName": name}
    for key in TABLE_KEYS:
        if key in props:
            req[key] = props[key]
    if "KeySchema" not in req or "AttributeDefinitions" not in req:
        raise ProvisionError(f"{logical_id}: KeySchema and AttributeDefinitions are required")
    if "BillingMode" not in req and "ProvisionedThroughput" not in req:
        req["BillingMode"] = "PAY_PER_REQUEST"
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            req[key] = [{k: ix[k] for k in INDEX_KEYS if k in ix} for ix in props[key]]
    stream = props.get("StreamSpecification")
    if isinstance(stream, dict) and stream.get("StreamViewType"):
        req["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    if contains_tag(req):
        raise ProvisionError(f"{logical_id}: table properties use intrinsics the local stack cannot resolve")
    return req


def ensure_table(ddb, req: dict, ttl: dict | None) -> None:
    name = req["TableName"]
    try:
        desc = ddb.describe_table(TableName=name)["Table"]
    except ddb.exceptions.ResourceNotFoundException:
        ddb.create_table(**req)
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    else:
        existing = {ix["IndexName"] for ix in desc.get("GlobalSecondaryIndexes", [])}
        missing = [ix for ix in req.get("GlobalSecondaryIndexes", []) if ix["IndexName"] not in existing]
        if missing:
            ddb.update_table(
                TableName=name,
                AttributeDefinitions=req["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": ix} for ix in missing],
            )
    if ttl and ttl.get("Enabled") and ttl.get("AttributeName"):
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )


# --------------------------------------------------------------------------------------------------
# State machines

SUBSTITUTION = re.compile(r"\$\{([^}]*)\}")


def state_machine_definition(ctx: Context, logical_id: str, res: dict) -> str:
    props = res.get("Properties") or {}
    if "DefinitionUri" in props or "DefinitionS3Location" in props:
        uri = props.get("DefinitionUri", props.get("DefinitionS3Location"))
        if not isinstance(uri, str):
            raise ProvisionError(f"{logical_id}: DefinitionUri must be a local path")
        path = (ctx.dir / uri).resolve()
        if not path.is_file():
            raise ProvisionError(f"{logical_id}: definition file {path} not found")
        text = path.read_text()
    elif "Definition" in props:
        text = json.dumps(props["Definition"])
    elif isinstance(props.get("DefinitionString"), str):
        text = props["DefinitionString"]
    else:
        raise ProvisionError(f"{logical_id}: no Definition, DefinitionUri or DefinitionString")

    subs = props.get("DefinitionSubstitutions") or {}
    if not isinstance(subs, dict):
        raise ProvisionError(f"{logical_id}: DefinitionSubstitutions must be a mapping")

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name in subs:
            return str(ctx.resolve(subs[name], f"{logical_id} ${{{name}}}"))
        # ${XFunctionArn} with no explicit substitution: the function XFunction, if it exists.
        if name.endswith("FunctionArn") and name[: -len("Arn")] in ctx.resources:
            return ctx.function_arn(name[: -len("Arn")])
        return m.group(0)

    text = SUBSTITUTION.sub(repl, text)
    left = sorted(set(SUBSTITUTION.findall(text)))
    if left:
        raise ProvisionError(
            f"{logical_id}: unsubstituted {', '.join('${' + n + '}' for n in left)} in its definition"
        )
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise ProvisionError(f"{logical_id}: definition is not valid JSON after substitution: {e}") from e
    return text


def ensure_state_machine(sfn, name: str, definition: str, kind: str) -> str:
    existing = None
    for page in sfn.get_paginator("list_state_machines").paginate():
        for sm in page["stateMachines"]:
            if sm["name"] == name:
                existing = sm["stateMachineArn"]
    if existing:
        sfn.update_state_machine(stateMachineArn=existing, definition=definition, roleArn=SFN_ROLE_ARN)
        return existing
    return sfn.create_state_machine(name=name, definition=definition, roleArn=SFN_ROLE_ARN, type=kind)[
        "stateMachineArn"
    ]


# --------------------------------------------------------------------------------------------------
# Functions and instance profiles


def function_facts(ctx: Context) -> dict:
    facts = {}
    for logical_id, res in ctx.of_type("AWS::Serverless::Function"):
        props = res.get("Properties") or {}
        env = {}
        variables = {}
        variables.update(((ctx.globals.get("Environment") or {}).get("Variables")) or {})
        variables.update(((props.get("Environment") or {}).get("Variables")) or {})
        for k, v in variables.items():
            try:
                resolved = ctx.resolve(v, f"{logical_id} environment {k}")
            except ProvisionError:
                continue  # the gateway sets what the local stack needs
            if isinstance(resolved, list):
                resolved = ",".join(map(str, resolved))
            if resolved is not None:
                env[k] = str(resolved)
        timeout = props.get("Timeout", ctx.globals.get("Timeout"))
        memory = props.get("MemorySize", ctx.globals.get("MemorySize"))
        facts[ctx.function_name(logical_id)] = {
            "logical_id": logical_id,
            "timeout": timeout if isinstance(timeout, int) else None,
            "memory_size": memory if isinstance(memory, int) else None,
            "environment": env,
        }
    return facts


def ensure_instance_profile(iam, name: str) -> None:
    try:
        iam.create_instance_profile(InstanceProfileName=name)
    except iam.exceptions.EntityAlreadyExistsException:
        pass


def kms_aliases(ctx: "Context") -> list[tuple[str, str]]:
    """(alias name, its key's description) of every AWS::KMS::Alias targeting a key of the template."""
    out = []
    for _, res in ctx.of_type("AWS::KMS::Alias"):
        props = res.get("Properties") or {}
        target = intrinsic(props.get("TargetKeyId"))
        if not (isinstance(target, Tag) and target.tag == "Ref"):
            raise ProvisionError(f"KMS alias {props.get('AliasName')!r}: TargetKeyId is not a !Ref")
        key = ctx.resource(target.value)
        description = (key.get("Properties") or {}).get("Description", target.value)
        out.append((str(ctx.resolve(props.get("AliasName"), "KMS alias")), str(description)))
    return out


def ensure_kms_alias(kms, alias: str, description: str) -> None:
    names = {a["AliasName"] for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]}
    if alias not in names:
        key = kms.create_key(Description=description)["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=alias, TargetKeyId=key)


# --------------------------------------------------------------------------------------------------


# moto reserves /aws/service/... and does not publish Canonical's Ubuntu parameters, so the local
# stack publishes its own under this prefix and points the functions at it.
LOCAL_AMI_PREFIX = os.environ.get("MECPLANE_LOCAL_AMI_PREFIX", "/mecplane-local/ubuntu/server")
UBUNTU_IMAGES = [("22.04", "ebs-gp2"), ("24.04", "ebs-gp3")]


# The moto images that stand in for Ubuntu: a name every region of the pinned moto has in both
# architectures (three each). Asking for these instead of every Amazon image keeps moto from
# serializing ~1,300 images (1.2 MB of XML, ~1 s of its CPU) per region at every stack start.
STAND_IN_IMAGES = "al2023-ami-minimal-*"


def seed_images(ec2, ssm, prefix: str) -> None:
    """Publishes an AMI id per Ubuntu release and architecture, as Canonical's parameters do,
    using images moto knows so RunInstances accepts them: per architecture, the lowest id of the
    stand-in images (any image of the architecture when moto has none of those)."""
    by_arch = {}
    for moto_arch in ("x86_64", "arm64"):
        arch_filter = {"Name": "architecture", "Values": [moto_arch]}
        name_filter = {"Name": "name", "Values": [STAND_IN_IMAGES]}
        images = (ec2.describe_images(Owners=["amazon"], Filters=[arch_filter, name_filter])["Images"]
                  or ec2.describe_images(Filters=[arch_filter])["Images"])
        if images:
            by_arch[moto_arch] = min(image["ImageId"] for image in images)
    if not by_arch:
        raise ProvisionError("moto has no images to stand in for Ubuntu AMIs")
    fallback = by_arch.get("x86_64") or next(iter(by_arch.values()))
    for release, volume in UBUNTU_IMAGES:
        for arch, moto_arch in (("amd64", "x86_64"), ("arm64", "arm64")):
            name = f"{prefix}/{release}/stable/current/{arch}/hvm/{volume}/ami-id"
            ssm.put_parameter(Name=name, Value=by_arch.get(moto_arch, fallback), Type="String", Overwrite=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--template", required=True, type=Path)
    p.add_argument("--endpoint-url", default=os.environ.get("MECPLANE_MOTO_ENDPOINT", "http://127.0.0.1:47501"))
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--cluster-regions", default="",
                   help="comma-separated regions clusters may live in (default: --region); AMI parameters "
                        "are published in each and they become the functions' MECPLANE_ALLOWED_REGIONS")
    p.add_argument("--stack-name", default=None,
                   help="names the table and instance profile (default: the NamePrefix, so two deployments in "
                        "one moto differ)")
    p.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                   help="a template parameter's value instead of its Default (repeatable; also "
                        "MECPLANE_TEMPLATE_PARAMETERS=\"K=V K2=V2\", which these override)")
    p.add_argument("--dry-run", action="store_true", help="resolve everything, create nothing")
    args = p.parse_args(argv)
    regions = [args.region] + [r.strip() for r in args.cluster_regions.split(",")
                               if r.strip() and r.strip() != args.region]

    try:
        template = load_template(args.template)
        overrides = parse_parameters(os.environ.get("MECPLANE_TEMPLATE_PARAMETERS", "").split() + args.parameter)
        ctx = Context(template, args.template.resolve().parent, args.region, args.stack_name, overrides)
        out = {"table": None, "tables": {}, "state_machines": {}, "instance_profile": None, "functions": {},
               "parameters": {}}
        out["functions"] = function_facts(ctx)
        out["parameters"] = {name: ctx.parameter(name) for name, param in ctx.parameters.items()
                             if isinstance(param, dict) and ("Default" in param or name in ctx.overrides)}

        tables = ctx.of_type("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable")
        table_reqs = [(lid, table_request(ctx, lid, res), (res.get("Properties") or {}).get("TimeToLiveSpecification"))
                      for lid, res in tables]
        machines = []
        for lid, res in ctx.of_type("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            props = res.get("Properties") or {}
            name = ctx.literal_or(props.get("Name", props.get("StateMachineName")), lid)
            kind = props.get("Type", props.get("StateMachineType", "STANDARD"))
            machines.append((lid, name, state_machine_definition(ctx, lid, res), kind if isinstance(kind, str) else "STANDARD"))
        profiles = [ctx.instance_profile_name(lid) for lid, _ in ctx.of_type("AWS::IAM::InstanceProfile")]
        aliases = kms_aliases(ctx)

        if not args.dry_run:
            import boto3
            from botocore.config import Config

            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60)
            client = lambda svc, region: boto3.client(svc, region_name=region, endpoint_url=args.endpoint_url, config=cfg)  # noqa: E731
            ddb, sfn, iam, kms = (client(svc, args.region) for svc in STACK_SERVICES)
            for _, req, ttl in table_reqs:
                ensure_table(ddb, req, ttl)
            for lid, name, definition, kind in machines:
                out["state_machines"][lid] = ensure_state_machine(sfn, name, definition, kind)
            for name in profiles:
                ensure_instance_profile(iam, name)
            for alias, description in aliases:
                ensure_kms_alias(kms, alias, description)
            for region in regions:
                ec2, ssm = (client(svc, region) for svc in REGION_SERVICES)
                seed_images(ec2, ssm, LOCAL_AMI_PREFIX)
            for facts in out["functions"].values():
                env = facts.setdefault("environment", {})
                env["MECPLANE_AMI_PARAMETER_PREFIX"] = LOCAL_AMI_PREFIX
                env["MECPLANE_ALLOWED_REGIONS"] = ",".join(regions)
        else:
            for lid, name, _, _ in machines:
                out["state_machines"][lid] = f"arn:aws:states:{args.region}:{ACCOUNT_ID}:stateMachine:{name}"

        out["tables"] = {lid: req["TableName"] for lid, req, _ in table_reqs}
        if "ClustersTable" in out["tables"]:
            out["table"] = out["tables"]["ClustersTable"]
        elif out["tables"]:
            out["table"] = next(iter(out["tables"].values()))
        if profiles:
            out["instance_profile"] = profiles[0]
    except ProvisionError as e:
        print(f"provision.py: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # boto errors, YAML errors: say which and fail
        print(f"provision.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, indent=None, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
