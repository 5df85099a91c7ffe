//! Integration tests: a real stack (moto spawned by the gateway on free ports, the `echo-fn`
//! example as the hosted functions) and `local/up.sh` / `local/down.sh`.
//!
//! They need the pinned moto in `<repo>/.venv` (`make setup-python`), started through
//! `local/moto_catalogue.py`; without it they fail. The node
//! simulator is off here (it belongs to `mecplane-nodesim`'s own tests and the end-to-end tests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

const SIGV4: &str = "AWS4-HMAC-SHA256 Credential=AKIDLOCAL/20250101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00ff";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The launcher of the pinned moto `make setup-python` installs (`local/moto_catalogue.py`, run by
/// the venv's python); the venv's absence fails the test.
fn moto_server() -> PathBuf {
    assert!(
        repo_root().join(".venv/bin/moto_server").is_file(),
        "the pinned moto is missing: run `make setup-python`"
    );
    let p = repo_root().join("local/moto_catalogue.py");
    assert!(
        p.is_file(),
        "{} is missing: run `make setup-python`",
        p.display()
    );
    p
}

/// target/debug (the directory of this test's `deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn echo_fn() -> PathBuf {
    let path = target_dir().join("examples/echo-fn");
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "mecplane-local", "--example", "echo-fn"])
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mecplane-local-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A SAM template with the functions `echo-fn`, `api` and `reconcile` whose create state machine
/// calls `echo-fn` with Retry/Catch on `CustomError` (and a `ReconcileRateMinutes` of 7), a bin
/// directory whose `bootstrap` (the one binary of every function) is the example binary.
fn write_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("infra")).unwrap();
    std::fs::create_dir_all(dir.join("statemachine")).unwrap();
    std::fs::write(
        dir.join("infra/template.yaml"),
        r#"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Timeout: 20
Resources:
  ClustersTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
  EchoFnFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: echo-fn
      Environment:
        Variables:
          FROM_TEMPLATE: yes-it-is
          MECPLANE_TABLE: !Ref ClustersTable
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: api
  CreateClusterStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: ../statemachine/create.asl.json
      DefinitionSubstitutions:
        EchoFnFunctionArn: !GetAtt EchoFnFunction.Arn
  DeleteClusterStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: ../statemachine/delete.asl.json
  ReconcileFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: reconcile
Parameters:
  ReconcileRateMinutes:
    Type: Number
    Default: 7
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("statemachine/create.asl.json"),
        r#"{
  "StartAt": "Echo",
  "States": {
    "Echo": {
      "Type": "Task",
      "Resource": "${EchoFnFunctionArn}",
      "Retry": [{"ErrorEquals": ["CustomError"], "IntervalSeconds": 1, "MaxAttempts": 1, "BackoffRate": 1.0}],
      "Catch": [{"ErrorEquals": ["CustomError"], "ResultPath": "$.error", "Next": "Caught"}],
      "Next": "Done"
    },
    "Caught": {"Type": "Pass", "End": true},
    "Done": {"Type": "Succeed"}
  }
}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("statemachine/delete.asl.json"),
        r#"{"StartAt": "Echo", "States": {"Echo": {"Type": "Task", "Resource": "${EchoFnFunctionArn}", "End": true}}}"#,
    )
    .unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let echo = echo_fn();
    std::os::unix::fs::symlink(&echo, bin.join("bootstrap")).unwrap();
    (dir.join("infra/template.yaml"), bin)
}

