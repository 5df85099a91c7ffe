#!/usr/bin/env python3
"""mecplane benchmarks (`make bench`). Prints a report and writes it to .mecplane/bench.json.

1. Release binaries: size of each function built by local/bench.sh (LTO, one codegen unit,
   strip, opt-level "s" — the workspace's release profile).
2. Cold start: time from spawning a release function binary to its first
   `GET /2018-06-01/runtime/invocation/next` against a minimal Runtime API served here — what the
   Lambda init phase costs us (SDK config, clients built once, tracing set up). Median of N runs.
3. The pipeline on the local stack (started by local/bench.sh with MECPLANE_AGENT_DELAY_MS=0):
   K clusters of 1 control plane + 2 workers created at once through the HTTP API and then
   deleted; wall time to ACTIVE and to DELETED, and from each execution's history the state
   transitions and Lambda invocations — what a create and a delete cost in Step Functions
   Standard ($0.025 per 1,000 transitions) and Lambda requests ($0.20 per million).

Local wall times measure our code and the simulator, not EC2: a real node boots and installs
MicroK8s in minutes. The transition and invocation counts carry over to AWS unchanged except for
the polling loops, which run once per `poll_seconds` (15 s deployed, 1 s here).
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "local"))

RELEASE = ROOT / "target" / "release"
FUNCTIONS = os.environ.get("MECPLANE_BENCH_FUNCTIONS", "api register launch-nodes").split()
COLD_RUNS = int(os.environ.get("MECPLANE_BENCH_COLD_RUNS", "5"))
CLUSTERS = int(os.environ.get("MECPLANE_BENCH_CLUSTERS", "3"))
TRANSITION_USD = 0.025 / 1000
LAMBDA_REQUEST_USD = 0.20 / 1_000_000


def sizes():
    out = {}
    for name in FUNCTIONS:
        path = RELEASE / name
        if path.exists():
            out[name] = path.stat().st_size
    return out


class _Runtime(BaseHTTPRequestHandler):
    """A Runtime API that notes when the function first asks for an event, then holds it."""

    first_next = None
    event = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path.endswith("/runtime/invocation/next"):
            if _Runtime.first_next is None:
                _Runtime.first_next = time.monotonic()
                _Runtime.event.set()
            time.sleep(0.5)
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


def cold_start(binary, env):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    runs = []
    try:
        for _ in range(COLD_RUNS):
            _Runtime.first_next = None
            _Runtime.event.clear()
            run_env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
                           AWS_LAMBDA_FUNCTION_NAME=binary.name, AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
                           AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_FORMAT="JSON")
            t0 = time.monotonic()
            proc = subprocess.Popen([str(binary)], env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ok = _Runtime.event.wait(10)
            proc.kill()
            proc.wait()
            if not ok:
                raise RuntimeError(f"{binary.name} never asked for an event")
            runs.append((_Runtime.first_next - t0) * 1000)
    finally:
        server.shutdown()
    return statistics.median(runs), min(runs), max(runs)


def function_env():
    """The environment the local stack gives every function (table, machines, endpoint)."""
    import stackclient

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    env.update(stackclient.ENV)
    fenv = ROOT / "local" / "functions.env"
    if fenv.exists():
        env.update(stackclient.load_env(fenv))
    return env


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


def main():
    report = {"release_bytes": sizes()}
    print("== release binaries (LTO, codegen-units=1, strip, opt-level s)")
    for name, size in report["release_bytes"].items():
        print(f"  {name:<16} {size / 1e6:6.2f} MB")
    if not report["release_bytes"]:
        print("  (none built: run local/bench.sh)")

    env = function_env()
    report["cold_start_ms"] = {}
    print(f"== cold start: spawn to first /invocation/next, median of {COLD_RUNS} (min-max)")
    for name in report["release_bytes"]:
        med, lo, hi = cold_start(RELEASE / name, env)
        report["cold_start_ms"][name] = round(med, 1)
        print(f"  {name:<16} {med:6.1f} ms  ({lo:.1f}-{hi:.1f})")

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
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
