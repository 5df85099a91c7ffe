//! Join tokens as an SSM reader sees them: SSM keeps every command's parameters (`ListCommands`)
//! and output (`GetCommandInvocation`) for 30 days, readable by anyone allowed those calls, which
//! cannot be scoped to resources. A 1+2 cluster is created and scaled to 3 workers on the local
//! stack; then everything SSM kept is read and every string in it that MicroK8s would take for a
//! token (32 or more letters and digits) is presented to the cluster's control plane by a node
//! that is not a member. None gets in, and a token the test registers itself does (the replay
//! works). No join token is in Parameter Store either.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::stack::{self, node_of, Stack};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(300);

/// The maximal runs of 32 or more ASCII letters and digits in `text`: what `microk8s join` would
/// accept as a token (a token in clear stands between other characters, as in `…:25000/<token>`
/// or `'<token>'`).
fn token_like(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 32)
        .map(String::from)
        .collect()
}

/// Every command SSM kept, with its script text (the `commands` parameter), through ListCommands.
async fn listed_commands(ssm: &aws_sdk_ssm::Client) -> Vec<(String, Vec<String>, String)> {
    let mut out = Vec::new();
    let mut pages = ssm.list_commands().into_paginator().send();
    while let Some(page) = pages.next().await {
        for c in page.expect("ListCommands").commands() {
            let text = c
                .parameters()
                .and_then(|p| p.get("commands"))
                .map(|v| v.join("\n"))
                .unwrap_or_default();
            out.push((
                c.command_id().unwrap_or_default().to_string(),
                c.instance_ids().to_vec(),
                text,
            ));
        }
    }
    out
}