fn read_env(path: &Path, deadline: Duration, child: &mut Child) -> HashMap<String, String> {
    let start = Instant::now();
    loop {
        // local.env appears atomically, complete, so the first successful open is the whole file.
        if let Ok(iter) = dotenvy::from_path_iter(path) {
            return iter
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{} is not a dotenv file: {e}", path.display()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("gateway exited before it was ready: {status}");
        }
        assert!(
            start.elapsed() < deadline,
            "no {} after {deadline:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at /proc's state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[derive(Clone)]
struct Http {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Http {
    fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn invoke(&self, function: &str, payload: Value) -> Reply {
        self.send(
            "POST",
            &format!("/2015-03-31/functions/{function}/invocations"),
            &[],
            &payload.to_string(),
        )
        .await
    }

    /// A Step Functions JSON 1.0 call (forwarded to moto by the gateway).
    async fn sfn(&self, op: &str, body: Value) -> Value {
        let target = format!("AWSStepFunctions.{op}");
        let r = self
            .send(
                "POST",
                "/",
                &[
                    ("x-amz-target", &target),
                    ("content-type", "application/x-amz-json-1.0"),
                    ("authorization", "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/states/aws4_request, SignedHeaders=host, Signature=00"),
                ],
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{op}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    }
}

/// Percent-encodes a path segment (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_hosts_functions_and_drives_step_functions() {
    let moto = moto_server();
    let dir = temp_dir("stack");
    let (template, bin) = write_fixture(&dir);
    let state = dir.join("state");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_mecplane-local"))
        .args(["--port", "0", "--moto-port", "0", "--sim", "off"])
        .arg("--spawn-moto")
        .arg(&moto)
        .arg("--state-dir")
        .arg(&state)
        .arg("--repo-root")
        .arg(repo_root())
        .arg("--functions-dir")
        .arg(&bin)
        .args(["--function", "echo-fn", "--function", "api"])
        .arg("--template")
        .arg(&template)
        .stdin(Stdio::null())
        .spawn()
        .expect("start gateway");
    let env = read_env(
        &state.join("local.env"),
        Duration::from_secs(90),
        &mut gateway,
    );
    let endpoint = env["AWS_ENDPOINT_URL"].clone();
    let gateway_port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let moto_port: u16 = env["MECPLANE_MOTO_ENDPOINT"]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(env["MECPLANE_API_URL"], format!("{endpoint}/api"));
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["MECPLANE_TABLE"], "mecplane-ClustersTable");
    assert!(env["MECPLANE_CREATE_STATE_MACHINE_ARN"]
        .ends_with(":stateMachine:CreateClusterStateMachine"));
    assert!(env["MECPLANE_DELETE_STATE_MACHINE_ARN"]
        .ends_with(":stateMachine:DeleteClusterStateMachine"));
    let http = Http::new(&endpoint);
    let mut pids = Vec::new();

    // Success, by name.
    let r = http.invoke("echo-fn", json!({"hello": 1})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-executed-version"), Some("$LATEST"));
    assert!(r.header("x-amz-function-error").is_none());
    let v = r.json();
    assert_eq!(v["echo"], json!({"hello": 1}));
    assert_eq!(v["function"], "echo-fn");
    assert_eq!(
        v["handler"], "echo-fn",
        "the process is told its handler (_HANDLER)"
    );
    assert_eq!(v["table"], "mecplane-ClustersTable");
    pids.push(v["pid"].as_u64().unwrap() as u32);

    // Full and partial ARNs, qualifier.
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:echo-fn";
    let r = http.invoke(&encode(arn), json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["invoked_arn"], arn);
    let r = http
        .invoke(&encode("123456789012:function:echo-fn:$LATEST"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    let r = http
        .send(
            "POST",
            "/2015-03-31/functions/echo-fn/invocations?Qualifier=%24LATEST",
            &[],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200);

    // Function error: 200 + X-Amz-Function-Error + the error payload.
    let r = http
        .invoke("echo-fn", json!({"fail": "CustomError", "message": "boom"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        r.json(),
        json!({"errorType": "CustomError", "errorMessage": "boom"})
    );

    // Unknown function, unknown qualifier: 404 ResourceNotFoundException.
    let r = http.invoke("nope", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("ResourceNotFoundException")
    );
    assert_eq!(
        r.json(),
        json!({"Type": "User", "Message": "Function not found: arn:aws:lambda:us-east-1:123456789012:function:nope"})
    );
    let r = http.invoke("echo-fn:prod", json!({})).await;
    assert_eq!(r.status, 404);

    // A process that exits mid-invocation: Unhandled Runtime.ExitError, then a fresh process.
    let r = http.invoke("echo-fn", json!({"exit": 3})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Runtime.ExitError");
    let r = http.invoke("echo-fn", json!({"after": "exit"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["echo"]["after"], "exit");

    // Concurrency: three slow invocations at once run in three processes.
    let slow = (0..3).map(|_| {
        let http = http.clone();
        async move { http.invoke("echo-fn", json!({"sleep_ms": 700})).await }
    });
    let replies = futures_join_all(slow).await;
    let mut concurrent: Vec<u32> = replies
        .iter()
        .map(|r| r.json()["pid"].as_u64().unwrap() as u32)
        .collect();
    concurrent.sort();
    concurrent.dedup();
    assert_eq!(concurrent.len(), 3, "{concurrent:?}");
    pids.extend(&concurrent);

    // Event invocation.
    let r = http
        .send(
            "POST",
            "/2015-03-31/functions/echo-fn/invocations",
            &[("x-amz-invocation-type", "Event")],
            "{}",
        )
        .await;
    assert_eq!(r.status, 202);

    // /api: SigV4 required; the event reaches the function; structured responses map back.
    let r = http.send("GET", "/api/clusters", &[], "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), json!({"message": "Forbidden"}));
    let r = http
        .send(
            "GET",
            "/api/clusters/c-1?x=a%20b",
            &[("authorization", SIGV4), ("cookie", "k=v")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let ev = &r.json()["echo"];
    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["rawPath"], "/clusters/c-1");
    assert_eq!(ev["queryStringParameters"]["x"], "a b");
    assert_eq!(ev["cookies"], json!(["k=v"]));
    assert_eq!(ev["requestContext"]["http"]["method"], "GET");
    assert_eq!(
        ev["requestContext"]["authorizer"]["iam"]["accessKey"],
        "AKIDLOCAL"
    );
    let respond = json!({"respond": {"statusCode": 409, "headers": {"content-type": "application/json"}, "cookies": ["a=1"], "body": "{\"conflict\":true}"}});
    let r = http
        .send(
            "POST",
            "/api/clusters",
            &[("authorization", SIGV4)],
            &respond.to_string(),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.header("set-cookie"), Some("a=1"));
    assert_eq!(r.json(), json!({"conflict": true}));
    let big = "x".repeat(10 * 1024 * 1024 + 1);
    let r = http
        .send("POST", "/api/clusters", &[("authorization", SIGV4)], &big)
        .await;
    assert_eq!(r.status, 413);

    // Forwarding to moto: the provisioned table is there.
    let r = http
        .send(
            "POST",
            "/",
            &[
                ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
                ("content-type", "application/x-amz-json-1.0"),
                ("authorization", "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00"),
            ],
            r#"{"TableName":"mecplane-ClustersTable"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["Table"]["TableName"], "mecplane-ClustersTable");

    // A real Step Functions execution in moto: the custom error name drives Retry and Catch.
    let before = invocations(&http, "echo-fn").await;
    let started = http
        .sfn(
            "StartExecution",
            json!({
                "stateMachineArn": env["MECPLANE_CREATE_STATE_MACHINE_ARN"],
                "name": "retry-catch",
                "input": json!({"fail": "CustomError", "message": "from sfn"}).to_string(),
            }),
        )
        .await;
    let execution_arn = started["executionArn"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let d = http
            .sfn("DescribeExecution", json!({"executionArn": execution_arn}))
            .await;
        if d["status"] != "RUNNING" {
            break d;
        }
        assert!(Instant::now() < deadline, "execution still running: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let output: Value = serde_json::from_str(done["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["error"]["Error"], "CustomError", "{output}");
    let cause: Value = serde_json::from_str(output["error"]["Cause"].as_str().unwrap()).unwrap();
    assert_eq!(cause["errorMessage"], "from sfn");
    // One attempt plus one retry reached the function.
    assert_eq!(invocations(&http, "echo-fn").await - before, 2);

    // Shutdown: SIGTERM takes every function process and moto down, closes the ports.
    let listed = http.send("GET", "/_local/functions", &[], "").await.json();
    assert!(
        listed["functions"][1]["processes"].as_u64().unwrap() >= 1,
        "{listed}"
    );
    unsafe_kill(gateway.id(), libc::SIGTERM);
    let status = wait_child(&mut gateway, Duration::from_secs(15));
    assert!(status.success(), "gateway exit status {status}");
    for pid in &pids {
        assert!(
            !pid_alive(*pid),
            "function process {pid} survived the gateway"
        );
    }
    assert!(!port_open(gateway_port), "gateway port still open");
    wait_until(
        Duration::from_secs(5),
        || !port_open(moto_port),
        "moto port still open",
    );
    assert!(!state.join("local.env").exists(), "local.env left behind");
    let log = std::fs::read_to_string(state.join("logs/echo-fn.log")).unwrap();
    assert!(log.contains("sandbox"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn up_and_down_leave_no_process() {
    moto_server();
    let dir = temp_dir("updown");
    let (template, bin) = write_fixture(&dir);
    let state = dir.join("state");
    let gateway_port = free_port();
    let moto_port = free_port();
    let script_env = |cmd: &mut Command| {
        cmd.env("MECPLANE_STATE_DIR", &state)
            .env("MECPLANE_GATEWAY_PORT", gateway_port.to_string())
            .env("MECPLANE_MOTO_PORT", moto_port.to_string())
            .env("MECPLANE_FUNCTIONS_DIR", &bin)
            .env("MECPLANE_GATEWAY_BIN", env!("CARGO_BIN_EXE_mecplane-local"))
            .env("MECPLANE_TEMPLATE", &template)
            .env("MECPLANE_API_AUTH", "none")
            .env("MECPLANE_SIM", "off");
    };
    let root = repo_root();

    // down.sh with nothing up is fine.
    let mut down = Command::new(root.join("local/down.sh"));
    script_env(&mut down);
    assert!(down.status().unwrap().success());

    let mut up = Command::new(root.join("local/up.sh"));
    script_env(&mut up);
    let out = up.output().unwrap();
    assert!(
        out.status.success(),
        "up.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("local stack up in"));
    assert!(port_open(gateway_port) && port_open(moto_port));
    let gateway_pid: u32 = std::fs::read_to_string(state.join("gateway.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let moto_pid: u32 = std::fs::read_to_string(state.join("moto.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Start a function process (the repo's `api` function is the echo example here).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fn_pid = rt.block_on(async {
        let http = Http::new(&format!("http://127.0.0.1:{gateway_port}"));
        let r = http.send("GET", "/api/ping", &[], "").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["pid"].as_u64().unwrap() as u32
    });
    assert!(pid_alive(fn_pid));

    // The reconcile schedule's period comes from the template's ReconcileRateMinutes.
    let reconciles = rt.block_on(async {
        let http = Http::new(&format!("http://127.0.0.1:{gateway_port}"));
        let r = http.send("GET", "/_local/reconciles", &[], "").await;
        assert_eq!(r.status, 200);
        r.json()
    });
    assert_eq!(reconciles["interval_seconds"], 7 * 60, "{reconciles}");
    assert_eq!(reconciles["reconciles"], json!([]), "{reconciles}");

    // up.sh again is a no-op.
    let mut again = Command::new(root.join("local/up.sh"));
    script_env(&mut again);
    let out = again.output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already up"));

    let mut down = Command::new(root.join("local/down.sh"));
    script_env(&mut down);
    let out = down.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in [gateway_pid, moto_pid, fn_pid] {
        assert!(!pid_alive(pid), "process {pid} survived down.sh");
    }
    assert!(!port_open(gateway_port) && !port_open(moto_port));
    assert!(!state.join("local.env").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An EC2 Query-protocol call through the gateway, signed (in shape) for us-east-1.
async fn ec2(http: &Http, form: &str) -> Reply {
    http.send(
        "POST",
        "/",
        &[
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00"),
        ],
        &format!("{form}&Version=2016-11-15"),
    )
    .await
}

/// The first `<tag>…</tag>` of an XML answer.
fn xml_value(body: &[u8], tag: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let open = format!("<{tag}>");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {text}"))
        + open.len();
    let end = text[start..].find('<').unwrap() + start;
    text[start..end].to_string()
}

/// Polls `/_local/reconciles` until `done` holds for its runs.
async fn wait_reconciles(http: &Http, what: &str, done: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = http.send("GET", "/_local/reconciles", &[], "").await.json();
        if done(listed["reconciles"].as_array().unwrap()) {
            return listed;
        }
        assert!(Instant::now() < deadline, "{what}: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_reconcile_on_a_schedule_and_on_ec2_state_changes() {
    let moto = moto_server();
    let dir = temp_dir("reconcile");
    let (template, bin) = write_fixture(&dir);
    let state = dir.join("state");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_mecplane-local"))
        .args(["--port", "0", "--moto-port", "0", "--sim", "off"])
        .args([
            "--function",
            "reconcile",
            "--reconcile-interval-seconds",
            "1",
        ])
        .arg("--spawn-moto")
        .arg(&moto)
        .arg("--state-dir")
        .arg(&state)
        .arg("--repo-root")
        .arg(repo_root())
        .arg("--functions-dir")
        .arg(&bin)
        .arg("--template")
        .arg(&template)
        .stdin(Stdio::null())
        .spawn()
        .expect("start gateway");
    let env = read_env(
        &state.join("local.env"),
        Duration::from_secs(90),
        &mut gateway,
    );
    let http = Http::new(&env["AWS_ENDPOINT_URL"]);

    // The schedule: the flag overrides the template's 7 minutes; each run gets the target's input.
    let listed = wait_reconciles(&http, "two scheduled runs", |runs| {
        runs.iter()
            .filter(|r| r["trigger"] == "schedule" && r["status"] == "succeeded")
            .count()
            >= 2
    })
    .await;
    assert_eq!(listed["interval_seconds"], 1, "{listed}");
    let first = &listed["reconciles"][0];
    assert_eq!(first["trigger"], "schedule", "{listed}");
    assert_eq!(first["instance_id"], Value::Null);
    assert_eq!(first["event"], json!({"source": "mecplane.schedule"}));
    assert_eq!(
        first["response"]["echo"],
        json!({"source": "mecplane.schedule"})
    );
    assert_eq!(first["response"]["handler"], "reconcile");
    assert!(first["request_id"].is_string() && first["finished_at"].is_string());

    // EC2: a terminate moto refuses sends no event; a stop and a terminate it accepts send one
    // each, with the instance and the state, as the EventBridge rule delivers them.
    let r = ec2(
        &http,
        "Action=TerminateInstances&InstanceId.1=i-0000000000000dead",
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = ec2(&http, "Action=DescribeImages&Owner.1=amazon").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let image = xml_value(&r.body, "imageId");
    let r = ec2(
        &http,
        &format!("Action=RunInstances&ImageId={image}&MinCount=1&MaxCount=1&InstanceType=t3.micro"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let instance = xml_value(&r.body, "instanceId");
    let r = ec2(
        &http,
        &format!("Action=StopInstances&InstanceId.1={instance}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = ec2(
        &http,
        &format!("Action=TerminateInstances&InstanceId.1={instance}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let listed = wait_reconciles(&http, "a run per EC2 state change", |runs| {
        runs.iter()
            .filter(|r| r["trigger"] == "ec2" && r["status"] != "running")
            .count()
            >= 2
    })
    .await;
    let ec2_runs: Vec<&Value> = listed["reconciles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "ec2")
        .collect();
    assert_eq!(ec2_runs.len(), 2, "{listed}");
    let mut states: Vec<&str> = ec2_runs
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    states.sort();
    assert_eq!(states, ["shutting-down", "stopping"], "{listed}");
    for run in ec2_runs {
        assert_eq!(run["instance_id"], instance.as_str());
        assert_eq!(run["status"], "succeeded", "{run}");
        let event = &run["response"]["echo"];
        assert_eq!(event["source"], "aws.ec2");
        assert_eq!(
            event["detail-type"],
            "EC2 Instance State-change Notification"
        );
        assert_eq!(event["detail"]["instance-id"], instance.as_str());
        assert_eq!(event["detail"]["state"], run["state"]);
        assert_eq!(event["region"], "us-east-1");
    }

    unsafe_kill(gateway.id(), libc::SIGTERM);
    let status = wait_child(&mut gateway, Duration::from_secs(15));
    assert!(status.success(), "gateway exit status {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn invocations(http: &Http, name: &str) -> u64 {
    let listed = http.send("GET", "/_local/functions", &[], "").await.json();
    listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["invocations"].as_u64())
        .unwrap()
}

async fn futures_join_all<F: std::future::Future<Output = Reply> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Reply> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("gateway did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
