#!/usr/bin/env python3
"""Transform the SAM template into plain CloudFormation, offline.

This is what `sam validate` does (aws-sam-translator, a fake region and account, local code paths
replaced by fake S3 URIs), with one difference: each state machine's `DefinitionUri` file is read and
inlined as `Definition`, so the output carries the real definitions and cfn-lint can check them
(with `DefinitionUri` pointing at S3 it sees nothing). The translator emits the definition as a
`DefinitionString` built with `Fn::Join`, which cfn-lint does not parse either, so the result is
turned back into the equivalent `Definition` object (CloudFormation accepts both; the
`DefinitionSubstitutions` stay as they are). No network, no credentials.

Usage: transform.py TEMPLATE [-o OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Offline: botocore must never look for credentials or a region of this machine.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import boto3  # noqa: E402  (after the environment above)
from samtranslator.model.exceptions import InvalidDocumentException  # noqa: E402
from samtranslator.parser.parser import Parser  # noqa: E402
from samtranslator.translator.translator import Translator  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402

FAKE_REGION = "us-east-1"
FAKE_ACCOUNT = "123456789012"
FAKE_BUCKET = "mecplane-offline-check"

# The pseudo parameters `sam validate` fills in (samcli IntrinsicsSymbolTable defaults).
PSEUDO_PARAMETERS = {
    "AWS::AccountId": FAKE_ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::Region": FAKE_REGION,
    "AWS::StackName": "mecplane",
    "AWS::StackId": f"arn:aws:cloudformation:{FAKE_REGION}:{FAKE_ACCOUNT}:stack/mecplane/00000000-0000-0000-0000-000000000000",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NoValue": None,
    "AWS::NotificationARNs": [],
}


def is_local(uri: object) -> bool:
    return isinstance(uri, str) and not uri.startswith("s3://")


def prepare(template: dict, base: Path) -> dict:
    """Inline local state-machine definitions; point local code at a fake bucket."""
    fn_globals = (template.get("Globals") or {}).get("Function") or {}
    if is_local(fn_globals.get("CodeUri")):
        fn_globals["CodeUri"] = f"s3://{FAKE_BUCKET}/{fn_globals['CodeUri'].strip('./')}"
    resources = template.get("Resources", {})
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        props = resource.setdefault("Properties", {})
        if kind == "AWS::Serverless::StateMachine" and is_local(props.get("DefinitionUri")):
            path = (base / props.pop("DefinitionUri")).resolve()
            try:
                props["Definition"] = json.loads(path.read_text())
            except FileNotFoundError:
                raise SystemExit(f"transform: {logical_id}: DefinitionUri file {path} does not exist")
            except json.JSONDecodeError as e:
                raise SystemExit(f"transform: {logical_id}: {path} is not JSON: {e}")
        elif kind == "AWS::Serverless::Function" and is_local(props.get("CodeUri")):
            props["CodeUri"] = f"s3://{FAKE_BUCKET}/{props['CodeUri'].strip('./')}"
    return template


def definitions_as_objects(template: dict) -> dict:
    """`DefinitionString: {Fn::Join: [sep, [literal, ...]]}` -> `Definition: {...}`."""
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        props = resource["Properties"]
        text = props.get("DefinitionString")
        if isinstance(text, dict) and "Fn::Join" in text:
            sep, parts = text["Fn::Join"]
            if all(isinstance(p, str) for p in parts):
                text = sep.join(parts)
        if isinstance(text, str):
            props.pop("DefinitionString")
            props["Definition"] = json.loads(text)
    return template


def transform(template_path: Path) -> dict:
    template = yaml_parse(template_path.read_text())
    template = prepare(template, template_path.parent)
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        plugins=[],
        boto_session=boto3.session.Session(region_name=FAKE_REGION),
    )
    try:
        translated = translator.translate(
            sam_template=template,
            parameter_values=dict(PSEUDO_PARAMETERS),
            # The template names no managed policy through SAM `Policies`; nothing to look up.
            get_managed_policy_map=lambda: {},
        )
    except InvalidDocumentException as e:
        causes = " ".join(str(c) for c in e.causes)
        raise SystemExit(f"transform: SAM translator rejected the template: {e} {causes}")
    return definitions_as_objects(translated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args()
    text = json.dumps(transform(args.template), indent=2, sort_keys=False) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
