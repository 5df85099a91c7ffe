"""The Python peer of the reference Rust function (functions/examples/reference.rs) that
`make bench` compares every mecplane handler with: Python 3.11, boto3, run by the AWS Lambda
Runtime Interface Client (`python -m awslambdaric reference.handler`).

At import (the cold start) it builds one DynamoDB client from the environment (region,
credentials, AWS_ENDPOINT_URL, AWS_MAX_ATTEMPTS); each invocation makes one consistent GetItem of
a cluster record that does not exist in MECPLANE_TABLE and answers {"found": false}.
"""
import os

import boto3

TABLE = os.environ["MECPLANE_TABLE"]
# A key in the table's shape (pk, sk) that no cluster has.
MISSING_KEY = {"pk": {"S": "CLUSTER#c-0000000000000000"}, "sk": {"S": "RECORD"}}

dynamodb = boto3.client("dynamodb")


def handler(event, context):
    out = dynamodb.get_item(TableName=TABLE, Key=MISSING_KEY, ConsistentRead=True)
    return {"found": "Item" in out}
