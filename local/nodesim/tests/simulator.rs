//! End-to-end tests of the node simulator: moto from the project's venv, instances launched with
//! aws-sdk-ec2, and the simulator driven through a small axum server with the real aws-sdk-ssm client.

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use aws_sdk_ssm::error::ProvideErrorMetadata;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use mecplane_nodesim::{SimConfig, Simulator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT_DELAY: Duration = Duration::from_secs(2);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh RSA public key (base64 DER), as the store-kubeconfig stage passes one.
fn transport_public_key() -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null | openssl pkey -pubout -outform DER | base64 -w0")
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn script(name: &str, env: &[(&str, &str)]) -> String {
    let body =
        std::fs::read_to_string(repo_root().join(format!("mecplane/scripts/{name}.sh"))).unwrap();
    let mut text: String = env
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    text.push_str(&body);
    text
}

struct Moto(Child);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_moto() -> (Moto, String) {
    let port = free_port();
    // The local stack's moto: the pinned one started through its zone-catalogue launcher.
    let child = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("local/moto_catalogue.py"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the venv's python (make setup-python)");
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (moto, endpoint)
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_in(endpoint, "us-east-1").await
}

async fn sdk_config_in(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

struct Stack {
    _moto: Moto,
    _work: TempDir,
    sim: Arc<Simulator>,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    gateway: String,
    /// EC2 client pointed at the test gateway (for the RunInstances fault).
    ec2_via_gateway: aws_sdk_ec2::Client,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn gateway(
    axum::extract::State(sim): axum::extract::State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if Simulator::handles_ssm_target(target) {
        // The region of `Credential=<key>/<date>/<region>/ssm/aws4_request`.
        let region = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(2));
        return sim.handle_ssm(target, region, body).await;
    }
    if let Some(resp) = sim.ec2_fault(&body).await {
        return resp;
    }
    (
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "not routed in the test gateway",
    )
        .into_response()
}

async fn stack() -> Stack {
    let (moto, endpoint) = start_moto().await;
    let work = TempDir(std::env::temp_dir().join(format!(
        "mecplane-nodesim-test-{}",
        uuid::Uuid::new_v4().simple()
    )));
    let sim = Simulator::new(SimConfig {
        work_dir: work.0.clone(),
        moto_endpoint: endpoint.clone(),
        region: "us-east-1".into(),
        regions: vec!["eu-west-1".into()],
        agent_delay: AGENT_DELAY,
        stand_ins_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stand-ins"),
    })
    .await
    .expect("simulator");
    let app = axum::Router::new()
        .route("/", axum::routing::post(gateway))
        .with_state(sim.clone())
        .merge(sim.clone().control_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gw = format!("http://{addr}");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(&endpoint).await);
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(&gw).await);
    let ec2_via_gateway = aws_sdk_ec2::Client::new(&sdk_config(&gw).await);
    Stack {
        _moto: moto,
        _work: work,
        sim,
        ec2,
        ssm,
        gateway: gw,
        ec2_via_gateway,
    }
}

fn tag_spec(cluster: &str, role: &str, index: u32) -> TagSpecification {
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let short = if role == "worker" { "worker" } else { "cp" };
    TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(tag("mecplane:cluster", "c-0123456789abcdef"))
        .tags(tag("mecplane:cluster-name", cluster))
        .tags(tag("mecplane:role", role))
        .tags(tag("mecplane:index", &index.to_string()))
        .tags(tag("Name", &format!("{cluster}-{short}-{index}")))
        .build()
}

impl Stack {
    async fn launch(&self, cluster: &str, role: &str, index: u32) -> (String, String) {
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T4gSmall)
            .min_count(1)
            .max_count(1)
            .tag_specifications(tag_spec(cluster, role, index))
            .send()
            .await
            .expect("RunInstances in moto");
        let i = &out.instances()[0];
        (
            i.instance_id().unwrap().to_string(),
            i.private_ip_address().unwrap().to_string(),
        )
    }

    async fn send(
        &self,
        instance: &str,
        text: &str,
        exec_timeout: u32,
    ) -> Result<
        String,
        aws_sdk_ssm::error::SdkError<aws_sdk_ssm::operation::send_command::SendCommandError>,
    > {
        self.send_with(instance, text, exec_timeout, None).await
    }

    async fn send_with(
        &self,
        instance: &str,
        text: &str,
        exec_timeout: u32,
        timeout_seconds: Option<i32>,
    ) -> Result<
        String,
        aws_sdk_ssm::error::SdkError<aws_sdk_ssm::operation::send_command::SendCommandError>,
    > {
        let out = self
            .ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(instance)
            .parameters("commands", vec![text.to_string()])
            .parameters("executionTimeout", vec![exec_timeout.to_string()])
            .set_timeout_seconds(timeout_seconds)
            .send()
            .await?;
        let cmd = out.command().unwrap();
        assert_eq!(cmd.status().map(|s| s.as_str()), Some("Pending"));
        Ok(cmd.command_id().unwrap().to_string())
    }

    async fn wait(
        &self,
        command_id: &str,
        instance: &str,
        limit: Duration,
    ) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
        let deadline = Instant::now() + limit;
        loop {
            let out = self
                .ssm
                .get_command_invocation()
                .command_id(command_id)
                .instance_id(instance)
                .send()
                .await
                .expect("GetCommandInvocation");
            let status = out.status().unwrap().as_str().to_string();
            if !matches!(status.as_str(), "Pending" | "InProgress" | "Delayed") {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "command {command_id} still {status}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn run(
        &self,
        instance: &str,
        text: &str,
    ) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
        let id = self.send(instance, text, 120).await.expect("SendCommand");
        self.wait(&id, instance, Duration::from_secs(120)).await
    }

    async fn wait_online(&self, instance: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .ssm
                .describe_instance_information()
                .filters(
                    aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
                        .key("InstanceIds")
                        .values(instance)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .expect("DescribeInstanceInformation");
            if out
                .instance_information_list()
                .iter()
                .any(|i| i.ping_status().map(|p| p.as_str()) == Some("Online"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent of {instance} never online"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn instances(&self) -> serde_json::Value {
        let body = reqwest_get(&format!("{}/_sim/instances", self.gateway)).await;
        serde_json::from_str(&body).unwrap()
    }

    async fn add_fault(&self, rule: serde_json::Value) {
        let url = format!("{}/_sim/faults", self.gateway);
        let resp = http(&url, "POST", Some(rule.to_string())).await;
        assert!(resp.contains("\"id\""), "{resp}");
    }
}

/// A minimal HTTP/1.1 client over a TcpStream (keeps dev-dependencies small).
async fn http(url: &str, method: &str, body: Option<String>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

async fn reqwest_get(url: &str) -> String {
    http(url, "GET", None).await
}

fn stdout(
    out: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput,
) -> String {
    format!(
        "{}\n--stderr--\n{}",
        out.standard_output_content().unwrap_or(""),
        out.standard_error_content().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_end_to_end_on_simulated_instances() {
    let s = stack().await;
    let (cp, cp_ip) = s.launch("demo", "control-plane", 0).await;
    let (worker, worker_ip) = s.launch("demo", "worker", 0).await;
    let (late, _) = s.launch("demo", "worker", 1).await;

    // Before the agent is online, SendCommand answers InvalidInstanceId as SSM does.
    let err = s.send(&cp, "echo hi", 10).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceId"), "{err:?}");
    let err = s
        .send("i-doesnotexist0000", "echo hi", 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceId"));
    s.wait_online(&cp).await;
    s.wait_online(&worker).await;
    // An instance exists for SSM only in its own region: signed for eu-west-1, the us-east-1
    // instance is unknown, however long its agent has been online.
    let elsewhere = aws_sdk_ssm::Client::new(&sdk_config_in(&s.gateway, "eu-west-1").await);
    let err = elsewhere
        .send_command()
        .instance_ids(&cp)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec!["echo hi".to_string()])
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("InvalidInstanceId"),
        "{err:?}"
    );
    let info = elsewhere
        .describe_instance_information()
        .send()
        .await
        .expect("DescribeInstanceInformation");
    assert!(info.instance_information_list().is_empty(), "{info:?}");

    let boot_env = [
        ("MK8S_CHANNEL", "1.32/stable"),
        ("MK8S_ADDONS", "dns"),
        ("EXTRA_SANS", cp_ip.as_str()),
        ("WAIT_TIMEOUT", "30"),
    ];
    for _ in 0..2 {
        let out = s.run(&cp, &script("bootstrap", &boot_env)).await;
        assert_eq!(
            out.status().unwrap().as_str(),
            "Success",
            "{}",
            stdout(&out)
        );
        assert_eq!(out.response_code(), 0);
        assert!(stdout(&out).contains("MECPLANE_RESULT bootstrap=ok channel=1.32/stable"));
    }
    // A join: the worker makes its one-time key, the control plane a single-use token sealed to
    // it, the worker opens it and joins.
    let out = s.run(&worker, &script("join-key", &[])).await;
    let text = stdout(&out);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("MECPLANE_RESULT join-key=ready public-key="))
        .unwrap_or_else(|| panic!("no public key: {text}"))
        .to_string();
    let out = s
        .run(&cp, &script("issue-token", &[("JOIN_KEY", &key)]))
        .await;
    let text = stdout(&out);
    assert_eq!(out.status().unwrap().as_str(), "Success", "{text}");
    assert!(text.contains("MECPLANE_RESULT token=sealed"), "{text}");
    let sealed = text
        .lines()
        .find(|l| l.starts_with("MECPLANE_SEALED v1 "))
        .unwrap()
        .to_string();

    let join_addr = format!("{cp_ip}:25000");
    let join_env = |sealed: &str| {
        vec![
            ("MK8S_CHANNEL", "1.32/stable".to_string()),
            ("JOIN_ADDRESS", join_addr.clone()),
            ("SEALED_TOKEN", sealed.to_string()),
            ("NODE_ROLE", "worker".to_string()),
            ("WAIT_TIMEOUT", "30".to_string()),
        ]
    };
    let render = |v: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
        script("join", &pairs)
    };
    // A token sealed to another key: Failed, the worker cannot open it.
    let foreign = {
        let out = s
            .run(
                &cp,
                &script("issue-token", &[("JOIN_KEY", &transport_public_key())]),
            )
            .await;
        stdout(&out)
            .lines()
            .find(|l| l.starts_with("MECPLANE_SEALED v1 "))
            .unwrap()
            .to_string()
    };
    let out = s.run(&worker, &render(join_env(&foreign))).await;
    assert_eq!(out.status().unwrap().as_str(), "Failed");
    assert_ne!(out.response_code(), 0);
    assert!(
        stdout(&out).contains("not sealed to this node's join key"),
        "{}",
        stdout(&out)
    );
    // That attempt used the worker's key up: a new one, a new token, then the join.
    let out = s.run(&worker, &script("join-key", &[])).await;
    let key = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("MECPLANE_RESULT join-key=ready public-key="))
        .unwrap()
        .to_string();
    let out = s
        .run(&cp, &script("issue-token", &[("JOIN_KEY", &key)]))
        .await;
    let sealed_again = stdout(&out)
        .lines()
        .find(|l| l.starts_with("MECPLANE_SEALED v1 "))
        .unwrap()
        .to_string();
    assert_ne!(sealed, sealed_again);
    let out = s.run(&worker, &render(join_env(&sealed_again))).await;
    assert_eq!(
        out.status().unwrap().as_str(),
        "Success",
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("MECPLANE_RESULT join=joined"));
    let out = s.run(&worker, &render(join_env(&sealed_again))).await;
    assert_eq!(
        out.status().unwrap().as_str(),
        "Success",
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("MECPLANE_RESULT join=already-member"));

    // Tokens presented directly to microk8s join: a wrong one and an expired one are refused.
    s.wait_online(&late).await;
    let install = "snap install microk8s --classic --channel=1.32/stable >/dev/null";
    let out = s
        .run(
            &late,
            &format!(
                "{install} && microk8s join {join_addr}/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz --worker"
            ),
        )
        .await;
    assert_eq!(out.status().unwrap().as_str(), "Failed");
    assert!(stdout(&out).contains("Invalid token"), "{}", stdout(&out));
    const SHORT: &str = "shortlivedtoken00000000000000000";
    let out = s
        .run(
            &cp,
            &format!("microk8s add-node --token {SHORT} --token-ttl 1 --format json >/dev/null"),
        )
        .await;
    assert_eq!(
        out.status().unwrap().as_str(),
        "Success",
        "{}",
        stdout(&out)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = s
        .run(
            &late,
            &format!("microk8s join {join_addr}/{SHORT} --worker"),
        )
        .await;
    assert_eq!(out.status().unwrap().as_str(), "Failed", "{}", stdout(&out));
    assert!(stdout(&out).contains("Invalid token"));

    // ListCommands shows every command with its parameters (the whole script, environment
    // included), newest first, as SSM keeps them for 30 days.
    let listed = s.ssm.list_commands().send().await.unwrap();
    let commands = listed.commands();
    assert!(commands.len() >= 8, "{listed:?}");
    let text_of = |c: &aws_sdk_ssm::types::Command| {
        c.parameters()
            .and_then(|p| p.get("commands"))
            .map(|v| v.join("\n"))
            .unwrap_or_default()
    };
    assert!(text_of(&commands[0]).contains(SHORT), "newest first");
    assert!(commands
        .iter()
        .any(|c| text_of(c).contains(&format!("export SEALED_TOKEN='{sealed_again}'"))));
    let one = s
        .ssm
        .list_commands()
        .command_id(commands[1].command_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(one.commands().len(), 1);
    let on_cp = s.ssm.list_commands().instance_id(&cp).send().await.unwrap();
    assert!(on_cp
        .commands()
        .iter()
        .all(|c| c.instance_ids().iter().any(|i| i == &cp)));

    let out = s
        .run(&cp, &script("verify", &[("EXPECTED_NODES", "2")]))
        .await;
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "NODE ip-{} Ready {worker_ip} worker",
            worker_ip.replace('.', "-")
        )),
        "{text}"
    );
    assert!(text.contains("MECPLANE_RESULT nodes=2 ready=2"), "{text}");
    // Each NODE line ends with the Ready condition's lastTransitionTime (the reconcile's sampled
    // node check measures its grace from it): here, when the node joined.
    for line in text.lines().filter(|l| l.starts_with("NODE ")) {
        let since = line.split_whitespace().nth(5).unwrap_or_default();
        assert!(
            since.len() == 20 && since.ends_with('Z') && since.as_bytes()[10] == b'T',
            "{line}"
        );
    }
    // The kubeconfig leaves the node sealed to the stage's one-time key, never in clear.
    let key = transport_public_key();
    let out = s
        .run(&cp, &script("kubeconfig", &[("TRANSPORT_KEY", &key)]))
        .await;
    let text = stdout(&out);
    assert!(text.contains("MECPLANE_SEALED v1 "), "{text}");
    assert!(
        !text.contains("server: https://") && !text.contains(&cp_ip),
        "{text}"
    );

    // The joins log on the control plane: one successful join, rejected attempts recorded.
    let inst = s.instances().await;
    let cp_state = inst["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == cp.as_str())
        .unwrap()["state"]
        .clone();
    let joins = cp_state["joins_log"].as_array().unwrap();
    assert_eq!(
        joins.iter().filter(|j| j["result"] == "joined").count(),
        1,
        "{cp_state}"
    );
    assert!(joins.iter().any(|j| j["reason"] == "invalid-token"));
    assert!(joins.iter().any(|j| j["reason"] == "expired-token"));
    assert_eq!(cp_state["installed_channel"], "1.32/stable");
    assert_eq!(cp_state["held"], true);

    // ListCommandInvocations with details carries the plugin output.
    let list = s
        .ssm
        .list_command_invocations()
        .instance_id(&cp)
        .details(true)
        .send()
        .await
        .unwrap();
    assert!(list.command_invocations().len() >= 4);
    // Newest first: the sealed kubeconfig, whose plugin Output SSM cuts at 2,500 characters.
    let output = list.command_invocations()[0].command_plugins()[0]
        .output()
        .unwrap_or("");
    assert!(output.starts_with("MECPLANE_SEALED v1 "), "{output}");
    assert_eq!(output.chars().count(), 2_500);
    s.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_reported_as_ssm_reports_them() {
    let s = stack().await;
    let (cp, _) = s.launch("faulty", "control-plane", 0).await;
    let (w0, _) = s.launch("faulty", "worker", 0).await;
    let (w1, _) = s.launch("faulty", "worker", 1).await;
    s.add_fault(serde_json::json!({"cluster_name": "faulty", "role": "worker", "index": 1, "fault": "agent_offline"})).await;
    s.add_fault(serde_json::json!({"cluster_name": "faulty", "role": "control-plane", "fault": "command_fails", "script": "bootstrap"})).await;
    s.add_fault(serde_json::json!({"cluster_name": "faulty", "role": "control-plane", "fault": "command_hangs", "script": "verify"})).await;
    s.add_fault(serde_json::json!({"cluster_name": "faulty", "role": "worker", "index": 0, "fault": "terminate_during_command"})).await;
    s.add_fault(serde_json::json!({"cluster_name": "faulty", "fault": "insufficient_capacity"}))
        .await;
    s.wait_online(&cp).await;
    s.wait_online(&w0).await;

    // agent_offline: never a managed node.
    let err = s.send(&w1, "echo hi", 10).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceId"));
    let info = s.ssm.describe_instance_information().send().await.unwrap();
    assert!(!info
        .instance_information_list()
        .iter()
        .any(|i| i.instance_id() == Some(w1.as_str())));

    // command_fails narrowed to bootstrap: Failed with exit 1; other commands still succeed.
    let out = s
        .run(
            &cp,
            &script(
                "bootstrap",
                &[("MK8S_CHANNEL", "1.32/stable"), ("WAIT_TIMEOUT", "30")],
            ),
        )
        .await;
    assert_eq!(out.status().unwrap().as_str(), "Failed");
    assert_eq!(out.status_details(), Some("Failed"));
    assert_eq!(out.response_code(), 1);
    assert!(out
        .standard_error_content()
        .unwrap()
        .contains("command_fails"));
    let out = s.run(&cp, "echo hello").await;
    assert_eq!(out.status().unwrap().as_str(), "Success");
    assert_eq!(out.standard_output_content(), Some("hello\n"));

    // command_hangs: runs until executionTimeout, then TimedOut / ExecutionTimedOut, exit 137.
    let id = s
        .send(&cp, &script("verify", &[("EXPECTED_NODES", "1")]), 2)
        .await
        .unwrap();
    let out = s.wait(&id, &cp, Duration::from_secs(30)).await;
    assert_eq!(out.status().unwrap().as_str(), "TimedOut");
    assert_eq!(out.status_details(), Some("ExecutionTimedOut"));
    assert_eq!(out.response_code(), 137);

    // A plain failing command: Failed with its exit code and the agent's line on stderr.
    let out = s.run(&cp, "echo oops >&2; exit 3").await;
    assert_eq!(out.status().unwrap().as_str(), "Failed");
    assert_eq!(out.response_code(), 3);
    assert!(out
        .standard_error_content()
        .unwrap()
        .contains("oops\nfailed to run commands: exit status 3"));

    // Cancel.
    let id = s.send(&cp, "sleep 60", 120).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.ssm.cancel_command().command_id(&id).send().await.unwrap();
    let out = s.wait(&id, &cp, Duration::from_secs(10)).await;
    assert_eq!(out.status().unwrap().as_str(), "Cancelled");

    // Output is cut at 24,000 characters.
    let out = s.run(&cp, "head -c 30000 /dev/zero | tr '\\0' x").await;
    assert_eq!(out.standard_output_content().unwrap().len(), 24_000);

    // insufficient_capacity: RunInstances through the gateway fails as EC2 answers it.
    let err = s
        .ec2_via_gateway
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .tag_specifications(tag_spec("faulty", "worker", 2))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&err),
        Some("InsufficientInstanceCapacity"),
        "{err:?}"
    );

    // terminate_during_command: the instance is terminated in moto; without an answer from its
    // agent the invocation stays InProgress until TimeoutSeconds + executionTimeout, then
    // TimedOut / DeliveryTimedOut.
    let id = s.send_with(&w0, "sleep 30", 1, Some(30)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mid = s
        .ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&w0)
        .send()
        .await
        .unwrap();
    assert_eq!(mid.status().unwrap().as_str(), "InProgress");
    let d = s
        .ec2
        .describe_instances()
        .instance_ids(&w0)
        .send()
        .await
        .unwrap();
    let state = d.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(state, "terminated");
    let err = s.send(&w0, "echo hi", 10).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceId"));
    let out = s.wait(&id, &w0, Duration::from_secs(45)).await;
    assert_eq!(out.status().unwrap().as_str(), "TimedOut");
    assert_eq!(out.status_details(), Some("DeliveryTimedOut"));
    s.sim.shutdown().await;
}

#[test]
fn node_scripts_converge_when_run_twice() {
    let status = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts_twice.sh"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// The stand-in state of one instance, from `/_sim/instances`.
async fn sim_state(s: &Stack, instance: &str) -> serde_json::Value {
    s.instances().await["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == instance)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day2_operations_and_faults_through_ssm() {
    let s = stack().await;
    let (cp, cp_ip) = s.launch("daytwo", "control-plane", 0).await;
    let (w0, w0_ip) = s.launch("daytwo", "worker", 0).await;
    let (w1, w1_ip) = s.launch("daytwo", "worker", 1).await;
    let host = |ip: &str| format!("ip-{}", ip.replace('.', "-"));
    s.add_fault(serde_json::json!({"cluster_name": "daytwo", "role": "worker", "index": 0, "fault": "drain_times_out"})).await;
    s.add_fault(serde_json::json!({"cluster_name": "daytwo", "role": "worker", "index": 0, "fault": "refresh_fails"})).await;
    s.add_fault(serde_json::json!({"cluster_name": "daytwo", "role": "worker", "index": 1, "fault": "node_dies"})).await;
    for i in [&cp, &w0, &w1] {
        s.wait_online(i).await;
    }
    let ok = |out: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput| {
        assert_eq!(out.status().unwrap().as_str(), "Success", "{}", stdout(out));
        stdout(out)
    };
    let failed =
        |out: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput| {
            assert_eq!(out.status().unwrap().as_str(), "Failed", "{}", stdout(out));
            assert_ne!(out.response_code(), 0);
            stdout(out)
        };
    let boot = [("MK8S_CHANNEL", "1.32/stable"), ("WAIT_TIMEOUT", "30")];
    ok(&s.run(&cp, &script("bootstrap", &boot)).await);
    let join_addr = format!("{cp_ip}:25000");
    for w in [&w0, &w1] {
        let key = ok(&s.run(w, &script("join-key", &[])).await)
            .lines()
            .find_map(|l| l.strip_prefix("MECPLANE_RESULT join-key=ready public-key="))
            .unwrap()
            .to_string();
        let sealed = ok(&s
            .run(&cp, &script("issue-token", &[("JOIN_KEY", &key)]))
            .await)
        .lines()
        .find(|l| l.starts_with("MECPLANE_SEALED v1 "))
        .unwrap()
        .to_string();
        let join = [
            ("MK8S_CHANNEL", "1.32/stable"),
            ("JOIN_ADDRESS", join_addr.as_str()),
            ("SEALED_TOKEN", sealed.as_str()),
            ("NODE_ROLE", "worker"),
            ("WAIT_TIMEOUT", "30"),
        ];
        ok(&s.run(w, &script("join", &join)).await);
    }

    // drain_times_out, matched on the drained worker though drain runs on the control plane.
    let started = Instant::now();
    let drain = format!(
        "microk8s kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout=2s",
        host(&w0_ip)
    );
    let text = failed(&s.run(&cp, &drain).await);
    assert!(text.contains("global timeout reached: 2s"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let text = ok(&s.run(&cp, "microk8s kubectl get nodes").await);
    assert!(text.contains("Ready,SchedulingDisabled"), "{text}");
    ok(&s
        .run(&cp, &format!("microk8s kubectl uncordon {}", host(&w0_ip)))
        .await);
    assert_eq!(
        sim_state(&s, &cp).await["state"]["cordoned"],
        serde_json::json!([])
    );

    // snap refresh: refresh_fails on worker 0; the policy rejections; one minor on the control plane.
    let text = failed(
        &s.run(&w0, "snap refresh microk8s --channel=1.33/stable")
            .await,
    );
    assert!(
        text.contains("cannot perform the following tasks"),
        "{text}"
    );
    let text = failed(
        &s.run(&cp, "snap refresh microk8s --channel=1.34/stable")
            .await,
    );
    assert!(text.contains("one minor version at a time"), "{text}");
    let text = failed(
        &s.run(&cp, "snap refresh microk8s --channel=1.31/stable")
            .await,
    );
    assert!(text.contains("downgrading"), "{text}");
    ok(&s
        .run(&cp, "snap refresh microk8s --channel=1.33/stable")
        .await);
    let nodes: serde_json::Value = serde_json::from_str(
        ok(&s.run(&cp, "microk8s kubectl get nodes -o json").await)
            .split("\n--stderr--")
            .next()
            .unwrap(),
    )
    .unwrap();
    let version = |ip: &str| {
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["metadata"]["name"] == host(ip).as_str())
            .unwrap()["status"]["nodeInfo"]["kubeletVersion"]
            .clone()
    };
    assert_eq!(version(&cp_ip), "v1.33.0");
    assert_eq!(version(&w0_ip), "v1.32.0");
    assert_eq!(
        sim_state(&s, &w0).await["state"]["installed_channel"],
        "1.32/stable"
    );

    // enable with arguments on the live cluster, recorded with the cluster.
    ok(&s
        .run(
            &cp,
            "microk8s enable metallb:10.0.0.10-10.0.0.20,10.0.1.0/24",
        )
        .await);
    let state = sim_state(&s, &cp).await["state"].clone();
    assert!(state["addons"]
        .as_array()
        .unwrap()
        .contains(&"metallb".into()));
    assert_eq!(
        state["addon_args"],
        serde_json::json!(["metallb 10.0.0.10-10.0.0.20,10.0.1.0/24"])
    );

    // node_dies: worker 1 dies during its refresh. The invocation stays InProgress (the agent is
    // gone) until TimeoutSeconds + executionTimeout, its agent is ConnectionLost, EC2 still says
    // running, and the cluster sees the node NotReady.
    let id = s
        .send_with(
            &w1,
            "snap refresh microk8s --channel=1.33/stable",
            5,
            Some(30),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mid = s
        .ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&w1)
        .send()
        .await
        .unwrap();
    assert_eq!(mid.status().unwrap().as_str(), "InProgress");
    let info = s.ssm.describe_instance_information().send().await.unwrap();
    let ping = info
        .instance_information_list()
        .iter()
        .find(|i| i.instance_id() == Some(w1.as_str()))
        .and_then(|i| i.ping_status())
        .map(|p| p.as_str().to_string());
    assert_eq!(ping.as_deref(), Some("ConnectionLost"));
    // Its LastPingDateTime stays when it was last seen online (the refresh was sent 2 s ago).
    let last_ping = info
        .instance_information_list()
        .iter()
        .find(|i| i.instance_id() == Some(w1.as_str()))
        .and_then(|i| i.last_ping_date_time())
        .map(|t| t.secs())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(now - last_ping >= 1, "last ping {last_ping}, now {now}");
    let err = s.send(&w1, "echo hi", 10).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceId"));
    let w1_state = sim_state(&s, &w1).await;
    assert_eq!(w1_state["dead"], true);
    assert_eq!(w1_state["ec2_state"], "running");
    let text = ok(&s.run(&cp, "microk8s kubectl get nodes").await);
    let line = text.lines().find(|l| l.starts_with(&host(&w1_ip))).unwrap();
    assert!(line.contains("NotReady"), "{text}");
    // The Ready condition moved when the node was first seen NotReady: the verify script's
    // NODE line carries that time.
    let text = ok(&s
        .run(&cp, &script("verify", &[("EXPECTED_NODES", "2")]))
        .await);
    let line = text
        .lines()
        .find(|l| l.starts_with("NODE ") && l.contains(&format!(" {w1_ip} ")))
        .unwrap_or_else(|| panic!("{text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2], "NotReady", "{line}");
    assert!(fields[5].ends_with('Z') && fields[5].len() == 20, "{line}");

    // remove-node: an unknown node is rejected; the dead worker goes without --force (workers are
    // not dqlite members); the removals log shows both, in order.
    let text = failed(&s.run(&cp, "microk8s remove-node ip-10-99-99-99").await);
    assert!(text.contains("does not exist in Kubernetes"), "{text}");
    ok(&s
        .run(&cp, &format!("microk8s remove-node {}", host(&w1_ip)))
        .await);
    let log = sim_state(&s, &cp).await["state"]["removals_log"].clone();
    let results: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["result"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("rejected".to_string(), "not-a-member".to_string()),
            ("removed".to_string(), "-".to_string())
        ],
        "{log}"
    );
    assert_eq!(log[1]["ip"], w1_ip.as_str());
    assert_eq!(log[1]["by"], cp_ip.as_str());

    let out = s.wait(&id, &w1, Duration::from_secs(60)).await;
    assert_eq!(out.status().unwrap().as_str(), "TimedOut");
    assert_eq!(out.status_details(), Some("DeliveryTimedOut"));
    s.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_security_baseline_refuses_host_network_pods_outside_exempt_namespaces() {
    let s = stack().await;
    let (cp, cp_ip) = s.launch("podsec", "control-plane", 0).await;
    let (worker, _) = s.launch("podsec", "worker", 0).await;
    for i in [&cp, &worker] {
        s.wait_online(i).await;
    }
    let run = |out: aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput| {
        (out.status().unwrap().as_str().to_string(), stdout(&out))
    };
    // GIVEN a cluster bootstrapped with baseline, and a worker joined to it
    let boot = [
        ("MK8S_CHANNEL", "1.32/stable"),
        ("WAIT_TIMEOUT", "30"),
        ("POD_SECURITY", "baseline"),
    ];
    let (status, out) = run(s.run(&cp, &script("bootstrap", &boot)).await);
    assert_eq!(status, "Success", "{out}");
    // (the worker's one-time key, a single-use token sealed to it on the control plane)
    let (status, out) = run(s.run(&worker, &script("join-key", &[])).await);
    assert_eq!(status, "Success", "{out}");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("MECPLANE_RESULT join-key=ready public-key="))
        .unwrap_or_else(|| panic!("no public key: {out}"))
        .to_string();
    let (status, out) = run(s
        .run(&cp, &script("issue-token", &[("JOIN_KEY", &key)]))
        .await);
    assert_eq!(status, "Success", "{out}");
    let sealed = out
        .lines()
        .find(|l| l.starts_with("MECPLANE_SEALED v1 "))
        .unwrap_or_else(|| panic!("no sealed token: {out}"))
        .to_string();
    let join_addr = format!("{cp_ip}:25000");
    let join = [
        ("MK8S_CHANNEL", "1.32/stable"),
        ("JOIN_ADDRESS", join_addr.as_str()),
        ("SEALED_TOKEN", sealed.as_str()),
        ("NODE_ROLE", "worker"),
        ("WAIT_TIMEOUT", "30"),
    ];
    let (status, out) = run(s.run(&worker, &script("join", &join)).await);
    assert_eq!(status, "Success", "{out}");

    // THEN the control plane's API server runs with the admission configuration, the worker none
    let state = sim_state(&s, &cp).await["state"].clone();
    assert_eq!(
        state["admission_control_config_file"], "${SNAP_DATA}/args/mecplane-admission.yaml",
        "{state}"
    );
    assert_eq!(state["pod_security"]["enforce"], "baseline", "{state}");
    assert_eq!(state["pod_security"]["warn"], "baseline", "{state}");
    let exempt = state["pod_security"]["exempt_namespaces"]
        .as_array()
        .unwrap();
    assert!(
        exempt.contains(&serde_json::json!("kube-system")),
        "{state}"
    );
    assert!(!exempt.contains(&serde_json::json!("default")), "{state}");
    let worker_state = sim_state(&s, &worker).await["state"].clone();
    assert!(worker_state["pod_security"].is_null(), "{worker_state}");
    assert_eq!(
        worker_state["admission_control_config_file"],
        "${SNAP_DATA}/args/admission-control-config-file.yaml",
        "MicroK8s' own: {worker_state}"
    );

    // WHEN a pod on the node's network is asked for in default: refused, as kube-apiserver does
    let host_network = r#"--overrides='{"spec": {"hostNetwork": true}}'"#;
    let (status, out) = run(s
        .run(
            &cp,
            &format!("microk8s kubectl run sniff --image=busybox {host_network}"),
        )
        .await);
    assert_eq!(status, "Failed", "{out}");
    assert!(
        out.contains(
            r#"pods "sniff" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{out}"
    );
    // and so is one sharing the node's processes, applied from a manifest
    let manifest = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "peek", "namespace": "default"}, "spec": {"hostPID": true, "containers": [{"name": "c", "image": "busybox"}]}}"#;
    let (status, out) = run(s
        .run(
            &cp,
            &format!("echo '{manifest}' | microk8s kubectl apply -f -"),
        )
        .await);
    assert_eq!(status, "Failed", "{out}");
    assert!(
        out.contains(r#"violates PodSecurity "baseline:latest": host namespaces (hostPID=true)"#),
        "{out}"
    );
    // WHEN the same pod is asked for in kube-system (exempt: the add-ons' own): admitted
    let (status, out) = run(s
        .run(
            &cp,
            &format!("microk8s kubectl run sniff -n kube-system --image=busybox {host_network}"),
        )
        .await);
    assert_eq!(status, "Success", "{out}");
    assert!(out.contains("pod/sniff created"), "{out}");
    // and a pod that keeps to the pod network is admitted in default
    let (status, out) = run(s.run(&cp, "microk8s kubectl run web --image=nginx").await);
    assert_eq!(status, "Success", "{out}");
    let state = sim_state(&s, &cp).await["state"].clone();
    assert_eq!(
        state["pods"],
        serde_json::json!(["kube-system sniff", "default web"]),
        "{state}"
    );
}
