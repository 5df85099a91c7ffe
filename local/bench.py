#!/usr/bin/env python3
"""mecplane benchmarks (`make bench`). Prints a report and writes it to .mecplane/bench.json.

1. Code size. `bootstrap` is every mecplane Lambda in one release binary (the workspace's
   release profile, `[profile.release]` in Cargo.toml, printed with the figures), built by
   local/bench.sh next to `reference`, a minimal Rust Lambda (functions/examples/reference.rs: lambda_runtime and
   one DynamoDB client). For each: the binary's bytes and the bytes of the zip Lambda gets (the
   binary named `bootstrap`, deflated). For the Python peer (local/bench/reference.py): the zip of
   reference.py plus boto3, botocore, awslambdaric and what they pull in from .venv-bench's
   site-packages (sources, no bytecode), with botocore's share on its own.
   Target: the bootstrap zip ≤ 8 MB (8,000,000 bytes).

2. Cold start, including the first call. For each function — the Rust reference, the Python peer
   (Python 3.11 + boto3 on awslambdaric) and every mecplane handler in the one binary — a fresh
   process is spawned against a minimal Lambda Runtime API served here, with the local stack's
   endpoint, credentials and table (.mecplane/local.env), AWS_MAX_ATTEMPTS=1 and 256 MB declared
   memory. Its first `GET /2018-06-01/runtime/invocation/next` gets one event; the figure is the
   time from spawn until the process posts `/invocation/<id>/response` or `/invocation/<id>/error`,
   which it can only do once its first AWS call has been answered: the init phase (SDK config,
   clients, logging) plus the first invocation. `init` is spawn to the first `/invocation/next`.
   Each handler gets an event whose first AWS call is a DynamoDB one where the stage has any,
   and whose answer comes right after it: a create or teardown state of a cluster that does not
   exist makes a stage read the record (GetItem) and fail with ClusterNotFound — an error answer,
   but one that came back from DynamoDB. `register` gets what the API starts an execution with
   ({cluster_id, spec}) for such a cluster (GetItem), `api` a `GET /clusters/<unknown name>` (one
   GetItem of the name's claim, then 404); `await-terminated` calls no DynamoDB at all: its figure
   runs to its first EC2 answer (DescribeInstances). Two more rows, left out of the targets, time
   more than the first call: `api.list` (`GET /clusters`: one Query, which moto answers by
   scanning the whole table, so it slows down as the bench's own registrations fill it) and
   `register.new` (a valid spec under a fresh name: TransactWriteItems, GetItem and three PutItems
   before it answers). The AWS actions each function was seen to use are read back from the
   gateway (`/_local/calls`).
   N runs per function (MECPLANE_BENCH_COLD_RUNS, default 10), taken round-robin (every function
   once per round, so a load spike on the machine hits all of them alike), after one untimed
   warm-up run each (page cache); median, min and max. `peak RSS` is the largest VmHWM
   (/proc/<pid>/status) over the runs, read once the answer arrived and before the process is
   killed. Ratios: a handler's median over the Rust reference's, and the Python peer's median
   over the handler's. Targets: every handler ≤ 1.5× the Rust reference, ≥ 15× faster than the
   Python peer, peak RSS ≤ 16 MiB.

3. The pipeline on the local stack (started by local/bench.sh with MECPLANE_AGENT_DELAY_MS=0):
   K clusters of 1 control plane + 2 workers created at once through the HTTP API and then
   deleted; wall time to ACTIVE and to DELETED, and from each execution's history the state
   transitions and Lambda invocations — what a create and a delete cost in Step Functions
   Standard ($0.025 per 1,000 transitions) and Lambda requests ($0.20 per million).
   MECPLANE_BENCH_PIPELINE=0 skips it.

Local wall times measure our code and the simulator, not EC2: a real node boots and installs
MicroK8s in minutes. The transition and invocation counts carry over to AWS unchanged except for
the polling loops, which run once per `poll_seconds` (10 s deployed, 1 s here). Cold starts here
leave out what Lambda adds (fetching the code, starting the sandbox) and talk to moto through the
gateway on 127.0.0.1, not to DynamoDB over the network: they compare functions, they do not
predict a deployed cold start.
"""
import io
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "local"))

