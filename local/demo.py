#!/usr/bin/env python3
"""The mecplane demo on the local stack: create a 1 control plane + 2 worker cluster through the
HTTP API (SigV4-signed, as against a deployed stack), follow it to ACTIVE with its events, show the
cluster and its kubeconfig parameter, delete it, follow it to DELETED, and check that no instance,
security group or parameter of it is left. Exits non-zero if anything fails.

Reads .mecplane/local.env (written by local/up.sh). Uses boto3/botocore from the local venv.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
NAME = os.environ.get("MECPLANE_DEMO_NAME", "demo-edge")
TIMEOUT = int(os.environ.get("MECPLANE_DEMO_TIMEOUT", "600"))


def load_env():
    env = {}
    for line in (ROOT / ".mecplane" / "local.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


ENV = load_env()
API = ENV["MECPLANE_API_URL"].rstrip("/")
REGION = ENV.get("AWS_REGION", "us-east-1")
CREDS = Credentials(ENV.get("AWS_ACCESS_KEY_ID", "testing"), ENV.get("AWS_SECRET_ACCESS_KEY", "testing"))
T0 = time.monotonic()


def say(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = AWSRequest(method=method, url=API + path, data=data, headers={"content-type": "application/json"} if data else {})
    SigV4Auth(CREDS, "execute-api", REGION).add_auth(req)
    http = urllib.request.Request(API + path, data=data, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(http, timeout=30) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw and resp.headers.get_content_type() == "application/json" else raw.decode())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode()


def follow(cluster_id, until, seen):
    """Prints new events and status changes until the status is in `until`; returns the record."""
    last = None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        code, rec = api("GET", f"/clusters/{cluster_id}")
        if code == 404 and "DELETED" in until:
            return {"status": "DELETED", "id": cluster_id}
        if code != 200:
            sys.exit(f"demo: GET /clusters/{cluster_id} answered {code}: {rec}")
        code, ev = api("GET", f"/clusters/{cluster_id}/events")
        for e in (ev.get("events", []) if code == 200 else []):
            key = (e["time"], e["stage"], e["phase"])
            if key not in seen:
                seen.add(key)
                detail = f" — {e['detail']}" if e.get("detail") else ""
                say(f"  {e['stage']:<22} {e['phase']:<9}{detail}")
        if rec["status"] != last:
            last = rec["status"]
            say(f"status {last}")
        if rec["status"] in until:
            return rec
        time.sleep(1)
    sys.exit(f"demo: cluster {cluster_id} did not reach {until} within {TIMEOUT}s")


def leftovers(cluster_id):
    kw = dict(endpoint_url=ENV["AWS_ENDPOINT_URL"], region_name=REGION,
              aws_access_key_id=CREDS.access_key, aws_secret_access_key=CREDS.secret_key)
    ec2 = boto3.client("ec2", **kw)
    ssm = boto3.client("ssm", **kw)
    flt = [{"Name": "tag:mecplane:cluster", "Values": [cluster_id]}]
    live = [i["InstanceId"] for r in ec2.describe_instances(Filters=flt, MaxResults=1000)["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]]
    params = [p["Name"] for p in ssm.get_parameters_by_path(Path=f"/mecplane/clusters/{cluster_id}", Recursive=True)["Parameters"]]
    return live, groups, params


def main():
    say(f"local stack: API {API}")
    spec = {"name": NAME, "control_planes": 1, "workers": 2, "api_allowed_cidrs": ["203.0.113.0/24"], "addons": ["dns", "hostpath-storage"]}
    say(f"POST /clusters {json.dumps(spec)}")
    code, rec = api("POST", "/clusters", spec)
    if code == 409:
        sys.exit(f"demo: a cluster named {NAME} already exists; delete it first or set MECPLANE_DEMO_NAME")
    if code != 202:
        sys.exit(f"demo: POST /clusters answered {code}: {rec}")
    cid = rec["id"]
    say(f"accepted: cluster {cid} ({rec['status']}), execution {rec.get('execution_arn')}")
    seen = set()
    rec = follow(cid, {"ACTIVE", "FAILED"}, seen)
    created = time.monotonic() - T0
    print()
    print(f"cluster {rec['spec']['name']} ({cid}): {rec['status']}")
    if rec["status"] == "FAILED":
        f = rec.get("failure") or {}
        sys.exit(f"demo: create FAILED in {f.get('stage')}: {f.get('error')}: {f.get('reason')}")
    print(f"  endpoint   {rec.get('endpoint')}")
    print(f"  kubeconfig SecureString parameter {rec.get('kubeconfig_parameter')} (GET /clusters/{cid}/kubeconfig)")
    print(f"  {'ROLE':<14}{'IDX':<5}{'INSTANCE':<22}{'PRIVATE-IP':<16}{'PUBLIC-IP':<16}STATE")
    for n in rec["nodes"]:
        print(f"  {n['role']:<14}{n['index']:<5}{n['instance_id']:<22}{n.get('private_ip') or '-':<16}{n.get('public_ip') or '-':<16}{n['state']}")
    code, kc = api("GET", f"/clusters/{cid}/kubeconfig")
    if code != 200:
        sys.exit(f"demo: GET kubeconfig answered {code}: {kc}")
    out = ROOT / ".mecplane" / f"{NAME}.kubeconfig"
    out.write_text(kc if isinstance(kc, str) else kc.get("kubeconfig", ""))
    out.chmod(0o600)
    print(f"  kubeconfig written to {out.relative_to(ROOT)} (mode 600)")
    print()
    say(f"created in {created:.1f}s; DELETE /clusters/{cid}")
    code, rec = api("DELETE", f"/clusters/{cid}")
    if code != 202:
        sys.exit(f"demo: DELETE answered {code}: {rec}")
    t_del = time.monotonic()
    follow(cid, {"DELETED"}, seen)
    say(f"deleted in {time.monotonic() - t_del:.1f}s")
    live, groups, params = leftovers(cid)
    print(f"left behind: {len(live)} instances, {len(groups)} security groups, {len(params)} parameters")
    if live or groups or params:
        sys.exit(f"demo: resources left behind: {live} {groups} {params}")
    say("demo finished: nothing left behind")


if __name__ == "__main__":
    main()
