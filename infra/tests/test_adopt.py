#!/usr/bin/env python3
"""Tests of infra/adopt.py against moto, in-process (mock_aws): only what a live record names gets
the deployment tag; look-alikes (the cluster's tag, not in the record), DELETED records' resources
and another deployment's resources are left alone; --dry-run tags nothing; a second run changes
nothing.

Usage: .venv/bin/python infra/tests/test_adopt.py [ADOPT_PY]     (run by infra/check.sh adopt)
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_PROFILE", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

REGION = "us-east-1"
TABLE = "mecplane-ClustersTable"
CLUSTER = "c-0123456789abcdef"
GONE = "c-fedcba9876543210"
ADOPT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "adopt.py")


def load_adopt():
    spec = importlib.util.spec_from_file_location("adopt", ADOPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["adopt"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def record(cluster: str, status: str, instances: list[str], group: str | None, balancer: dict | None) -> dict:
    return {
        "id": cluster,
        "status": status,
        "spec": {"name": f"name-{cluster}", "region": REGION},
        "nodes": [{"instance_id": i, "role": "control-plane", "index": n, "state": "ready"}
                  for n, i in enumerate(instances)],
        "security_group_id": group,
        "balancer": balancer,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "version": 1,
    }


def put_record(ddb, rec: dict) -> None:
    ddb.put_item(TableName=TABLE, Item={
        "pk": {"S": f"CLUSTER#{rec['id']}"}, "sk": {"S": "RECORD"},
        "record": {"S": json.dumps(rec)}, "status": {"S": rec["status"]},
        "name": {"S": rec["spec"]["name"]}, "region": {"S": REGION}, "version": {"N": "1"},
        "gsi1pk": {"S": "CLUSTERS"}, "gsi1sk": {"S": f"2026#{rec['id']}"},
    })


class World:
    """A table, the instances, groups and balancer of one live cluster, and look-alikes."""

    def __init__(self) -> None:
        self.ddb = boto3.client("dynamodb", region_name=REGION)
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.elb = boto3.client("elbv2", region_name=REGION)
        self.ddb.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}])
        vpc = self.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        subnets = [s["SubnetId"] for s in self.ec2.describe_subnets()["Subnets"] if s["VpcId"] == vpc][:2]
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

        def group(name: str, cluster: str) -> str:
            return self.ec2.create_security_group(
                GroupName=name, Description=name, VpcId=vpc,
                TagSpecifications=[{"ResourceType": "security-group",
                                    "Tags": [{"Key": "mecplane:cluster", "Value": cluster}]}])["GroupId"]

        def instance(cluster: str, extra: list | None = None) -> str:
            tags = [{"Key": "mecplane:cluster", "Value": cluster}] + (extra or [])
            return self.ec2.run_instances(
                ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.medium", SubnetId=subnets[0],
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]["InstanceId"]

        # The live cluster: one recorded instance, its group (recorded), its balancer.
        self.recorded = instance(CLUSTER)
        self.group = group(f"mecplane-{CLUSTER}", CLUSTER)
        # Look-alikes: the cluster's tag, but not named by the record.
        self.lookalike = instance(CLUSTER)
        self.lookalike_group = group(f"other-{CLUSTER}", CLUSTER)
        # Another deployment's instance that a record names by mistake: left alone, reported.
        self.foreign = instance(CLUSTER, [{"Key": "mecplane:deployment", "Value": "beta"}])
        # A DELETED record's instance: not adopted.
        self.deleted = instance(GONE)

        lb = self.elb.create_load_balancer(Name=f"mecplane-{CLUSTER}", Type="network", Subnets=subnets,
                                           Tags=[{"Key": "mecplane:cluster", "Value": CLUSTER}])
        self.lb = lb["LoadBalancers"][0]["LoadBalancerArn"]
        self.tg = self.elb.create_target_group(
            Name=f"mecplane-{CLUSTER}", Protocol="TCP", Port=16443, VpcId=vpc, TargetType="instance",
            Tags=[{"Key": "mecplane:cluster", "Value": CLUSTER}])["TargetGroups"][0]["TargetGroupArn"]
        self.listener = self.elb.create_listener(
            LoadBalancerArn=self.lb, Protocol="TCP", Port=16443,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.tg}],
            Tags=[{"Key": "mecplane:cluster", "Value": CLUSTER}])["Listeners"][0]["ListenerArn"]
        self.lookalike_tg = self.elb.create_target_group(
            Name=f"other-{CLUSTER}", Protocol="TCP", Port=16443, VpcId=vpc, TargetType="instance",
            Tags=[{"Key": "mecplane:cluster", "Value": CLUSTER}])["TargetGroups"][0]["TargetGroupArn"]

        self.records = [
            record(CLUSTER, "ACTIVE", [self.recorded, "i-0000000000000dead", self.foreign], self.group,
                   {"dns_name": "x", "load_balancer_arn": self.lb, "listener_arn": self.listener,
                    "target_group_arn": self.tg}),
            record(GONE, "DELETED", [self.deleted], None, None),
        ]
        for rec in self.records:
            put_record(self.ddb, rec)

    def instance_tag(self, instance_id: str) -> str | None:
        inst = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get("mecplane:deployment")

    def group_tag(self, group_id: str) -> str | None:
        group = self.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        return {t["Key"]: t["Value"] for t in group.get("Tags", [])}.get("mecplane:deployment")

    def elb_tag(self, arn: str) -> str | None:
        tags = self.elb.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"]
        return {t["Key"]: t["Value"] for t in tags}.get("mecplane:deployment")

    def adopted(self) -> dict[str, str | None]:
        return {
            "recorded instance": self.instance_tag(self.recorded),
            "look-alike instance": self.instance_tag(self.lookalike),
            "foreign instance": self.instance_tag(self.foreign),
            "deleted record's instance": self.instance_tag(self.deleted),
            "group": self.group_tag(self.group),
            "look-alike group": self.group_tag(self.lookalike_group),
            "load balancer": self.elb_tag(self.lb),
            "listener": self.elb_tag(self.listener),
            "target group": self.elb_tag(self.tg),
            "look-alike target group": self.elb_tag(self.lookalike_tg),
        }


def run(adopt, *args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = adopt.main(["--table", TABLE, "--region", REGION, *args])
    return rc, buf.getvalue()


NOTHING = {"recorded instance": None, "look-alike instance": None, "foreign instance": "beta",
           "deleted record's instance": None, "group": None, "look-alike group": None,
           "load balancer": None, "listener": None, "target group": None, "look-alike target group": None}
ADOPTED = dict(NOTHING, **{"recorded instance": "mecplane", "group": "mecplane", "load balancer": "mecplane",
                           "listener": "mecplane", "target group": "mecplane"})


def check(name: str, got, want, failures: list[str], output: str = "") -> None:
    if got == want:
        print(f"ok   {name}")
    else:
        failures.append(name)
        print(f"FAIL {name}:\n     got  {got}\n     want {want}")
        if output:
            print("     adopt.py said:\n" + "".join(f"       {line}\n" for line in output.splitlines()))


def main() -> int:
    adopt = load_adopt()
    failures: list[str] = []
    with mock_aws():
        world = World()

        rc, out = run(adopt, "--dry-run", "--prefix", "mecplane")
        check("--dry-run tags nothing", world.adopted(), NOTHING, failures, out)
        check("--dry-run names the five it would tag", out.count("would tag "), 5, failures, out)

        rc, out = run(adopt, "--prefix", "mecplane")
        check("only what the live record names is tagged (not look-alikes, not a DELETED record's)",
              world.adopted(), ADOPTED, failures, out)
        check("another deployment's instance is a conflict (exit 1), not retagged",
              (rc, "CONFLICT instance " + world.foreign in out), (1, True), failures, out)
        check("an instance the record names that no longer exists is skipped",
              "i-0000000000000dead" in out and "skipped" in out, True, failures, out)

        rc, out = run(adopt, "--prefix", "mecplane")
        check("a second run tags nothing more (idempotent)",
              (world.adopted(), sum(line.startswith("already tagged") for line in out.splitlines()), " 0 tagged," in out), (ADOPTED, 5, True), failures, out)
    if failures:
        print(f"test_adopt: {len(failures)} failed")
        return 1
    print("note: adopt.py tags only what live records name")
    return 0


if __name__ == "__main__":
    sys.exit(main())
