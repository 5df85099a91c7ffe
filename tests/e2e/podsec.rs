//! Pod Security admission on a create (issue 24): a cluster created without `pod_security` is
//! `baseline` on its record; every control plane — the bootstrapped one and each that joined —
//! starts its API server with the admission configuration (the node simulator's MicroK8s applied
//! the launch configuration's file and argument, as MicroK8s does), the workers' joins wrote none
//! and still joined (a worker runs no API server); and a `hostNetwork` pod asked of a joined control
//! plane's API server is refused in `default` and admitted in `kube-system`.

use std::time::{Duration, Instant};

use crate::support::stack::{self, node_of, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(420);

/// Runs `text` on the instance through SSM (the node simulator), as an operator would: its
/// status and output.
async fn run_on(stack: &Stack, instance: &str, text: &str) -> (String, String) {
    let ssm = stack.ssm();
    let sent = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(instance)
        .parameters("commands", vec![text.to_string()])
        .send()
        .await
        .expect("SendCommand");
    let id = sent
        .command()
        .and_then(|c| c.command_id())
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ssm
            .get_command_invocation()
            .command_id(&id)
            .instance_id(instance)
            .send()
            .await
            .expect("GetCommandInvocation");
        let status = out
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if !matches!(status.as_str(), "Pending" | "InProgress" | "Delayed") {
            let text = format!(
                "{}{}",
                out.standard_output_content().unwrap_or_default(),
                out.standard_error_content().unwrap_or_default()
            );
            return (status, text);
        }
        assert!(Instant::now() < deadline, "{text} still {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_planes_enforce_baseline_and_workers_join_without_it() {
    let stack = Stack::start(300).await;

    // WHEN a 3+1 cluster is created without pod_security
    let name = "podsec";
    let (code, created) = stack
        .api("POST", "/clusters", Some(&stack::spec(name, 3, 1)))
        .await;
    assert_eq!(code, 202, "{created}");
    // THEN the record shows the default
    assert_eq!(created["spec"]["pod_security"], "baseline", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let record = stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    assert_eq!(record["spec"]["pod_security"], "baseline", "{record}");

    // AND every control plane's API server runs with the admission configuration: baseline
    // enforced, audited and warned about, the add-ons' namespaces exempt
    let nodes: Vec<Value> = stack
        .sim_instances()
        .await
        .into_iter()
        .filter(|i| i["cluster_name"] == name)
        .collect();
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    for node in nodes.iter().filter(|n| n["role"] == "control-plane") {
        let state = &node["state"];
        assert_eq!(
            state["admission_control_config_file"], "${SNAP_DATA}/args/mecplane-admission.yaml",
            "{node}"
        );
        let psa = &state["pod_security"];
        assert_eq!(
            (&psa["enforce"], &psa["audit"], &psa["warn"]),
            (&json!("baseline"), &json!("baseline"), &json!("baseline")),
            "{node}"
        );
        let exempt = psa["exempt_namespaces"].as_array().unwrap();
        for ns in [
            "kube-system",
            "ingress",
            "metallb-system",
            "cert-manager",
            "observability",
        ] {
            assert!(exempt.contains(&json!(ns)), "{ns}: {node}");
        }
        assert!(!exempt.contains(&json!("default")), "{node}");
    }

    // AND the worker joined without it: its MicroK8s kept its own admission configuration and it
    // runs no API server
    let worker = nodes.iter().find(|n| n["role"] == "worker").unwrap();
    assert_eq!(worker["state"]["member_role"], "worker", "{worker}");
    assert_eq!(
        worker["state"]["admission_control_config_file"],
        "${SNAP_DATA}/args/admission-control-config-file.yaml",
        "{worker}"
    );
    assert!(worker["state"]["pod_security"].is_null(), "{worker}");
    let joins = stack.joins_log().await;
    assert!(
        joins
            .iter()
            .any(|j| j["role"] == "worker" && j["result"] == "joined"),
        "{joins:?}"
    );

    // AND a joined control plane's API server refuses a pod on the node's network in default
    // and admits it in kube-system
    let (joined_cp, _) = node_of(&record, "control-plane", 1);
    let host_network = r#"--overrides='{"spec": {"hostNetwork": true}}'"#;
    let (status, out) = run_on(
        &stack,
        &joined_cp,
        &format!("microk8s kubectl run sniff --image=busybox {host_network}"),
    )
    .await;
    assert_eq!(status, "Failed", "{out}");
    assert!(
        out.contains(
            r#"violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{out}"
    );
    let (status, out) = run_on(
        &stack,
        &joined_cp,
        &format!("microk8s kubectl run sniff -n kube-system --image=busybox {host_network}"),
    )
    .await;
    assert_eq!(status, "Success", "{out}");
}