RELEASE = ROOT / "target" / "release"
BOOTSTRAP = RELEASE / "bootstrap"
REFERENCE = RELEASE / "examples" / "reference"
VENV_BENCH = ROOT / ".venv-bench"
PY_REFERENCE_DIR = ROOT / "local" / "bench"
LOGS = ROOT / ".mecplane" / "logs"

COLD_RUNS = int(os.environ.get("MECPLANE_BENCH_COLD_RUNS", "10"))
RUN_TIMEOUT = float(os.environ.get("MECPLANE_BENCH_RUN_TIMEOUT", "30"))
CLUSTERS = int(os.environ.get("MECPLANE_BENCH_CLUSTERS", "3"))
PIPELINE = os.environ.get("MECPLANE_BENCH_PIPELINE", "1") != "0"
TRANSITION_USD = 0.025 / 1000
LAMBDA_REQUEST_USD = 0.20 / 1_000_000

TARGET_VS_RUST = 1.5  # a handler's median ≤ 1.5 × the Rust reference's
TARGET_VS_PYTHON = 15.0  # the Python peer's median ≥ 15 × a handler's
TARGET_RSS_KIB = 16 * 1024  # 16 MiB
TARGET_ZIP_BYTES = 8_000_000  # 8 MB

RUST_REF, PY_REF = "reference-rust", "reference-python"
ACCOUNT = "123456789012"


class BenchError(Exception):
    pass


# ---- code size -----------------------------------------------------------------------------------

def zip_bytes(files):
    """Bytes of a deflated zip of `files`: (path on disk, name in the zip) pairs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, name in files:
            z.write(path, name)
    return len(buf.getvalue())


def binary_sizes():
    out = {}
    for name, path in (("bootstrap", BOOTSTRAP), ("reference", REFERENCE)):
        if not path.exists():
            raise BenchError(f"{path.relative_to(ROOT)} missing: run local/bench.sh (it builds it)")
        out[name] = {"bytes": path.stat().st_size, "zip_bytes": zip_bytes([(path, "bootstrap")])}
    return out


def _dist_name(requirement):
    """The distribution a Requires-Dist line names, or None for an extra's requirement."""
    if "extra ==" in requirement:
        return None
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0)


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def python_zip():
    """The Python peer's deployment zip: reference.py plus its dependency closure."""
    site = next(VENV_BENCH.glob("lib/python3*/site-packages"), None)
    if site is None:
        raise BenchError(f"{VENV_BENCH.name} missing: run local/bench.sh (it creates it)")
    dists = {_norm(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])}
    wanted, todo = set(), ["boto3", "awslambdaric"]
    while todo:
        name = _norm(todo.pop())
        if name in wanted or name not in dists:
            continue
        wanted.add(name)
        todo += [n for n in map(_dist_name, dists[name].requires or []) if n]

    def files(name):
        for f in dists[name].files or []:
            path = Path(f.locate()).resolve()
            if site.resolve() in path.parents and "__pycache__" not in f.parts and path.suffix != ".pyc":
                yield path, str(f)

    everything = [(PY_REFERENCE_DIR / "reference.py", "reference.py")]
    for name in sorted(wanted):
        everything += files(name)
    return {
        "interpreter": site.parent.name,
        "zip_bytes": zip_bytes(everything),
        "botocore_zip_bytes": zip_bytes(files("botocore")),
        "packages": {name: dists[name].version for name in sorted(wanted)},
    }


# ---- the Runtime API -----------------------------------------------------------------------------

class Invocation:
    """One cold start: the event handed to the process and when and how it answered."""

    def __init__(self, function_arn, event):
        self.function_arn = function_arn
        self.request_id = str(uuid.uuid4())
        self.event = json.dumps(event).encode()
        self.handed = False
        self.first_next = None  # monotonic time of the first GET /invocation/next
        self.answered_at = None  # monotonic time of the response or error post
        self.kind = None  # "response", "error" or "init-error"
        self.body = b""
        self.answered = threading.Event()
        self.over = threading.Event()
        self.lock = threading.Lock()


class RuntimeApi(ThreadingHTTPServer):
    """A Lambda Runtime API on a free port of 127.0.0.1 serving one invocation to one process.
    Every run gets its own: a killed process's last request (its next `/invocation/next`) can
    still sit unread in a connection when the next run starts, and must not take that run's event."""

    daemon_threads = True

    def __init__(self, invocation):
        super().__init__(("127.0.0.1", 0), _Runtime)
        self.invocation = invocation
        self.address = f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.invocation.over.set()
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed process's connection
            super().handle_error(request, client_address)


