//! `mecctl` driven as a user would, against a private local stack: create --wait, list, get,
//! events, kubeconfig (merged into an existing file), the exit codes of a missing cluster and of a
//! refused spec, then delete --wait.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::stack::{self, Stack};
use serde_json::Value;

/// Runs mecctl with the stack's endpoint and test credentials, in a scratch HOME and directory
/// (so no config file or local env file of the developer is read).
async fn mecctl(stack: &Stack, home: &Path, args: &[&str]) -> Output {
    let endpoint = format!("{}/api", stack.endpoint());
    mecctl_raw(home, &[args, &["--endpoint", &endpoint]].concat()).await
}

/// Runs mecctl with exactly `args`, the test credentials and nothing else of the environment.
async fn mecctl_raw(home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(stack::bin_dir().join("mecctl"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .current_dir(home)
        .output()
        .await
        .expect("mecctl runs")
}

/// The cluster's security group rules open to the outside: `tcp/443 198.51.100.0/24`, sorted.
async fn outside_rules(stack: &Stack, cluster_id: &str) -> Vec<String> {
    let groups = stack
        .ec2()
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", mecplane::resources::TAG_CLUSTER))
                .values(cluster_id)
                .build(),
        )
        .send()
        .await
        .expect("describe security groups");
    let mut rules: Vec<String> = groups
        .security_groups()
        .iter()
        .flat_map(|g| g.ip_permissions())
        .flat_map(|p| {
            let ports = match (p.from_port(), p.to_port()) {
                (Some(a), Some(b)) if a == b => a.to_string(),
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "all".into(),
            };
            let protocol = p.ip_protocol().unwrap_or_default().to_string();
            p.ip_ranges()
                .iter()
                .map(move |r| format!("{protocol}/{ports} {}", r.cidr_ip().unwrap_or_default()))
                .collect::<Vec<_>>()
        })
        .collect();
    rules.sort();
    rules
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_session_with_mecctl() {
    let stack = Stack::start(300).await;
    let home: PathBuf = stack.state_dir.join("home");
    std::fs::create_dir_all(home.join(".mecplane")).unwrap();

    // The local stack's env file is read only when asked: present in the working directory,
    // it is ignored without --local (no endpoint: a usage error) and used with it.
    std::fs::copy(
        stack.state_dir.join("local.env"),
        home.join(".mecplane/local.env"),
    )
    .unwrap();
    let unasked = mecctl_raw(&home, &["list"]).await;
    assert_eq!(unasked.status.code(), Some(2), "{}", err(&unasked));
    assert!(err(&unasked).contains("no endpoint"), "{}", err(&unasked));
    let asked = mecctl_raw(&home, &["--local", "list"]).await;
    assert_eq!(asked.status.code(), Some(0), "{}", err(&asked));

    // create --wait: progress on stderr, the ACTIVE summary on stdout, exit 0
    let created = mecctl(
        &stack,
        &home,
        &[
            "create",
            "--name",
            "cli-edge",
            "--workers",
            "1",
            "--allow-cidr",
            "203.0.113.0/24",
            "--addon",
            "dns",
            "--wait",
            "--timeout",
            "240s",
        ],
    )
    .await;
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}{}\n{}",
        out(&created),
        err(&created),
        stack.logs()
    );
    assert!(
        out(&created).contains("Status:      ACTIVE"),
        "{}",
        out(&created)
    );
    assert!(out(&created).contains("Nodes:"), "{}", out(&created));
    for progress in ["bootstrap", "join-workers", "status ACTIVE"] {
        assert!(
            err(&created).contains(progress),
            "{progress}: {}",
            err(&created)
        );
    }

    // get -o json parses and shows the two nodes; list and events show it
    let got = mecctl(&stack, &home, &["get", "cli-edge", "-o", "json"]).await;
    assert_eq!(got.status.code(), Some(0), "{}", err(&got));
    let record: Value = serde_json::from_slice(&got.stdout).expect("JSON");
    assert_eq!(record["status"], "ACTIVE");
    assert_eq!(record["nodes"].as_array().map(Vec::len), Some(2));
    let id = record["id"].as_str().unwrap().to_string();
    let listed = mecctl(&stack, &home, &["list"]).await;
    assert_eq!(listed.status.code(), Some(0));
    let table = out(&listed);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("cli-edge")
            && l.contains(&id)
            && l.contains("ACTIVE")
            && l.contains("2/2")),
        "{table}"
    );
    let events = mecctl(&stack, &home, &["events", &id, "-o", "yaml"]).await;
    assert_eq!(events.status.code(), Some(0));
    assert!(out(&events).contains("stage: verify"), "{}", out(&events));

    // kubeconfig merges into an existing file, keeping its entries
    let kubeconfig = home.join("kube").join("config");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://other:6443\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\ncurrent-context: other\nusers:\n- name: other\n  user:\n    token: t\n",
    )
    .unwrap();
    let kc = mecctl(
        &stack,
        &home,
        &[
            "kubeconfig",
            "cli-edge",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(kc.status.code(), Some(0), "{}", err(&kc));
    assert!(out(&kc).contains("context \"cli-edge\""), "{}", out(&kc));
    let merged = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        merged.contains("name: other") && merged.contains("name: cli-edge"),
        "{merged}"
    );
    assert!(merged.contains("current-context: cli-edge"), "{merged}");
    assert!(merged.contains(":16443"), "{merged}");

    // expose opens a workload port, then moves it: the group follows the spec exactly (the new
    // rule added, the old revoked, the API's untouched); 22 is refused naming the field
    assert_eq!(
        outside_rules(&stack, &id).await,
        ["tcp/16443 203.0.113.0/24"]
    );
    let opened = mecctl(
        &stack,
        &home,
        &[
            "expose",
            "cli-edge",
            "--open",
            "443=198.51.100.0/24",
            "--open",
            "30000-32767/udp=10.0.0.0/8",
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await;
    assert_eq!(
        opened.status.code(),
        Some(0),
        "{}{}",
        out(&opened),
        err(&opened)
    );
    assert_eq!(
        outside_rules(&stack, &id).await,
        [
            "tcp/16443 203.0.113.0/24",
            "tcp/443 198.51.100.0/24",
            "udp/30000-32767 10.0.0.0/8"
        ]
    );
    let moved = mecctl(
        &stack,
        &home,
        &[
            "expose",
            "cli-edge",
            "--close",
            "30000-32767/udp",
            "--open",
            "443=192.0.2.0/24",
            "--wait",
            "--timeout",
            "120s",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        moved.status.code(),
        Some(0),
        "{}{}",
        out(&moved),
        err(&moved)
    );
    let record: Value = serde_json::from_slice(&moved.stdout).expect("JSON");
    assert_eq!(record["status"], "ACTIVE");
    assert_eq!(
        record["spec"]["exposed_ports"],
        serde_json::json!([{"port": 443, "protocol": "tcp", "cidrs": ["192.0.2.0/24"]}])
    );
    assert_eq!(
        outside_rules(&stack, &id).await,
        ["tcp/16443 203.0.113.0/24", "tcp/443 192.0.2.0/24"]
    );
    let ssh = mecctl(
        &stack,
        &home,
        &["expose", "cli-edge", "--open", "22=10.0.0.0/8"],
    )
    .await;
    assert_eq!(ssh.status.code(), Some(5), "{}", err(&ssh));
    assert!(err(&ssh).contains("exposed_ports[1].port"), "{}", err(&ssh));
    let unchanged = mecctl(
        &stack,
        &home,
        &["expose", "cli-edge", "--open", "443=192.0.2.0/24"],
    )
    .await;
    assert_eq!(unchanged.status.code(), Some(0), "{}", err(&unchanged));
    assert!(
        out(&unchanged).contains("nothing to change"),
        "{}",
        out(&unchanged)
    );

    // the exit codes a script relies on: 3 for a missing cluster, 5 for a refused spec, 4 for a taken name
    let missing = mecctl(&stack, &home, &["get", "no-such-cluster"]).await;
    assert_eq!(missing.status.code(), Some(3));
    assert!(err(&missing).contains("NotFound"), "{}", err(&missing));
    let refused = mecctl(
        &stack,
        &home,
        &["create", "--name", "too-big", "--workers", "1000"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(5));
    assert!(err(&refused).contains("workers"), "{}", err(&refused));
    let taken = mecctl(&stack, &home, &["create", "--name", "cli-edge"]).await;
    assert_eq!(taken.status.code(), Some(4), "{}", err(&taken));

    // delete --wait: exit 0, DELETED, then the name is gone (3) and nothing is left
    let deleted = mecctl(
        &stack,
        &home,
        &["delete", "cli-edge", "--wait", "--timeout", "120s"],
    )
    .await;
    assert_eq!(
        deleted.status.code(),
        Some(0),
        "{}{}",
        out(&deleted),
        err(&deleted)
    );
    assert!(out(&deleted).contains("DELETED"), "{}", out(&deleted));
    let gone = mecctl(&stack, &home, &["get", "cli-edge"]).await;
    assert_eq!(gone.status.code(), Some(3));
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    // expose ran the security-group stage in an update: its revoke is on its role
    stack.assert_calls_allowed_by_template().await;
}
