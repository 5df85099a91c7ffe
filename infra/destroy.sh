#!/usr/bin/env bash
# `make destroy`: delete the stack (functions, state machines, API, roles, log groups).
#
# Kept on purpose: the ClustersTable (DeletionPolicy Retain - the only record of clusters whose
# instances may still run) and the clusters themselves: EC2 instances, security groups and
# /mecplane/clusters/* parameters are made by the state machines, not by the stack. Delete your
# clusters first (DELETE /clusters/{id}, or mecctl). This script refuses while the table holds a
# cluster that is not DELETED, unless MECPLANE_DESTROY_FORCE=1.
#
# Asks for confirmation on a terminal; without one it needs MECPLANE_DESTROY_CONFIRM=<stack name>.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

ensure_tools
mapfile -t common < <(common_options)

echo "==> looking for live clusters in stack $STACK_NAME${REGION:+ ($REGION)}"
# boto3 comes with aws-sam-cli in the deploy venv.
live="$(STACK="$STACK_NAME" REGION="$REGION" PROFILE="$PROFILE" python3 - <<'PY'
import os, sys
import boto3
from botocore.exceptions import ClientError
session = boto3.session.Session(profile_name=os.environ["PROFILE"] or None, region_name=os.environ["REGION"] or None)
try:
    stack = session.client("cloudformation").describe_stacks(StackName=os.environ["STACK"])["Stacks"][0]
except ClientError as e:
    sys.exit(f"destroy: stack {os.environ['STACK']} not found: {e}")
table = next((o["OutputValue"] for o in stack.get("Outputs", []) if o["OutputKey"] == "ClustersTableName"), None)
if table:
    pages = session.client("dynamodb").get_paginator("query").paginate(
        TableName=table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": "CLUSTERS"}})
    for page in pages:
        for item in page["Items"]:
            status = item.get("status", {}).get("S", "?")
            if status != "DELETED":
                print(f'{item.get("name", {}).get("S", "?")} ({item["pk"]["S"][len("CLUSTER#"):]}) {status}')
PY
)"
if [[ -n "$live" ]]; then
    echo "clusters not deleted yet (their instances are not part of the stack and would be orphaned):"
    while IFS= read -r line; do echo "  $line"; done <<<"$live"
    if [[ "${MECPLANE_DESTROY_FORCE:-}" != 1 ]]; then
        echo "destroy: delete them first, or set MECPLANE_DESTROY_FORCE=1" >&2
        exit 1
    fi
fi

if [[ -t 0 && -z "${MECPLANE_DESTROY_CONFIRM:-}" ]]; then
    read -r -p "Delete stack $STACK_NAME${REGION:+ in $REGION}? Type its name to confirm: " answer
else
    answer="${MECPLANE_DESTROY_CONFIRM:-}"
fi
if [[ "$answer" != "$STACK_NAME" ]]; then
    echo "destroy: not confirmed (set MECPLANE_DESTROY_CONFIRM=$STACK_NAME without a terminal)" >&2
    exit 1
fi

sam delete "${common[@]}" --no-prompts
echo "==> deleted $STACK_NAME. Retained: the ClustersTable (DynamoDB, PITR backups) - delete it in the console or with"
echo "    aws dynamodb delete-table --table-name <ClustersTableName output> when its records are no longer needed."