class _Runtime(BaseHTTPRequestHandler):
    """The Runtime API's requests: the first `/invocation/next` gets the event, later ones wait
    until the run is over; the response or error post is timed."""

    protocol_version = "HTTP/1.1"
    PREFIX = "/2018-06-01/runtime"

    def _reply(self, status, body=b"", headers=()):
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the process was killed meanwhile

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return data
                data += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):  # noqa: N802 (http.server naming)
        inv = self.server.invocation
        if self.path != f"{self.PREFIX}/invocation/next":
            return self._reply(404)
        with inv.lock:
            first = not inv.handed
            if first:
                inv.handed, inv.first_next = True, time.monotonic()
        if not first:
            inv.over.wait(RUN_TIMEOUT * 2)
            return self._reply(410)
        deadline = int(time.time() * 1000) + 60_000
        self._reply(200, inv.event, [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(deadline)),
            ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn),
            ("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"),
        ])

    def do_POST(self):  # noqa: N802
        now = time.monotonic()
        body = self._body()
        inv = self.server.invocation
        kind = None
        if self.path == f"{self.PREFIX}/invocation/{inv.request_id}/response":
            kind = "response"
        elif self.path == f"{self.PREFIX}/invocation/{inv.request_id}/error":
            kind = "error"
        elif self.path == f"{self.PREFIX}/init/error":
            kind = "init-error"
        if kind is None:
            return self._reply(404)
        if not inv.answered.is_set():
            inv.answered_at, inv.kind, inv.body = now, kind, body
            inv.answered.set()
        self._reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])

    def log_message(self, *args):
        pass


# ---- the functions measured ----------------------------------------------------------------------

def cluster_id():
    """A well-formed cluster id no record has."""
    return "c-" + secrets.token_hex(8)


def create_state(region, **extra):
    """A create state (mecplane/src/state.rs: CreateState) of a cluster that does not exist."""
    spec = {
        "name": "cold-start", "region": region, "control_planes": 1, "workers": 0,
        "instance_type": "t4g.medium", "arch": "arm64", "ubuntu_release": "24.04",
        "microk8s_channel": "1.32/stable", "addons": [], "subnet_id": None,
        "api_allowed_cidrs": [], "root_volume_gib": 20, "tags": {}, "retain_on_failure": False,
    }
    return {"cluster_id": cluster_id(), "spec": spec, "target": "control-plane", **extra}


def teardown_state(region):
    """A teardown state (TeardownState) of a cluster that does not exist."""
    return {"cluster_id": cluster_id(), "reason": "delete", "region": region}


def execution_arn(machine):
    return f"arn:aws:states:us-east-1:{ACCOUNT}:execution:{machine}:bench-{uuid.uuid4()}"


def api_event(method, path):
    """An API Gateway v2 (payload 2.0) event, as the deployed stack and the local gateway send it."""
    now = time.time()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"accept": "application/json"},
        "requestContext": {
            "accountId": ACCOUNT, "apiId": "bench", "domainName": "bench.local", "domainPrefix": "bench",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000),
            "authorizer": {"iam": {"accessKey": "AKIDBENCH", "accountId": ACCOUNT, "callerId": "AIDABENCH",
                                   "userArn": f"arn:aws:iam::{ACCOUNT}:user/bench", "userId": "AIDABENCH"}},
        },
        "isBase64Encoded": False,
    }


NOT_FOUND = "error:ClusterNotFound"
GET_RECORD = "GetItem (the record)"


