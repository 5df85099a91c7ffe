//! A whole local stack per test: `mecplane-local` on free ports with its own moto, the real
//! function binaries and state machines, and the node simulator — plus the clients and helpers
//! the end-to-end tests use to drive it and to look at what it left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Where cargo put the binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug")
}

/// A running `mecplane-local` (the one way the tests start moto and the stack): it spawns its own
/// moto on a free port and writes `local.env` when ready. Stopped (SIGTERM, then waited for; moto
/// dies with it) when dropped.
pub struct Gateway {
    child: Child,
    /// Its state directory (local.env, logs), removed when it stops cleanly.
    pub state_dir: PathBuf,
    /// `local.env`, as written by the gateway.
    pub env: HashMap<String, String>,
}

impl Gateway {
    /// Starts `mecplane-local` on free ports with its own moto, `args` and `env` added to its own
    /// environment, and waits for its `local.env`.
    pub async fn launch_with(args: &[std::ffi::OsString], env: &[(&str, &str)]) -> Gateway {
        Self::launch_on(None, args, env).await
    }

    /// [`Gateway::launch_with`] on the moto at `moto` (another stack's) instead of its own.
    pub async fn launch_on(
        moto: Option<&str>,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
    ) -> Gateway {
        let root = repo_root();
        let state_dir = std::env::temp_dir().join(format!("mecplane-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let gateway = bin_dir().join("mecplane-local");
        assert!(
            gateway.exists(),
            "{} missing: run `cargo build --workspace --bins` first",
            gateway.display()
        );
        let log = std::fs::File::create(state_dir.join("gateway.log")).expect("log");
        let moto_args: Vec<std::ffi::OsString> = match moto {
            Some(endpoint) => vec!["--moto-endpoint".into(), endpoint.into()],
            None => vec![
                "--spawn-moto".into(),
                root.join("local/moto_catalogue.py").into(),
            ],
        };
        let mut child = Command::new(&gateway)
            .args(["--port", "0", "--moto-port", "0"])
            .args(moto_args)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--repo-root")
            .arg(&root)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start mecplane-local");
        let env_file = state_dir.join("local.env");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !env_file.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mecplane-local exited ({status}): {}",
                    std::fs::read_to_string(state_dir.join("gateway.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "local stack not ready after 90 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let env = dotenvy::from_path_iter(&env_file)
            .expect("local.env")
            .map(|entry| entry.expect("a KEY=VALUE line"))
            .collect();
        Gateway {
            child,
            state_dir,
            env,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.state_dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running local stack; stopped when dropped.
pub struct Stack {
    /// Kept for the stack's lifetime: dropping it stops the stack.
    _gateway: Gateway,
    /// Its deployment's id (the template's `NamePrefix`): the root of its parameters.
    pub deployment: String,
    pub state_dir: PathBuf,
    pub env: HashMap<String, String>,
    pub sdk: aws_config::SdkConfig,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

/// What an execution ended with.
#[derive(Debug, Clone)]
pub struct Ended {
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// The gateway environment that keeps the reconcile's triggers off.
pub const RECONCILE_OFF: [(&str, &str); 2] = [
    ("MECPLANE_RECONCILE_INTERVAL_SECONDS", "0"),
    ("MECPLANE_RECONCILE_EC2_EVENTS", "false"),
];

/// The regions the test stacks let clusters live in (the first is the control plane's own).
pub const CLUSTER_REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

impl Stack {
    /// Starts a stack whose SSM agents come online `agent_delay_ms` after launch. The reconcile's
    /// triggers (the schedule, EC2 state-change events) are off: a test that kills a node acts on
    /// it itself; `tests/reconcile.rs` turns them on.
    pub async fn start(agent_delay_ms: u64) -> Stack {
        Self::start_with(agent_delay_ms, &[], &RECONCILE_OFF).await
    }

    /// [`Stack::start`] with `function_env` added to every function's environment (after
    /// `local/functions.env`) and `gateway_env` to the gateway's (as
    /// `MECPLANE_RECONCILE_INTERVAL_SECONDS`).
    pub async fn start_with(
        agent_delay_ms: u64,
        function_env: &[(&str, &str)],
        gateway_env: &[(&str, &str)],
    ) -> Stack {
        Self::start_on(
            None,
            CLUSTER_REGIONS[0],
            agent_delay_ms,
            function_env,
            gateway_env,
        )
        .await
    }

    /// A second deployment in this stack's account: a stack on this one's moto, at home in
    /// `region` (clusters may still live in either [`CLUSTER_REGIONS`]), whose template's
    /// `NamePrefix` is `name_prefix`; this stack's gateway forwards its Lambda invocations there
    /// (moto's Step Functions calls Lambda on this gateway only).
    pub async fn start_beside(
        &self,
        name_prefix: &str,
        region: &str,
        function_env: &[(&str, &str)],
    ) -> Stack {
        let parameters = format!("NamePrefix={name_prefix}");
        let gateway_env = [
            RECONCILE_OFF[0],
            RECONCILE_OFF[1],
            ("MECPLANE_TEMPLATE_PARAMETERS", parameters.as_str()),
        ];
        let moto = self.env["MECPLANE_MOTO_ENDPOINT"].clone();
        let mut other = Self::start_on(Some(&moto), region, 300, function_env, &gateway_env).await;
        other.deployment = name_prefix.to_string();
        let (code, body) = self
            .request_bytes(
                "PUT",
                &format!("/_local/peers/{region}"),
                Some(other.endpoint().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(code, 204, "{body}");
        other
    }

    async fn start_on(
        moto: Option<&str>,
        home_region: &str,
        agent_delay_ms: u64,
        function_env: &[(&str, &str)],
        gateway_env: &[(&str, &str)],
    ) -> Stack {
        let root = repo_root();
        let mut env_file = root.join("local/functions.env");
        if !function_env.is_empty() {
            let mut text = std::fs::read_to_string(&env_file).expect("local/functions.env");
            for (k, v) in function_env {
                text.push_str(&format!("\n{k}={v}\n"));
            }
            env_file =
                std::env::temp_dir().join(format!("mecplane-e2e-{}.env", uuid::Uuid::new_v4()));
            std::fs::write(&env_file, text).expect("function env file");
        }
        let args: Vec<std::ffi::OsString> = vec![
            "--functions-dir".into(),
            bin_dir().into(),
            "--function-env-file".into(),
            env_file.into(),
            "--agent-delay-ms".into(),
            agent_delay_ms.to_string().into(),
            "--region".into(),
            home_region.into(),
            "--cluster-regions".into(),
            CLUSTER_REGIONS.join(",").into(),
        ];
        let gateway = Gateway::launch_on(moto, &args, gateway_env).await;
        let mut stack = Stack {
            deployment: "mecplane".into(),
            state_dir: gateway.state_dir.clone(),
            env: gateway.env.clone(),
            _gateway: gateway,
            sdk: aws_config::SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .build(),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        };
        stack.sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(stack.env["AWS_REGION"].clone()))
            .endpoint_url(stack.endpoint())
            .credentials_provider(Credentials::for_tests())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        stack
    }

    /// The gateway (every AWS API).
    pub fn endpoint(&self) -> String {
        self.env["AWS_ENDPOINT_URL"].clone()
    }

    pub fn create_machine(&self) -> String {
        self.env["MECPLANE_CREATE_STATE_MACHINE_ARN"].clone()
    }

    pub fn delete_machine(&self) -> String {
        self.env["MECPLANE_DELETE_STATE_MACHINE_ARN"].clone()
    }

    /// The update state machine: from `local.env`, or (a gateway that does not export it yet)
    /// the create machine's ARN with the update machine's name.
    pub fn update_machine(&self) -> String {
        self.env
            .get("MECPLANE_UPDATE_STATE_MACHINE_ARN")
            .cloned()
            .unwrap_or_else(|| {
                self.create_machine()
                    .replace("-create-cluster", "-update-cluster")
            })
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk)
    }

    /// The stack's SDK configuration for another region (clusters may live outside the control
    /// plane's).
    fn sdk_in(&self, region: &str) -> aws_config::SdkConfig {
        self.sdk
            .to_builder()
            .region(Region::new(region.to_string()))
            .build()
    }

    /// An EC2 client for another region.
    pub fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_in(region))
    }

    /// The id of the region's default VPC (the one the default subnets are in).
    pub async fn default_vpc(&self) -> String {
        let vpcs = self
            .ec2()
            .describe_vpcs()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("is-default")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeVpcs");
        vpcs.vpcs()[0].vpc_id().expect("vpc id").to_string()
    }

    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    /// The instance of every command invocation sent through this stack, in the order listed.
    pub async fn command_targets(&self) -> Vec<String> {
        let mut targets = Vec::new();
        let mut pages = self
            .ssm()
            .list_command_invocations()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("list command invocations");
            targets.extend(
                page.command_invocations()
                    .iter()
                    .filter_map(|i| i.instance_id().map(str::to_string)),
            );
        }
        targets
    }

    /// The standard output and error of every command invocation, as any reader allowed
    /// `ssm:ListCommandInvocations`/`GetCommandInvocation` sees them.
    pub async fn command_outputs(&self) -> Vec<String> {
        let ssm = self.ssm();
        let mut outputs = Vec::new();
        let mut pages = ssm
            .list_command_invocations()
            .details(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for inv in page
                .expect("list command invocations")
                .command_invocations()
            {
                let (command, instance) = (inv.command_id().unwrap(), inv.instance_id().unwrap());
                let full = ssm
                    .get_command_invocation()
                    .command_id(command)
                    .instance_id(instance)
                    .send()
                    .await
                    .expect("get command invocation");
                let plugins: Vec<_> = inv
                    .command_plugins()
                    .iter()
                    .filter_map(|p| p.output())
                    .collect();
                outputs.push(format!(
                    "{}\n{}\n{}",
                    full.standard_output_content().unwrap_or_default(),
                    full.standard_error_content().unwrap_or_default(),
                    plugins.join("\n")
                ));
            }
        }
        outputs
    }

    pub fn sfn(&self) -> aws_sdk_sfn::Client {
        aws_sdk_sfn::Client::new(&self.sdk)
    }

    /// A request to the gateway; `path` starts with `/`. Returns status and JSON (or a JSON string).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let payload = body.map(|b| serde_json::to_vec(b).expect("json"));
        self.request_bytes(method, path, payload, headers).await
    }

    /// A request with a raw body (sent as `application/json` when present), for bodies that are
    /// not JSON or are too large.
    pub async fn request_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let payload = body.map(Bytes::from).unwrap_or_default();
        let resp = self
            .http
            .request(req.body(Full::new(payload)).expect("request"))
            .await
            .expect("gateway answers");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// A request to the HTTP API with a SigV4-shaped Authorization header (the local API
    /// Gateway checks its presence, as AWS_IAM auth requires one).
    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.api_with(method, path, body, &[]).await
    }

    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let payload = body.map(|b| serde_json::to_vec(b).expect("json"));
        self.api_bytes(method, path, payload, extra).await
    }

    /// [`Stack::api_with`] with a raw body.
    pub async fn api_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        // An `authorization` in `extra` signs as another caller.
        let mut headers = vec![("x-amz-date", "20260101T000000Z")];
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            headers.push(("authorization", API_AUTH));
        }
        headers.extend_from_slice(extra);
        self.request_bytes(method, &format!("/api{path}"), body, &headers)
            .await
    }

    /// Adds a node simulator fault rule (docs/architecture.md).
    pub async fn fault(&self, rule: Value) {
        let (status, body) = self.request("POST", "/_sim/faults", Some(&rule), &[]).await;
        assert!(status < 300, "fault rule refused: {status} {body}");
    }

    /// Every simulated instance with its stand-in state.
    pub async fn sim_instances(&self) -> Vec<Value> {
        let (status, body) = self.request("GET", "/_sim/instances", None, &[]).await;
        assert_eq!(status, 200, "{body}");
        match body {
            Value::Array(items) => items,
            Value::Object(mut m) => m
                .remove("instances")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default(),
            other => panic!("unexpected /_sim/instances answer {other}"),
        }
    }

    /// The simulator's join log, oldest first: every join attempt (role, hostname, flags, result),
    /// kept on the first control plane of each cluster, which holds the datastore.
    pub async fn joins_log(&self) -> Vec<Value> {
        let mut log: Vec<Value> = self
            .sim_instances()
            .await
            .iter()
            .flat_map(|i| {
                i["state"]["joins_log"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        log.sort_by_key(|e| e["time"].as_i64());
        log
    }

    /// Starts a create execution the way a person does from the console: just the spec.
    pub async fn start_create(&self, name: &str, input: Value) -> String {
        self.sfn()
            .start_execution()
            .state_machine_arn(self.create_machine())
            .name(name)
            .input(input.to_string())
            .send()
            .await
            .expect("start create")
            .execution_arn
    }

    pub async fn start_delete(&self, name: &str, input: Value) -> String {
        self.sfn()
            .start_execution()
            .state_machine_arn(self.delete_machine())
            .name(name)
            .input(input.to_string())
            .send()
            .await
            .expect("start delete")
            .execution_arn
    }

    /// Waits for an execution to end.
    pub async fn wait_execution(&self, arn: &str, timeout: Duration) -> Ended {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self
                .sfn()
                .describe_execution()
                .execution_arn(arn)
                .send()
                .await
                .expect("describe execution");
            let status = d.status().as_str().to_string();
            if status != "RUNNING" {
                return Ended {
                    status,
                    output: d.output().and_then(|o| serde_json::from_str(o).ok()),
                    error: d.error().map(str::to_string),
                    cause: d.cause().map(str::to_string),
                };
            }
            assert!(
                Instant::now() < deadline,
                "execution {arn} still running after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The cluster's record as the API shows it.
    pub async fn record(&self, id_or_name: &str) -> Value {
        let (status, body) = self
            .api("GET", &format!("/clusters/{id_or_name}"), None)
            .await;
        assert_eq!(status, 200, "GET /clusters/{id_or_name}: {body}");
        body
    }

    /// The cluster's events through the API, oldest first.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .api("GET", &format!("/clusters/{id}/events"), None)
            .await;
        assert_eq!(status, 200, "GET /clusters/{id}/events: {body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// The cluster's events as one JSON text (for `contains` checks and failure messages).
    pub async fn events_text(&self, id: &str) -> String {
        Value::from(self.events(id).await).to_string()
    }

    /// Whether the cluster has an event of `stage` whose detail contains `text`.
    pub async fn has_event(&self, id: &str, stage: &str, text: &str) -> bool {
        self.events(id)
            .await
            .iter()
            .any(|e| e["stage"] == stage && e["detail"].as_str().unwrap_or_default().contains(text))
    }

    /// Creates `name` on a stack whose agents are slow to come online, waits until the create
    /// waits for its control plane (an instance and a group made), then stops the create
    /// execution as a console user would and waits until it is `ABORTED`. Answers the cluster
    /// id and the execution ARN.
    pub async fn create_stopped_while_awaiting_nodes(&self, name: &str) -> (String, String) {
        let timeout = Duration::from_secs(240);
        let (status, created) = self
            .api("POST", "/clusters", Some(&json!({"name": name})))
            .await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let arn = created["execution_arn"].as_str().unwrap().to_string();
        let deadline = Instant::now() + timeout;
        while self.record(&id).await["stage"] != "await-control-planes" {
            assert!(Instant::now() < deadline, "{}", self.logs());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.sfn()
            .stop_execution()
            .execution_arn(&arn)
            .send()
            .await
            .expect("StopExecution");
        assert_eq!(self.wait_execution(&arn, timeout).await.status, "ABORTED");
        (id, arn)
    }

    /// Polls the cluster's record through the API until `done` accepts it; fails on `FAILED` (or
    /// after `timeout`), saying what it waited for.
    pub async fn wait_record(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let record = self.record(id).await;
            if done(&record) {
                return record;
            }
            assert!(
                record["status"] != "FAILED" && Instant::now() < deadline,
                "waiting for {what}: {record}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A [`spec`] over `zones` subnets in as many standard zones
    /// ([`Stack::subnets_in_distinct_zones`]): the spec and those (subnet id, zone).
    pub async fn spec_across_zones(
        &self,
        name: &str,
        control_planes: u32,
        workers: u32,
        zones: usize,
    ) -> (Value, Vec<(String, String)>) {
        let subnets = self.subnets_in_distinct_zones(zones).await;
        let mut spec = spec(name, control_planes, workers);
        spec["subnet_ids"] = json!(subnets.iter().map(|(s, _)| s).collect::<Vec<_>>());
        (spec, subnets)
    }

    /// `n` subnets of the default VPC, each in another standard availability zone (not one of the
    /// local stack's Local or Wavelength zones): (subnet id, zone), sorted by zone.
    pub async fn subnets_in_distinct_zones(&self, n: usize) -> Vec<(String, String)> {
        let out = self
            .ec2()
            .describe_subnets()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .expect("describe subnets");
        let mut by_zone: Vec<(String, String)> = out
            .subnets()
            .iter()
            .filter_map(|s| {
                Some((
                    s.availability_zone()?.to_string(),
                    s.subnet_id()?.to_string(),
                ))
            })
            // A standard zone is the region and one letter (us-east-1a; not us-east-1-bos-1a).
            .filter(|(zone, _)| {
                zone.strip_prefix(CLUSTER_REGIONS[0])
                    .is_some_and(|letter| letter.len() == 1)
            })
            .collect();
        by_zone.sort();
        by_zone.dedup_by(|a, b| a.0 == b.0);
        assert!(by_zone.len() >= n, "{n} zones wanted: {by_zone:?}");
        by_zone
            .into_iter()
            .take(n)
            .map(|(zone, subnet)| (subnet, zone))
            .collect()
    }

    /// Terminates an instance behind the control plane's back (a node lost).
    pub async fn kill(&self, instance_id: &str) {
        self.ec2()
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .expect("terminate");
    }

    /// The simulator's view of the cluster named `name`, from the live node holding its
    /// datastore (members, add-ons, joins and removals logs, cordoned nodes).
    pub async fn sim_datastore(&self, name: &str) -> Value {
        self.sim_instances()
            .await
            .into_iter()
            .filter(|i| i["cluster_name"] == name && i["state"]["instance_state"] != "terminated")
            .find(|i| {
                i["state"]["members"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
            })
            .map(|i| i["state"].clone())
            .expect("a node holding the cluster's datastore")
    }

    /// What is left of a cluster in the cloud, in every cluster region: live instances, security
    /// groups, parameters.
    pub async fn leftovers(&self, cluster_id: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name("tag:mecplane:cluster")
            .values(cluster_id)
            .build();
        let (mut live, mut groups) = (Vec::new(), Vec::new());
        for region in CLUSTER_REGIONS {
            let ec2 = self.ec2_in(region);
            let reservations = ec2
                .describe_instances()
                .filters(filter.clone())
                .max_results(1000)
                .send()
                .await
                .expect("describe instances");
            live.extend(
                reservations
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter(|i| {
                        i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated")
                    })
                    .filter_map(|i| i.instance_id().map(str::to_string)),
            );
            let found = ec2
                .describe_security_groups()
                .filters(filter.clone())
                .send()
                .await
                .expect("describe groups");
            groups.extend(
                found
                    .security_groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string)),
            );
        }
        let params = self
            .ssm()
            .get_parameters_by_path()
            .path(format!("/{}/clusters/{cluster_id}", self.deployment))
            .recursive(true)
            .send()
            .await
            .expect("parameters");
        let params = params
            .parameters()
            .iter()
            .filter_map(|p| p.name().map(str::to_string))
            .collect();
        (live, groups, params)
    }

    /// What is left of a cluster's API load balancer (`api_endpoint: "nlb"`) in every cluster
    /// region: its load balancer, their listeners and its target group, named.
    pub async fn balancers_left(&self, cluster_id: &str) -> Vec<String> {
        let name = mecplane::resources::Deployment::new(&self.deployment, "unused")
            .expect("a deployment id")
            .balancer_name(cluster_id);
        let mut left = Vec::new();
        for region in CLUSTER_REGIONS {
            let elb = aws_sdk_elasticloadbalancingv2::Client::new(&self.sdk_in(region));
            let balancers = elb
                .describe_load_balancers()
                .send()
                .await
                .expect("describe load balancers");
            for lb in balancers.load_balancers() {
                if lb.load_balancer_name() != Some(name.as_str()) {
                    continue;
                }
                left.push(format!("load balancer {name} in {region}"));
                let arn = lb.load_balancer_arn().unwrap_or_default();
                let listeners = elb
                    .describe_listeners()
                    .load_balancer_arn(arn)
                    .send()
                    .await
                    .expect("describe listeners");
                for listener in listeners.listeners() {
                    left.push(format!(
                        "listener {:?} in {region}",
                        listener.listener_arn()
                    ));
                }
            }
            let groups = elb
                .describe_target_groups()
                .send()
                .await
                .expect("describe target groups");
            for group in groups.target_groups() {
                if group.target_group_name() == Some(name.as_str()) {
                    left.push(format!("target group {name} in {region}"));
                }
            }
        }
        left
    }

    /// Panics naming every AWS call a function made that its role in `infra/template.yaml` does
    /// not allow (what would fail with AccessDenied on AWS).
    pub async fn assert_calls_allowed_by_template(&self) {
        let (status, body) = self.request("GET", "/_local/calls", None, &[]).await;
        assert_eq!(status, 200, "GET /_local/calls: {body}");
        let calls = &body["calls"];
        assert!(
            calls.as_object().is_some_and(|c| !c.is_empty()),
            "the gateway saw no calls from any function: {calls}"
        );
        let template = std::fs::read_to_string(repo_root().join("infra/template.yaml"))
            .expect("infra/template.yaml");
        let missing = super::iam::missing_permissions(&template, calls);
        assert!(
            missing.is_empty(),
            "calls the functions' roles do not allow:\n{}",
            missing.join("\n")
        );
    }

    /// Every line every function logged (what CloudWatch Logs would hold), for secret checks.
    pub fn function_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.state_dir.join("logs")) {
            for entry in dir.flatten() {
                if entry.file_name() != "gateway.log" {
                    out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// The gateway's log and every function's, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out =
            std::fs::read_to_string(self.state_dir.join("gateway.log")).unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(self.state_dir.join("logs")) {
            for entry in dir.flatten() {
                out.push_str(&format!("\n== {}\n", entry.path().display()));
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
        out
    }
}

/// A SigV4-shaped `Authorization` header: the local API Gateway checks its shape, as AWS_IAM
/// auth requires one (the signature itself is not verified locally).
pub const API_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000";

/// The instance id and private IP of the record's node with `role` and `index`.
/// Runs one instance made outside the control plane (a moto image), with `tags` and, when
/// named, an instance profile; answers its id.
pub async fn run_instance(
    ec2: &aws_sdk_ec2::Client,
    tags: &[(&str, &str)],
    profile: Option<&str>,
) -> String {
    let tags: Vec<aws_sdk_ec2::types::Tag> = tags
        .iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build())
        .collect();
    ec2.run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .set_iam_instance_profile(profile.map(|p| {
            aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                .name(p)
                .build()
        }))
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .expect("run an instance")
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

/// The name of the instance profile `instance_id` runs with (a node's: the deployment's node
/// profile).
pub async fn profile_of(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> String {
    let out = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("describe the instance");
    let arn = out.reservations()[0].instances()[0]
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .expect("an instance profile")
        .to_string();
    arn.rsplit('/').next().unwrap().to_string()
}

pub fn node_of(record: &Value, role: &str, index: u64) -> (String, String) {
    let n = record["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["role"] == role && n["index"] == index)
        .unwrap_or_else(|| panic!("no {role} {index}: {record}"));
    (
        n["instance_id"].as_str().unwrap_or_default().to_string(),
        n["private_ip"].as_str().unwrap_or_default().to_string(),
    )
}

/// A cluster spec for tests, fast timings included.
pub fn spec(name: &str, control_planes: u32, workers: u32) -> Value {
    json!({"name": name, "control_planes": control_planes, "workers": workers, "api_allowed_cidrs": ["203.0.113.0/24"]})
}

/// Execution input timing for the local stack: poll every second, short deadlines.
pub fn fast_timing() -> Value {
    json!({"poll_seconds": 1, "nodes_timeout_seconds": 20, "command_timeout_seconds": 60, "ready_timeout_seconds": 30, "token_ttl_seconds": 600, "terminate_timeout_seconds": 30})
}
