#!/usr/bin/env python3
"""Adopt an existing deployment's resources before upgrading it (docs/ownership.md, "Upgrade").

Deployments made before issue 24 tagged their instances, security groups and load balancers with
`mecplane:cluster` only. The new IAM conditions act only on resources whose `mecplane:deployment`
tag equals the deployment's id (its NamePrefix), so before `sam deploy` of the new version an admin
runs this once: it reads the stack's table and tags with `mecplane:deployment=<prefix>` exactly what
the live records (every status but DELETED) name, and nothing else:

- each node's instance (`nodes[].instance_id`), if it still exists and is not terminated;
- the cluster's security group: the record's `security_group_id`, and the group found by its name
  (`mecplane-<cluster id>` or `<prefix>-<cluster id>`) in the record's VPCs when it carries
  `mecplane:cluster=<cluster id>`;
- the cluster's API load balancer, its listener and target group (`record.balancer`).

A resource whose `mecplane:cluster` tag names another cluster, or whose `mecplane:deployment` tag
names another deployment, is left alone and reported (exit status 1). A resource that already
carries the tag is skipped: running it twice changes nothing. `--dry-run` prints what it would tag.

It needs ec2:CreateTags and elasticloadbalancing:AddTags on those resources: run it before the
SCP or permission boundary of docs/ownership.md denies those to everyone but the stack's roles (or
from a principal that statement exempts).

Usage:
  infra/adopt.py --stack-name mecplane [--region us-east-1] [--dry-run]
  infra/adopt.py --table mecplane-ClustersTable-ABC --prefix mecplane [--dry-run]
                 [--endpoint-url http://127.0.0.1:47501]     (the local stack)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import ClientError

TAG_DEPLOYMENT = "mecplane:deployment"
TAG_CLUSTER = "mecplane:cluster"
LEGACY_PREFIX = "mecplane"  # what every name started with before deployments had an identity
DELETED = "DELETED"
MISSING_INSTANCE = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
MISSING_GROUP = ("InvalidGroup.NotFound", "InvalidGroupId.Malformed")


@dataclass
class Plan:
    """What the records name, per region: instance ids, group ids, ELB ARNs, with the cluster each
    belongs to."""

    instances: dict[str, dict[str, str]] = field(default_factory=dict)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)
    balancing: dict[str, dict[str, str]] = field(default_factory=dict)
    vpcs: dict[str, dict[str, set[str]]] = field(default_factory=dict)


@dataclass
class Outcome:
    tagged: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def live_records(ddb, table: str):
    """Every cluster record of the table whose status is not DELETED (pk CLUSTER#<id>, sk RECORD,
    the record as JSON in `record`; mecplane::aws::dynamodb)."""
    kwargs = {"TableName": table, "FilterExpression": "sk = :r",
              "ExpressionAttributeValues": {":r": {"S": "RECORD"}}}
    while True:
        page = ddb.scan(**kwargs)
        for item in page.get("Items", []):
            if not item.get("pk", {}).get("S", "").startswith("CLUSTER#"):
                continue
            record = json.loads(item["record"]["S"])
            status = item.get("status", {}).get("S") or record.get("status")
            if status != DELETED:
                yield record
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def plan_of(records) -> Plan:
    plan = Plan()
    for record in records:
        cluster = record["id"]
        region = (record.get("spec") or {}).get("region")
        if not region:
            print(f"warning: cluster {cluster} has no spec.region; skipped", file=sys.stderr)
            continue
        for node in record.get("nodes") or []:
            if node.get("instance_id"):
                plan.instances.setdefault(region, {})[node["instance_id"]] = cluster
        if record.get("security_group_id"):
            plan.groups.setdefault(region, {})[record["security_group_id"]] = cluster
        balancer = record.get("balancer") or {}
        for key in ("load_balancer_arn", "listener_arn", "target_group_arn"):
            if balancer.get(key):
                plan.balancing.setdefault(region, {})[balancer[key]] = cluster
        plan.vpcs.setdefault(region, {}).setdefault(cluster, set())
    return plan


def tags_of(pairs) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in pairs or []}


def judge(what: str, tags: dict[str, str], cluster: str, prefix: str, out: Outcome) -> bool:
    """Whether to tag `what`: not if it says it is another cluster's or another deployment's, nor
    if it is tagged already."""
    if tags.get(TAG_CLUSTER) not in (None, cluster):
        out.conflicts.append(f"{what}: {TAG_CLUSTER}={tags[TAG_CLUSTER]}, but the record of {cluster} names it")
        return False
    if tags.get(TAG_DEPLOYMENT) == prefix:
        out.already.append(what)
        return False
    if TAG_DEPLOYMENT in tags:
        out.conflicts.append(f"{what}: {TAG_DEPLOYMENT}={tags[TAG_DEPLOYMENT]}, another deployment's")
        return False
    return True


def adopt_region(ec2, elbv2, region: str, plan: Plan, prefix: str, dry_run: bool, out: Outcome) -> None:
    tag = [{"Key": TAG_DEPLOYMENT, "Value": prefix}]
    verb = "would tag" if dry_run else "tagged"
    vpcs = plan.vpcs.get(region, {})

    # Instances: the ones the records name that still exist.
    wanted = plan.instances.get(region, {})
    to_tag = []
    for instance_id, cluster in sorted(wanted.items()):
        try:
            found = [i for r in ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
                     for i in r["Instances"]]
        except ClientError as e:
            if e.response["Error"]["Code"] in MISSING_INSTANCE:
                out.skipped.append(f"instance {instance_id} ({cluster}): no longer exists")
                continue
            raise
        for inst in found:
            what = f"instance {instance_id} ({cluster}, {region})"
            if inst["State"]["Name"] in ("terminated", "shutting-down"):
                out.skipped.append(f"{what}: {inst['State']['Name']}")
                continue
            if inst.get("VpcId"):
                vpcs.setdefault(cluster, set()).add(inst["VpcId"])
            if judge(what, tags_of(inst.get("Tags")), cluster, prefix, out):
                to_tag.append((instance_id, what))
    # Security groups: the record's, and the one its name and cluster tag designate.
    groups = dict(plan.groups.get(region, {}))
    for cluster, cluster_vpcs in sorted(vpcs.items()):
        names = sorted({f"{LEGACY_PREFIX}-{cluster}", f"{prefix}-{cluster}"})
        filters = [{"Name": "group-name", "Values": names},
                   {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
        if cluster_vpcs:
            filters.append({"Name": "vpc-id", "Values": sorted(cluster_vpcs)})
        for group in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]:
            groups.setdefault(group["GroupId"], cluster)
    for group_id, cluster in sorted(groups.items()):
        try:
            found = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
        except ClientError as e:
            if e.response["Error"]["Code"] in MISSING_GROUP:
                out.skipped.append(f"security group {group_id} ({cluster}): no longer exists")
                continue
            raise
        for group in found:
            what = f"security group {group_id} {group.get('GroupName')} ({cluster}, {region})"
            if judge(what, tags_of(group.get("Tags")), cluster, prefix, out):
                to_tag.append((group_id, what))
    for resource_id, what in to_tag:
        if not dry_run:
            ec2.create_tags(Resources=[resource_id], Tags=tag)
        out.tagged.append(f"{verb} {what}")

    # The load balancer, its listener and target group.
    for arn, cluster in sorted(plan.balancing.get(region, {}).items()):
        what = f"{arn.split(':', 5)[-1]} ({cluster}, {region})"
        try:
            described = elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
        except ClientError as e:
            if "NotFound" in e.response["Error"]["Code"]:
                out.skipped.append(f"{what}: no longer exists")
                continue
            raise
        if not described:
            out.skipped.append(f"{what}: no longer exists")
            continue
        if judge(what, tags_of(described[0].get("Tags")), cluster, prefix, out):
            if not dry_run:
                elbv2.add_tags(ResourceArns=[arn], Tags=tag)
            out.tagged.append(f"{verb} {what}")


def stack_facts(cfn, stack: str) -> tuple[str, str]:
    """The stack's table (ClustersTable's physical id) and NamePrefix."""
    table = cfn.describe_stack_resource(StackName=stack, LogicalResourceId="ClustersTable")
    described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    params = {p["ParameterKey"]: p.get("ParameterValue") for p in described.get("Parameters") or []}
    return table["StackResourceDetail"]["PhysicalResourceId"], params.get("NamePrefix") or LEGACY_PREFIX


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack-name", help="the deployed stack: its ClustersTable and NamePrefix")
    where.add_argument("--table", help="the clusters table (with --prefix; e.g. the local stack's)")
    p.add_argument("--prefix", help="the deployment id (NamePrefix); default: the stack's, else mecplane")
    p.add_argument("--region", help="the stack's region (the table's); clusters are looked up in their own")
    p.add_argument("--endpoint-url", help="one endpoint for every service (the local stack's moto)")
    p.add_argument("--dry-run", action="store_true", help="print what would be tagged, tag nothing")
    args = p.parse_args(argv)

    session = boto3.session.Session(region_name=args.region)

    def client(service: str, region: str | None = None):
        return session.client(service, region_name=region or session.region_name, endpoint_url=args.endpoint_url)

    if args.stack_name:
        table, stack_prefix = stack_facts(client("cloudformation"), args.stack_name)
        prefix = args.prefix or stack_prefix
    else:
        table, prefix = args.table, args.prefix or LEGACY_PREFIX

    plan = plan_of(live_records(client("dynamodb"), table))
    out = Outcome()
    regions = sorted(set(plan.instances) | set(plan.groups) | set(plan.balancing) | set(plan.vpcs))
    for region in regions:
        adopt_region(client("ec2", region), client("elbv2", region), region, plan, prefix, args.dry_run, out)

    for line in out.tagged:
        print(line)
    for line in out.already:
        print(f"already tagged {line}")
    for line in out.skipped:
        print(f"skipped {line}")
    for line in out.conflicts:
        print(f"CONFLICT {line}")
    print(f"adopt: {TAG_DEPLOYMENT}={prefix} from table {table}: {len(out.tagged)} "
          f"{'to tag' if args.dry_run else 'tagged'}, {len(out.already)} already tagged, "
          f"{len(out.skipped)} gone, {len(out.conflicts)} conflict(s)")
    return 1 if out.conflicts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