def functions(region):
    """Every function measured: name, how to start it, its event, its first AWS call, the answer
    it must give (anything else means the measurement is not what it claims), and whether it
    counts toward the targets: the rows named `<handler>.<case>` time more than the first call."""
    rust = [str(BOOTSTRAP)]

    def handler(name, event, first_call, answer=NOT_FOUND, target=True):
        return {"name": name, "argv": rust, "handler": name.split(".")[0], "event": event,
                "first_call": first_call, "answer": answer, "target": target}

    create = lambda: create_state(region)  # noqa: E731
    teardown = lambda: teardown_state(region)  # noqa: E731

    def updating():  # an update's working state, for a cluster that does not exist
        return dict(create_state(region), update={
            "id": "u-0000000000000001", "route": "none", "from": 0, "to": 0,
            "upgrade": {"from": "1.32/stable", "to": "1.33/stable"},
            "addons": {"disable": [], "enable": ["dns"]},
        })

    def registered():  # what the API starts an execution with, for a cluster that does not exist
        state = create_state(region)
        return {"input": {"cluster_id": state["cluster_id"], "spec": state["spec"]},
                "execution_arn": execution_arn("create-cluster")}

    return [
        {"name": RUST_REF, "argv": [str(REFERENCE)], "handler": "reference", "event": dict,
         "first_call": "GetItem (a missing key)", "answer": "response", "target": False},
        {"name": PY_REF, "argv": [str(VENV_BENCH / "bin" / "python"), "-m", "awslambdaric", "reference.handler"],
         "handler": "reference.handler", "cwd": PY_REFERENCE_DIR, "event": dict,
         "first_call": "GetItem (a missing key)", "answer": "response", "target": False},
        handler("api", lambda: api_event("GET", f"/clusters/no-such-{secrets.token_hex(4)}"),
                "GetItem (the name's claim: 404)", "response:404"),
        handler("register", registered, GET_RECORD),
        handler("resolve-ami", create, GET_RECORD),
        handler("security-group", create, GET_RECORD),
        handler("launch-nodes", create, GET_RECORD),
        handler("await-nodes", create, GET_RECORD),
        handler("bootstrap", create, GET_RECORD),
        handler("join-nodes", create, GET_RECORD),
        handler("verify", create, GET_RECORD),
        handler("store-kubeconfig", create, GET_RECORD),
        handler("activate", create, GET_RECORD),
        handler("mark-failed", lambda: create_state(region, error={"Error": "States.TaskFailed", "Cause": "bench"}), GET_RECORD),
        handler("begin-delete", lambda: {"input": {"id": cluster_id()}, "execution_arn": execution_arn("delete-cluster")},
                GET_RECORD),
        handler("terminate-nodes", teardown, GET_RECORD),
        handler("await-terminated", teardown, "EC2 DescribeInstances (no DynamoDB call)", "response"),
        handler("delete-security-group", teardown, GET_RECORD),
        handler("delete-parameters", teardown, GET_RECORD),
        handler("finish-delete", teardown, GET_RECORD),
        handler("begin-update", lambda: {
            "input": {"cluster_id": cluster_id(), "update_id": "u-0000000000000001", "region": region},
            "execution_arn": execution_arn("update-cluster"),
        }, GET_RECORD),
        handler("remove-workers", updating, GET_RECORD),
        handler("upgrade-nodes", updating, GET_RECORD),
        handler("apply-addons", updating, GET_RECORD),
        handler("finish-update", updating, GET_RECORD),
        handler("fail-update", lambda: dict(updating(), error={"Error": "CommandFailed", "Cause": "bench"}),
                GET_RECORD),
        # A whole dry run over the (small) local fleet: records by status, instances per region.
        handler("reconcile", lambda: {"source": "mecplane.schedule", "dry_run": True},
                "Query ×6 (records by status), DescribeInstances per region (a dry run)", "response",
                target=False),
        # Not the first call only: the list and a whole registration, for scale.
        handler("api.list", lambda: api_event("GET", "/clusters"),
                "Query (GET /clusters; moto's Query grows with the table)", "response:200", target=False),
        handler("register.new", lambda: {
            "input": {"spec": {"name": f"cold-{secrets.token_hex(6)}", "workers": 0}},
            "execution_arn": execution_arn("create-cluster"),
        }, "TransactWriteItems, GetItem, PutItem ×3 (registers a new cluster)", "response", target=False),
    ]


def base_env(stack):
    """What every measured process gets: the local stack's endpoint, credentials, region and
    MECPLANE_* settings (.mecplane/local.env, local/functions.env), as the gateway gives its
    functions, plus the Lambda variables that do not change between runs."""
    import stackclient

    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
    env.update({k: v for k, v in stack.items() if k.startswith(("AWS_", "MECPLANE_"))})
    fenv = ROOT / "local" / "functions.env"
    if fenv.exists():
        env.update(stackclient.load_env(fenv))
    region = stack.get("AWS_REGION", "us-east-1")
    env.update({
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "PYTHONDONTWRITEBYTECODE": "1",  # reference.py: no __pycache__ in the tree
    })
    return env


def vm_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for {pid}")


