"""What the local scripts (bench, demo) share about the running local stack: its endpoints from
.mecplane/local.env, a SigV4-signed call of the HTTP API (as against a deployed stack), boto3
clients, and the check that a cluster left nothing behind.
"""
import json
import urllib.error
import urllib.request
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent


def load_env(path=ROOT / ".mecplane" / "local.env"):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


ENV = load_env()
API = ENV["MECPLANE_API_URL"].rstrip("/")
REGION = ENV.get("AWS_REGION", "us-east-1")
CREDS = Credentials(ENV.get("AWS_ACCESS_KEY_ID", "testing"), ENV.get("AWS_SECRET_ACCESS_KEY", "testing"))


def api(method, path, body=None):
    """Calls the HTTP API; returns (status, JSON body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = AWSRequest(method=method, url=API + path, data=data,
                     headers={"content-type": "application/json"} if data else {})
    SigV4Auth(CREDS, "execute-api", REGION).add_auth(req)
    http = urllib.request.Request(API + path, data=data, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(http, timeout=30) as resp:
            raw = resp.read()
            is_json = resp.headers.get_content_type() == "application/json"
            return resp.status, (json.loads(raw) if raw and is_json else raw.decode())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode()


def client(service):
    """A boto3 client of the local stack's endpoint."""
    return boto3.client(service, endpoint_url=ENV["AWS_ENDPOINT_URL"], region_name=REGION,
                        aws_access_key_id=CREDS.access_key, aws_secret_access_key=CREDS.secret_key)


def leftovers(cluster_id):
    """The cluster's live instances, security groups and parameters (all empty once deleted)."""
    ec2, ssm = client("ec2"), client("ssm")
    flt = [{"Name": "tag:mecplane:cluster", "Values": [cluster_id]}]
    live = [i["InstanceId"] for r in ec2.describe_instances(Filters=flt, MaxResults=1000)["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]]
    params = [p["Name"] for p in ssm.get_parameters_by_path(
        Path=f"/mecplane/clusters/{cluster_id}", Recursive=True)["Parameters"]]
    return live, groups, params