/// Sends `text` to `instance` once its agent is online and waits for the invocation to end;
/// answers its status and standard output and error.
async fn run_on(ssm: &aws_sdk_ssm::Client, instance: &str, text: &str) -> (String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let command_id = loop {
        match ssm
            .send_command()
            .instance_ids(instance)
            .document_name("AWS-RunShellScript")
            .parameters("commands", vec![text.to_string()])
            .parameters("executionTimeout", vec!["600".to_string()])
            .send()
            .await
        {
            Ok(out) => break out.command().unwrap().command_id().unwrap().to_string(),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("SendCommand to {instance}: {e:?}"),
        }
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(inv) = ssm
            .get_command_invocation()
            .command_id(&command_id)
            .instance_id(instance)
            .send()
            .await
        else {
            continue;
        };
        let status = inv
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if !["Pending", "InProgress", "Delayed"].contains(&status.as_str()) {
            return (
                status,
                format!(
                    "{}\n{}",
                    inv.standard_output_content().unwrap_or_default(),
                    inv.standard_error_content().unwrap_or_default()
                ),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_usable_join_token_in_what_ssm_keeps_after_a_create_and_a_scale_up() {
    let stack = Stack::start(300).await;

    // GIVEN an ACTIVE 1+2 cluster scaled to 3 workers
    let (code, created) = stack
        .api("POST", "/clusters", Some(&stack::spec("tokens", 1, 2)))
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    let (code, scaled) = stack
        .api(
            "PATCH",
            &format!("/clusters/{id}"),
            Some(&json!({"workers": 3})),
        )
        .await;
    assert_eq!(code, 202, "{scaled}");
    let record = stack
        .wait_record(&id, "the scale-up to end", TIMEOUT, |r| {
            r["status"] != "UPDATING"
        })
        .await;
    assert_eq!(record["status"], "ACTIVE", "{record}\n{}", stack.logs());
    assert_eq!(record["nodes"].as_array().unwrap().len(), 4);

    // WHEN every command's parameters and every invocation's output are read, as any SSM reader
    let ssm = stack.ssm();
    let commands = listed_commands(&ssm).await;
    let outputs = stack.command_outputs().await;

    // THEN each of the three joins took its own key, its own token and one join command, and no
    // command carries a token in clear
    let of = |script: &str| -> Vec<&str> {
        commands
            .iter()
            .filter(|(_, _, t)| t.contains(&format!("# mecplane-script: {script}\n")))
            .map(|(_, _, t)| t.as_str())
            .collect()
    };
    let (keys, issues, joins) = (of("join-key"), of("issue-token"), of("join"));
    assert_eq!(
        (keys.len(), issues.len(), joins.len()),
        (3, 3, 3),
        "{commands:?}"
    );
    let env_of = |text: &str, name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_default()
            .trim_matches('\'')
            .to_string()
    };
    let public_keys: BTreeSet<String> = issues.iter().map(|t| env_of(t, "JOIN_KEY")).collect();
    let sealed: BTreeSet<String> = joins.iter().map(|t| env_of(t, "SEALED_TOKEN")).collect();
    assert_eq!(public_keys.len(), 3, "one key per join");
    assert_eq!(sealed.len(), 3, "one token per join");
    assert!(sealed.iter().all(|s| s.starts_with("MECPLANE_SEALED v1 ")));
    for (_, _, text) in &commands {
        assert!(!text.contains("JOIN_TOKEN"), "{text}");
    }
    assert!(
        outputs.iter().any(|o| o.contains("MECPLANE_SEALED v1 ")),
        "the sealed tokens are in the issue-token outputs"
    );

    // AND no join token is kept in Parameter Store
    let params = ssm
        .get_parameters_by_path()
        .path(format!("/mecplane/clusters/{id}"))
        .recursive(true)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = params
        .parameters()
        .iter()
        .filter_map(|p| p.name())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with("/join-token")),
        "{names:?}"
    );

    // AND no string in what SSM kept that looks like a token lets a node that is not a member
    // join: each is presented to the control plane by an instance outside the cluster
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for text in commands.iter().map(|(_, _, t)| t).chain(&outputs) {
        candidates.extend(token_like(text));
    }
    assert!(
        candidates.len() > 10,
        "the sealed blobs are read: {candidates:?}"
    );
    let (cp, cp_ip) = node_of(&record, "control-plane", 0);
    let launched = stack
        .ec2()
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Medium)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("RunInstances");
    let intruder = launched.instances()[0].instance_id().unwrap().to_string();
    // A positive control: a single-use token the test registers on the control plane itself.
    let control = "controltoken0000000000000000000000";
    let (status, out) = run_on(
        &ssm,
        &cp,
        &format!("microk8s add-node --token {control} --token-ttl -1 --format json >/dev/null"),
    )
    .await;
    assert_eq!(status, "Success", "{out}");
    let mut script = String::from(
        "snap install microk8s --classic --channel=1.32/stable >/dev/null\nrefused=0 joined=0\nfor t in \\\n",
    );
    for c in candidates
        .iter()
        .chain(std::iter::once(&control.to_string()))
    {
        script.push_str(&format!("  {c} \\\n"));
    }
    script.push_str(&format!(
        "  ; do\n  if out=$(microk8s join {cp_ip}:25000/$t --worker 2>&1); then\n    joined=$((joined + 1)); echo \"JOINED $t\"\n  elif [[ $out == *'Invalid token'* ]]; then\n    refused=$((refused + 1))\n  else\n    echo \"OTHER $t: $out\"\n  fi\ndone\necho \"REPLAY refused=$refused joined=$joined\"\n"
    ));
    let (status, out) = run_on(
        &ssm,
        &intruder,
        &format!("bash -c '{}'", script.replace('\'', r"'\''")),
    )
    .await;
    assert_eq!(status, "Success", "{out}");
    assert!(
        out.contains(&format!("REPLAY refused={} joined=1", candidates.len())),
        "every token-like string from SSM is refused as a token, the test's own is taken: {out}"
    );
    assert!(out.contains(&format!("JOINED {control}")), "{out}");
}