def describe(inv):
    """The answer as `response`, `response:<statusCode>` (API Gateway) or `error:<errorType>`."""
    try:
        body = json.loads(inv.body or b"null")
    except ValueError:
        body = None
    if inv.kind == "response":
        if isinstance(body, dict) and "statusCode" in body:
            return f"response:{body['statusCode']}"
        return "response"
    error_type = body.get("errorType") if isinstance(body, dict) else None
    return f"{inv.kind}:{error_type}"


def cold_start(fn, env):
    """Spawns `fn` once; returns (total ms, init ms, peak RSS KiB, answer)."""
    region = env["AWS_REGION"]
    inv = Invocation(f"arn:aws:lambda:{region}:{ACCOUNT}:function:{fn['name']}", fn["event"]())
    with RuntimeApi(inv) as api, open(LOGS / f"bench-{fn['name']}.log", "ab") as log:
        run_env = dict(env, AWS_LAMBDA_RUNTIME_API=api.address, _HANDLER=fn["handler"],
                       AWS_LAMBDA_FUNCTION_NAME=fn["name"], AWS_SDK_UA_APP_ID=f"bench-{fn['name']}",
                       AWS_EXECUTION_ENV="AWS_Lambda_python3.11" if fn["name"] == PY_REF else "AWS_Lambda_rust_local",
                       AWS_LAMBDA_LOG_STREAM_NAME=f"bench/[$LATEST]{inv.request_id}")
        t0 = time.monotonic()
        proc = subprocess.Popen(fn["argv"], env=run_env, cwd=fn.get("cwd"), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
        try:
            ok = inv.answered.wait(RUN_TIMEOUT)
            rss = vm_hwm_kib(proc.pid) if ok and proc.poll() is None else None
        finally:
            proc.kill()
            proc.wait()
    log_name = f".mecplane/logs/bench-{fn['name']}.log"
    if not ok:
        got = "never asked for its event" if inv.first_next is None else "got its event but never answered"
        raise BenchError(f"{fn['name']}: {got} within {RUN_TIMEOUT:.0f}s; see {log_name}")
    answer = describe(inv)
    if answer != fn["answer"]:
        raise BenchError(f"{fn['name']}: answered {answer}, expected {fn['answer']}: "
                         f"{inv.body[:500].decode(errors='replace')} (see {log_name})")
    if rss is None:
        raise BenchError(f"{fn['name']}: exited right after answering; see {log_name}")
    return (inv.answered_at - t0) * 1000, (inv.first_next - t0) * 1000, rss, answer


def gateway_calls(stack):
    """The AWS actions each measured function was seen to use (the gateway's /_local/calls)."""
    try:
        with urllib.request.urlopen(stack["AWS_ENDPOINT_URL"].rstrip("/") + "/_local/calls", timeout=10) as resp:
            seen = json.load(resp).get("calls", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k.removeprefix("bench-"): v for k, v in seen.items() if k.startswith("bench-")}


def cold_starts(stack):
    region = stack.get("AWS_REGION", "us-east-1")
    fns = functions(region)
    env = base_env(stack)
    LOGS.mkdir(parents=True, exist_ok=True)
    for fn in fns:
        (LOGS / f"bench-{fn['name']}.log").unlink(missing_ok=True)
    runs = {fn["name"]: [] for fn in fns}
    for fn in fns:  # warm-up: page cache, first-run effects; not counted
        cold_start(fn, env)
    for _ in range(COLD_RUNS):
        for fn in fns:
            runs[fn["name"]].append(cold_start(fn, env))
    calls = gateway_calls(stack)
    out = {}
    for fn in fns:
        total = [r[0] for r in runs[fn["name"]]]
        init = [r[1] for r in runs[fn["name"]]]
        out[fn["name"]] = {
            "median_ms": round(statistics.median(total), 1),
            "min_ms": round(min(total), 1),
            "max_ms": round(max(total), 1),
            "init_median_ms": round(statistics.median(init), 1),
            "peak_rss_kib": max(r[2] for r in runs[fn["name"]]),
            "answer": fn["answer"],
            "first_call": fn["first_call"],
            "target": fn["target"],
            "aws_actions": calls.get(fn["name"], []),
        }
    return out


# ---- the pipeline --------------------------------------------------------------------------------

def pipeline():
    import stackclient as demo  # SigV4 API calls and the leftovers check, against .mecplane/local.env

    sfn = demo.client("stepfunctions")

    t0 = time.monotonic()
    ids = []
    for i in range(CLUSTERS):
        code, rec = demo.api("POST", "/clusters", {"name": f"bench-{i}", "control_planes": 1, "workers": 2})
        if code != 202:
            sys.exit(f"bench: POST answered {code}: {rec}")
        ids.append(rec["id"])

    def wait_all(want, started):
        done = {}
        deadline = time.monotonic() + 600
        while len(done) < len(ids):
            if time.monotonic() > deadline:
                sys.exit(f"bench: clusters did not reach {want}: {set(ids) - set(done)}")
            for cid in ids:
                if cid in done:
                    continue
                code, rec = demo.api("GET", f"/clusters/{cid}")
                if code == 200 and rec["status"] == want:
                    done[cid] = (time.monotonic() - started, rec)
                elif code == 200 and rec["status"] == "FAILED":
                    sys.exit(f"bench: {cid} FAILED: {rec.get('failure')}")
            time.sleep(0.2)
        return done

    active = wait_all("ACTIVE", t0)
    t1 = time.monotonic()
    for cid in ids:
        code, rec = demo.api("DELETE", f"/clusters/{cid}")
        if code != 202:
            sys.exit(f"bench: DELETE answered {code}: {rec}")
    deleted = wait_all("DELETED", t1)
    left = [demo.leftovers(cid) for cid in ids]
    if any(any(x) for x in left):
        sys.exit(f"bench: resources left behind: {left}")

    def history(arn):
        events, token = [], None
        while True:
            page = sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                return events

    def counts(arn):
        events = history(arn)
        transitions = sum(1 for e in events if e["type"].endswith("StateEntered"))
        lambdas = sum(1 for e in events if e["type"] == "LambdaFunctionScheduled" or
                      (e["type"] == "TaskScheduled" and e.get("taskScheduledEventDetails", {}).get("resourceType") == "lambda"))
        return transitions, lambdas, len(events)

    create = [counts(rec["execution_arn"]) for _, rec in active.values()]
    delete = [counts(rec["delete_execution_arn"]) for _, rec in deleted.values()]
    return {
        "clusters": CLUSTERS,
        "create_seconds": sorted(round(t, 1) for t, _ in active.values()),
        "delete_seconds": sorted(round(t, 1) for t, _ in deleted.values()),
        "create_transitions": [c[0] for c in create],
        "create_lambda_invocations": [c[1] for c in create],
        "delete_transitions": [c[0] for c in delete],
        "delete_lambda_invocations": [c[1] for c in delete],
    }


# ---- the report ----------------------------------------------------------------------------------

def mb(n):
    return f"{n / 1e6:.2f} MB"


def release_profile():
    """The workspace's `[profile.release]` table (Cargo.toml)."""
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f).get("profile", {}).get("release", {})


