//! `mecctl` driven as a user would, against a private local stack: create --wait, list, get,
//! events, kubeconfig (merged into an existing file), the exit codes of a missing cluster and of a
//! refused spec, then delete --wait; and the move from the IEC Type 2 Terraform blueprint
//! (`create --from-tf-vars` on its TF_VAR_* variables, with an AMI of its own).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::stack::{self, Stack};
use serde_json::Value;

/// Runs mecctl with the stack's endpoint and test credentials, in a scratch HOME and directory
/// (so no config file or local env file of the developer is read).
async fn mecctl(stack: &Stack, home: &Path, args: &[&str]) -> Output {
    mecctl_vars(stack, home, args, &[]).await
}

/// [`mecctl`] with `vars` in the environment too.
async fn mecctl_vars(stack: &Stack, home: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let endpoint = format!("{}/api", stack.endpoint());
    mecctl_env(home, &[args, &["--endpoint", &endpoint]].concat(), vars).await
}

/// Runs mecctl with exactly `args`, the test credentials and nothing else of the environment.
async fn mecctl_raw(home: &Path, args: &[&str]) -> Output {
    mecctl_env(home, args, &[]).await
}

/// [`mecctl_raw`] with `vars` in the environment too.
async fn mecctl_env(home: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(stack::bin_dir().join("mecctl"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .envs(vars.iter().copied())
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

/// The image a blueprint user brings: one of moto's own Canonical (`099720109477`, the local
/// stack's `AmiOwners` as the template's default) x86_64 images, not the one the local stack
/// publishes as Ubuntu's for the release (so a node on it proves the spec's image was used).
async fn canonical_amd64_image(stack: &Stack) -> String {
    use aws_sdk_ec2::types::Filter;
    let pages: Vec<_> = stack
        .ssm()
        .get_parameters_by_path()
        .path("/")
        .recursive(true)
        .into_paginator()
        .send()
        .collect::<Result<_, _>>()
        .await
        .expect("parameters");
    let published: Vec<String> = pages
        .iter()
        .flat_map(|page| page.parameters())
        .filter(|p| p.name().is_some_and(|n| n.ends_with("/ami-id")))
        .filter_map(|p| p.value().map(str::to_string))
        .collect();
    let images = stack
        .ec2()
        .describe_images()
        .owners("099720109477")
        .filters(
            Filter::builder()
                .name("architecture")
                .values("x86_64")
                .build(),
        )
        .send()
        .await
        .expect("describe images");
    let mut ids: Vec<String> = images
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_string))
        .filter(|id| !published.contains(id))
        .collect();
    ids.sort();
    ids.into_iter()
        .next()
        .expect("moto knows a Canonical x86_64 image")
}

/// The default VPC and one of its default subnets (the first by zone).
async fn default_vpc_and_subnet(stack: &Stack) -> (String, String) {
    let (subnet, _zone) = stack.subnets_in_distinct_zones(1).await.remove(0);
    (stack.default_vpc().await, subnet)
}

/// The image ids of the cluster's instances (terminated ones too), sorted.
async fn image_ids(stack: &Stack, cluster_id: &str) -> Vec<String> {
    let found = stack
        .ec2()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", mecplane::resources::TAG_CLUSTER))
                .values(cluster_id)
                .build(),
        )
        .max_results(1000)
        .send()
        .await
        .expect("describe instances");
    let mut ids: Vec<String> = found
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.image_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The spec `create --from-tf-vars` printed (stderr) before it sent it.
fn printed_spec(o: &Output) -> Value {
    let stderr = err(o);
    let (_, text) = stderr
        .split_once("the spec from TF_VAR_*:\n")
        .unwrap_or_else(|| panic!("the spec printed before it is sent: {stderr}"));
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .next()
        .expect("a JSON spec")
        .expect("valid JSON")
}

/// `mecctl create <name> --from-tf-vars <flags> --wait -o json` against the stack with `vars` as
/// its environment: asserts it exits with `code` and the record it printed has `status`; answers
/// the run (for the spec it printed first) and that record.
async fn create_from_tf_vars(
    stack: &Stack,
    home: &Path,
    name: &str,
    flags: &[&str],
    vars: &[(&str, &str)],
    (code, status): (i32, &str),
) -> (Output, Value) {
    let wait = ["--wait", "--timeout", "240s", "-o", "json"];
    let args = [&["create", name, "--from-tf-vars"], flags, &wait].concat();
    let run = mecctl_vars(stack, home, &args, vars).await;
    assert_eq!(
        run.status.code(),
        Some(code),
        "{}{}\n{}",
        out(&run),
        err(&run),
        stack.logs()
    );
    let record: Value = serde_json::from_slice(&run.stdout).expect("the record as JSON");
    assert_eq!(record["status"], status, "{record}");
    (run, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_from_the_terraform_blueprint_variables() {
    let stack = Stack::start(300).await;
    let home: PathBuf = stack.state_dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let ami = canonical_amd64_image(&stack).await;
    let (vpc, subnet) = default_vpc_and_subnet(&stack).await;
    // What a blueprint user has exported for `terraform apply`.
    let tf_vars = [
        ("TF_VAR_aws_region", "us-east-1"),
        ("TF_VAR_aws_instance", "t3.medium"),
        ("TF_VAR_aws_ami", ami.as_str()),
        ("TF_VAR_vpc_id", vpc.as_str()),
        ("TF_VAR_aws_subnet_id", subnet.as_str()),
    ];
    let expected = serde_json::json!({
        "name": "tf-edge",
        "region": "us-east-1",
        "instance_type": "t3.medium",
        "ami_id": ami,
        "subnet_ids": [subnet],
        "workers": 1,
    });

    // --dry-run prints the spec and sends nothing (no endpoint needed)
    let dry = mecctl_env(
        &home,
        &["create", "tf-edge", "--from-tf-vars", "--dry-run"],
        &tf_vars,
    )
    .await;
    assert_eq!(dry.status.code(), Some(0), "{}", err(&dry));
    let printed: Value = serde_json::from_slice(&dry.stdout).expect("the spec as JSON");
    assert_eq!(printed, expected);
    assert_eq!(stack.api("GET", "/clusters/tf-edge", None).await.0, 404);

    // the create: the spec printed first, then the cluster ACTIVE with every node on that image
    let (created, record) =
        create_from_tf_vars(&stack, &home, "tf-edge", &[], &tf_vars, (0, "ACTIVE")).await;
    assert_eq!(printed_spec(&created), expected);
    assert_eq!(record["spec"]["ami_id"], ami.as_str());
    assert_eq!(record["spec"]["subnet_ids"], serde_json::json!([subnet]));
    let id = record["id"].as_str().unwrap().to_string();
    assert_eq!(image_ids(&stack, &id).await, [ami.clone(), ami.clone()]);

    // an image the region does not have: the create fails early naming ami_id, nothing left
    let unknown = "ami-0000000000000dead";
    let mut bad_vars = tf_vars.to_vec();
    bad_vars[2] = ("TF_VAR_aws_ami", unknown);
    let (_, record) = create_from_tf_vars(
        &stack,
        &home,
        "tf-missing-ami",
        &[],
        &bad_vars,
        (6, "FAILED"),
    )
    .await;
    let reason = record["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ami_id") && reason.contains(unknown),
        "{record}"
    );
    assert_eq!(record["failure"]["stage"], "resolve-ami", "{record}");
    assert_eq!(record["failure"]["error"], "ValidationError", "{record}");
    let failed_id = record["id"].as_str().unwrap().to_string();
    assert_eq!(stack.leftovers(&failed_id).await, (vec![], vec![], vec![]));
    assert!(
        image_ids(&stack, &failed_id).await.is_empty(),
        "nothing launched"
    );

    // the VPC without a subnet: the API picks the VPC's subnets; a flag overrides the workers
    let vpc_only: Vec<(&str, &str)> = tf_vars
        .iter()
        .copied()
        .filter(|(k, _)| *k != "TF_VAR_aws_subnet_id")
        .collect();
    let (by_vpc, record) = create_from_tf_vars(
        &stack,
        &home,
        "tf-vpc",
        &["--workers", "0"],
        &vpc_only,
        (0, "ACTIVE"),
    )
    .await;
    assert_eq!(
        printed_spec(&by_vpc),
        serde_json::json!({
            "name": "tf-vpc",
            "region": "us-east-1",
            "instance_type": "t3.medium",
            "ami_id": ami,
            "vpc_id": vpc,
            "workers": 0,
        })
    );
    assert_eq!(record["spec"]["vpc_id"], vpc.as_str());
    assert!(
        record["spec"]["subnet_ids"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "the API chose subnets: {record}"
    );
    let vpc_id = record["id"].as_str().unwrap().to_string();
    assert_eq!(image_ids(&stack, &vpc_id).await, [ami.as_str()]);

    // a variable the blueprint requires, missing: a usage error naming it, nothing sent
    let missing = mecctl_vars(
        &stack,
        &home,
        &["create", "tf-none", "--from-tf-vars"],
        &tf_vars[1..],
    )
    .await;
    assert_eq!(missing.status.code(), Some(2), "{}", err(&missing));
    assert!(
        err(&missing).contains("TF_VAR_aws_region"),
        "{}",
        err(&missing)
    );
    assert_eq!(stack.api("GET", "/clusters/tf-none", None).await.0, 404);

    for (name, cluster_id) in [("tf-edge", &id), ("tf-vpc", &vpc_id)] {
        let deleted = mecctl(
            &stack,
            &home,
            &["delete", name, "--wait", "--timeout", "120s"],
        )
        .await;
        assert_eq!(deleted.status.code(), Some(0), "{}", err(&deleted));
        assert_eq!(stack.leftovers(cluster_id).await, (vec![], vec![], vec![]));
    }
    stack.assert_calls_allowed_by_template().await;
}
