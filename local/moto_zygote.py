"""The local stacks' motos forked from one warm moto: what `make test` runs its tests under.

Every local stack has its own moto (`local/moto_catalogue.py`, started by `mecplane-local`), and
the gateway fills it with `local/provision.py`. A cold moto imports itself and botocore's service
models, then builds each region's EC2 backend on the first request there: about 2.5 s of CPU
before it has served the stack, and provision.py about 0.7 s more importing boto3 and loading its
clients' models; each of the stacks a test run starts pays it again, on a machine whose cores the
tests already fill. This process pays it once: it imports moto with the catalogue's patches and
provision.py, loads the models, builds the backends of the regions the stacks use by answering a
few read-only requests in memory, then forks a moto, or a provision.py run, for each stack,
copy-on-write.

    python local/moto_zygote.py serve [--socket PATH]           # until SIGTERM or SIGINT
    python local/moto_zygote.py run [--socket PATH] -- CMD ...  # while CMD runs; its exit code

`run` gives CMD `MECPLANE_MOTO_ZYGOTE=<socket>`. A launcher (`moto_catalogue.py`, `provision.py`)
that finds it asks for a fork instead of running: it sends the program's name, its arguments,
environment, working directory and standard streams (SCM_RIGHTS), and stays, holding the
connection, as the process `mecplane-local` waits on and signals. The fork runs with the
launcher's environment and streams (a moto serves on the arguments' port) and ends when the
connection closes (the launcher exited or was killed); it sends its exit code when it ends by
itself, and the launcher exits with it. When no zygote answers, the launcher runs the program
itself, as it does without one. The zygote logs each fork on its standard error.

A fork is a fresh moto: the zygote only reads in its warm-up, and what that made (the default VPC
of each warmed region) is what any moto makes on its first request to a region. `random` is
re-seeded in every fork (CPython does so at fork), so forks do not share resource ids.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ZYGOTE_ENV = "MECPLANE_MOTO_ZYGOTE"
# The regions the stacks of the tests use (`CLUSTER_REGIONS` in tests/e2e/support/stack.rs); any
# other region works too, built on its first request as in a cold moto.
WARM_REGIONS = ("us-east-1", "eu-west-1")
# How long a launcher waits for the zygote to say it forked before starting moto itself.
FORK_TIMEOUT_SECONDS = 10.0
_LENGTH = struct.Struct("!I")
_QUERY = "application/x-www-form-urlencoded"
_JSON_10 = "application/x-amz-json-1.0"
_JSON_11 = "application/x-amz-json-1.1"
# The read-only requests that build each service's app and backends in a warmed region:
# (service, content type, X-Amz-Target, body).
WARM_REQUESTS = [
    ("ec2", _QUERY, None, "Action=DescribeAvailabilityZones&Version=2016-11-15"),
    ("ec2", _QUERY, None, "Action=DescribeInstances&Version=2016-11-15"),
    ("elasticloadbalancing", _QUERY, None, "Action=DescribeLoadBalancers&Version=2015-12-01"),
    ("iam", _QUERY, None, "Action=ListInstanceProfiles&Version=2010-05-08"),
    ("dynamodb", _JSON_10, "DynamoDB_20120810.ListTables", "{}"),
    ("ssm", _JSON_11, "AmazonSSM.DescribeParameters", "{}"),
    ("states", _JSON_11, "AWSStepFunctions.ListStateMachines", "{}"),
    ("kms", _JSON_11, "TrentService.ListAliases", "{}"),
]


# ---- the launcher's side (imports nothing of moto) ---------------------------------------------


def run_as_fork(program: str) -> None:
    """Has the zygote that `MECPLANE_MOTO_ZYGOTE` names fork `program` (a `PROGRAMS` name) for this
    process's arguments, waits, holding the connection, until that fork ends, and exits with its
    code. Returns when no zygote answered: the caller runs the program itself."""
    path = os.environ[ZYGOTE_ENV]
    request = {"program": program, "argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    request = json.dumps(request).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(FORK_TIMEOUT_SECONDS)
        conn.connect(path)
        socket.send_fds(conn, [_LENGTH.pack(len(request)) + request], [0, 1, 2])
        forked = _read_line(conn)
    except OSError as e:
        print(f"moto zygote at {path} did not answer ({e}); running {program} here", file=sys.stderr)
        conn.close()
        return
    if not forked.startswith("forked "):
        print(f"moto zygote at {path} refused ({forked!r}); running {program} here", file=sys.stderr)
        conn.close()
        return
    conn.settimeout(None)
    # The fork says how it ended (a server only when it fails); the connection closes as it exits.
    ended = _read_line(conn)
    sys.exit(int(ended.split()[1]) if ended.startswith("exit ") else 1)


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


# ---- the zygote --------------------------------------------------------------------------------


def warm(regions: tuple[str, ...]) -> Any:
    """Imports moto with the catalogue's patches and builds what every stack's first requests
    would: the per-service apps, the service models, the backends of `regions`. Returns the
    application the forks serve."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import moto_catalogue
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.test import Client

    moto_catalogue.patch_moto()
    _warm_provision()
    app = DomainDispatcherApplication(create_backend_app)
    client = Client(app)
    for region in regions:
        for service, content_type, target, body in WARM_REQUESTS:
            _warm_call(client, region, service, body, content_type, target)
    return app