def report_sizes(report):
    bins, py = report["binaries"], report["python"]
    build = os.environ.get("MECPLANE_BENCH_BUILD_SECONDS")
    if build:
        report["release_build_seconds"] = int(build)
    report["release_profile"] = release_profile()
    profile = ", ".join(f"{k}={json.dumps(v)}" for k, v in report["release_profile"].items())
    print(f"== code size (release profile: {profile})" + (f"; release build took {build}s" if build else ""))
    for name, what in (("bootstrap", "every handler"), ("reference", "the Rust reference")):
        b = bins[name]
        print(f"  {name:<10} {mb(b['bytes']):>9} binary, {mb(b['zip_bytes']):>9} zipped   ({what})")
    print(f"  {'python':<10} {'':>9}        {mb(py['zip_bytes']):>9} zipped   ({py['interpreter']}: reference.py + "
          f"{', '.join(f'{k} {v}' for k, v in py['packages'].items())}; botocore alone {mb(py['botocore_zip_bytes'])})")


def report_cold(report):
    cold = report["cold_start"]
    rust, py = cold[RUST_REF]["median_ms"], cold[PY_REF]["median_ms"]
    print(f"== cold start incl. the first AWS call: spawn to the answer, median of {COLD_RUNS} (min-max); "
          f"init = spawn to the first /invocation/next")
    print(f"  {'function':<22} {'median':>9} {'min-max':>15} {'init':>8} {'peak RSS':>10}   "
          f"{'÷ Rust ref':>10} {'Python ÷':>9}   answer, first AWS call")
    for name, c in cold.items():
        c["vs_reference_rust"] = round(c["median_ms"] / rust, 2)
        c["python_over_this"] = round(py / c["median_ms"], 1)
        print(f"  {name:<22} {c['median_ms']:7.1f}ms {c['min_ms']:6.1f}-{c['max_ms']:<6.1f}ms "
              f"{c['init_median_ms']:6.1f}ms {c['peak_rss_kib'] / 1024:7.1f}MiB   "
              f"{c['vs_reference_rust']:9.2f}× {c['python_over_this']:8.1f}×   {c['answer']}, {c['first_call']}"
              + (f" [{' '.join(c['aws_actions'])}]" if c["aws_actions"] else "")
              + ("" if c["target"] or name in (RUST_REF, PY_REF) else " (not in the targets)"))
    report["cold_start_ms"] = {name: c["median_ms"] for name, c in cold.items()}