def _warm_provision() -> None:
    """Imports provision.py (boto3, PyYAML) and has botocore load the models and endpoint rules
    of the clients it makes (per service, whatever the region), into the default session it makes
    them from; no request is sent."""
    import boto3
    import provision

    for service in provision.STACK_SERVICES + provision.REGION_SERVICES:
        boto3.client(service, region_name=WARM_REGIONS[0], endpoint_url="http://127.0.0.1:9",
                     aws_access_key_id="warm", aws_secret_access_key="warm")


def _warm_call(client: Any, region: str, service: str, body: str, content_type: str, target: str | None) -> None:
    headers = {
        # moto routes by the credential scope; it does not check the signature.
        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20240101/{region}/{service}/aws4_request, "
        "SignedHeaders=host, Signature=0",
        "Content-Type": content_type,
    }
    if target:
        headers["X-Amz-Target"] = target
    answer = client.post("/", data=body, headers=headers)
    if answer.status_code != 200:
        raise SystemExit(f"moto zygote: warm-up {service} in {region} answered {answer.status_code}: "
                         f"{answer.data[:300]!r}")


def serve_forks(listener: socket.socket, app: Any, keep_going) -> None:
    """Accepts launchers on `listener` and forks a moto for each, while `keep_going()`."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: set[int] = set()
    while keep_going():
        for _ in selector.select(timeout=0.2):
            conn, _addr = listener.accept()
            pid = _fork_one(conn, listener, app)
            if pid is not None:
                children.add(pid)
        for pid in list(children):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                children.discard(pid)
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _fork_one(conn: socket.socket, listener: socket.socket, app: Any) -> int | None:
    conn.settimeout(FORK_TIMEOUT_SECONDS)
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
        if len(fds) != 3 or len(msg) < _LENGTH.size:
            raise OSError(f"expected a request and 3 streams, got {len(msg)} bytes and {len(fds)} fds")
        (length,) = _LENGTH.unpack_from(msg)
        body = msg[_LENGTH.size:]
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("the launcher hung up mid-request")
            body += chunk
        request = json.loads(body)
        if request.get("program") not in PROGRAMS:
            raise ValueError(f"unknown program {request.get('program')!r} (known: {', '.join(PROGRAMS)})")
    except (OSError, ValueError) as e:
        print(f"moto zygote: bad request: {e}", file=sys.stderr)
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        try:
            code = _run_in_fork(conn, fds, request, app)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # the fork must never return into the zygote's loop
            print(f"moto zygote fork: {e!r}", file=sys.stderr)
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(f"exit {code}\n".encode())
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    print(f"moto zygote: forked {pid} for {request['program']}", file=sys.stderr, flush=True)
    try:
        conn.sendall(f"forked {pid}\n".encode())
    except OSError:
        pass
    conn.close()
    return pid


def _run_in_fork(conn: socket.socket, fds: list[int], request: dict[str, Any], app: Any) -> int:
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn.settimeout(None)

    def end_with_the_launcher() -> None:
        while conn.recv(256):
            pass
        os._exit(0)

    threading.Thread(target=end_with_the_launcher, name="launcher-watch", daemon=True).start()
    return PROGRAMS[request["program"]](request["argv"], app)


def _serve_moto(argv: list[str], app: Any) -> int:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    p = argparse.ArgumentParser(prog="moto (forked)")
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", "5000")))
    args = p.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    # As moto's own server entry point runs it (moto.server.main).
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    return 0


def _provision(argv: list[str], _app: Any) -> int:
    import provision

    return provision.main(argv)


# What a launcher may ask the zygote to fork: moto (local/moto_catalogue.py's arguments) and
# local/provision.py (its arguments), which the gateway runs against it at every stack start.
PROGRAMS = {"moto": _serve_moto, "provision": _provision}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["serve", "run"])
    p.add_argument("--socket", type=Path, help="the Unix socket to listen on (default: a new temporary directory's)")
    p.add_argument("--warm-regions", default=",".join(WARM_REGIONS))
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    command = argv[split + 1:]
    if (args.mode == "run") != bool(command):
        p.error("run takes a command after --, serve none")

    tmp = None
    path = args.socket
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="moto-zygote-")
        path = Path(tmp.name) / "zygote.sock"
    app = warm(tuple(r for r in args.warm_regions.split(",") if r))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if path.exists():
        path.unlink()
    listener.bind(str(path))
    listener.listen(64)
    print(f"moto zygote: ready on {path}", file=sys.stderr, flush=True)

    stop = threading.Event()
    try:
        if args.mode == "serve":
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            serve_forks(listener, app, lambda: not stop.is_set())
            return 0
        child = subprocess.Popen(command, env={**os.environ, ZYGOTE_ENV: str(path)})
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
        serve_forks(listener, app, lambda: child.poll() is None)
        return child.returncode
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