def report_targets(report):
    cold = report["cold_start"]
    handlers = {k: v for k, v in cold.items() if v["target"]}
    worst_rust = max(handlers.items(), key=lambda kv: kv[1]["vs_reference_rust"])
    worst_py = min(handlers.items(), key=lambda kv: kv[1]["python_over_this"])
    worst_rss = max(handlers.items(), key=lambda kv: kv[1]["peak_rss_kib"])
    zipped = report["binaries"]["bootstrap"]["zip_bytes"]
    targets = {
        "handler_vs_rust_reference": {
            "target": f"<= {TARGET_VS_RUST}x", "worst": worst_rust[0], "value": worst_rust[1]["vs_reference_rust"],
            "failing": sorted(k for k, v in handlers.items() if v["vs_reference_rust"] > TARGET_VS_RUST),
        },
        "python_vs_handler": {
            "target": f">= {TARGET_VS_PYTHON}x", "worst": worst_py[0], "value": worst_py[1]["python_over_this"],
            "failing": sorted(k for k, v in handlers.items() if v["python_over_this"] < TARGET_VS_PYTHON),
        },
        "peak_rss": {
            "target": "<= 16 MiB", "worst": worst_rss[0], "value": f"{worst_rss[1]['peak_rss_kib'] / 1024:.1f} MiB",
            "failing": sorted(k for k, v in handlers.items() if v["peak_rss_kib"] > TARGET_RSS_KIB),
        },
        "zip": {"target": "<= 8 MB", "worst": "bootstrap", "value": mb(zipped),
                "failing": ["bootstrap"] if zipped > TARGET_ZIP_BYTES else []},
    }
    print("== targets")
    for name, t in targets.items():
        t["holds"] = not t["failing"]
        verdict = "holds" if t["holds"] else f"FAILS for {', '.join(t['failing'])}"
        print(f"  {name:<26} {t['target']:<10} worst {t['worst']} {t['value']}: {verdict}")
    report["targets"] = targets


def main():
    import stackclient

    report = {"binaries": binary_sizes(), "python": python_zip()}
    report_sizes(report)
    report["load_average_before"] = os.getloadavg()
    report["cold_start"] = cold_starts(stackclient.ENV)
    report["load_average_after"] = os.getloadavg()
    report_cold(report)
    report_targets(report)

    if PIPELINE:
        print(f"== pipeline on the local stack: {CLUSTERS} clusters of 1+2 created at once, then deleted")
        p = pipeline()
        report["pipeline"] = p
        ct, dt = statistics.median(p["create_transitions"]), statistics.median(p["delete_transitions"])
        cl, dl = statistics.median(p["create_lambda_invocations"]), statistics.median(p["delete_lambda_invocations"])
        print(f"  to ACTIVE   {p['create_seconds']} s")
        print(f"  to DELETED  {p['delete_seconds']} s")
        print(f"  create: {ct:.0f} state transitions, {cl:.0f} Lambda invocations (poll every 1 s)")
        print(f"  delete: {dt:.0f} state transitions, {dl:.0f} Lambda invocations")
        usd = (ct + dt) * TRANSITION_USD + (cl + dl) * LAMBDA_REQUEST_USD
        report["usd_per_create_delete_local_polling"] = round(usd, 6)
        print(f"  Step Functions + Lambda requests per create+delete: ${usd:.5f} (before Lambda GB-seconds)")
    out = ROOT / ".mecplane" / "bench.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"report: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"bench: {e}")
