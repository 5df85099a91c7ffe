//! Ownership on the local stack: the control plane acts only on what its record and its
//! deployment's identity say it made. An instance tagged by hand to look like a node (the
//! cluster's tags, without the deployment's tag or without its node instance profile) is never
//! joined, counted, replaced or terminated — not by a scale up or down, a non-dry reconcile with
//! no orphan grace, nor the cluster's delete; and two deployments sharing one account and region
//! (two stacks on one moto) never touch each other's instances, groups, load balancers or
//! parameters.

use std::time::Duration;

use crate::support::stack::{self, profile_of, run_instance, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(300);

/// The reconcile removes what it takes for an orphan at once.
const NO_ORPHAN_GRACE: [(&str, &str); 1] = [("MECPLANE_ORPHAN_GRACE_SECONDS", "0")];

/// Creates `spec` through `stack`'s API and waits for it to be ACTIVE.
async fn create(stack: &Stack, spec: Value) -> Value {
    let (code, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await
}

/// Asks for `workers` and waits for the update to finish ACTIVE.
async fn scale(stack: &Stack, id: &str, workers: u32) -> Value {
    let path = format!("/clusters/{id}");
    let (code, body) = stack
        .api("PATCH", &path, Some(&json!({"workers": workers})))
        .await;
    assert_eq!(code, 202, "{body}");
    stack
        .wait_record(id, "the scale", TIMEOUT, |r| {
            r["status"] == "ACTIVE"
                && r["updates"]
                    .as_array()
                    .and_then(|u| u.last())
                    .is_some_and(|u| u["status"] != "InProgress")
        })
        .await
}

async fn reconcile(stack: &Stack) -> Value {
    let (code, report) = stack
        .api("POST", "/reconcile", Some(&json!({"dry_run": false})))
        .await;
    assert_eq!(code, 200, "{report}");
    report
}

async fn delete(stack: &Stack, id: &str) {
    let (code, body) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(code, 202, "{body}");
    stack
        .wait_record(id, "DELETED", TIMEOUT, |r| r["status"] == "DELETED")
        .await;
}

/// The state of each instance in us-east-1 (where the test clusters live).
async fn states(stack: &Stack, ids: &[String]) -> Vec<String> {
    let out = stack
        .ec2_in("us-east-1")
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("describe");
    let mut by_id: Vec<(String, String)> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    by_id.sort_by_key(|(id, _)| ids.iter().position(|x| x == id));
    by_id.into_iter().map(|(_, state)| state).collect()
}

fn node_ids(record: &Value) -> Vec<String> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["instance_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn look_alikes_of_a_clusters_nodes_are_never_joined_counted_or_terminated() {
    let stack = Stack::start_with(300, &NO_ORPHAN_GRACE, &stack::RECONCILE_OFF).await;
    let record = create(&stack, stack::spec("owned", 1, 1)).await;
    let id = record["id"].as_str().unwrap().to_string();
    let ec2 = stack.ec2_in("us-east-1");
    let profile = profile_of(&ec2, &node_ids(&record)[0]).await;

    // GIVEN instances made outside the control plane with the cluster's node tags for workers
    // 1 and 2 (the indexes a scale up takes): one with the deployment's tag but no instance
    // profile, one with the node profile but no deployment tag
    let node = |index: &'static str| {
        vec![
            ("mecplane:cluster", id.as_str()),
            ("mecplane:cluster-name", "owned"),
            ("mecplane:role", "worker"),
            ("mecplane:index", index),
        ]
    };
    let mut no_profile = node("1");
    no_profile.push(("mecplane:deployment", "mecplane"));
    let look_alikes = vec![
        run_instance(&ec2, &no_profile, None).await,
        run_instance(&ec2, &node("2"), Some(&profile)).await,
    ];

    // WHEN the cluster scales up to 3 workers
    let up = scale(&stack, &id, 3).await;
    // THEN three workers of its own joined, indexes 0-2, neither look-alike among them
    let workers: Vec<u64> = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "worker")
        .map(|n| n["index"].as_u64().unwrap())
        .collect();
    assert_eq!(workers.len(), 3, "{up}");
    let nodes = node_ids(&up);
    assert!(
        look_alikes.iter().all(|l| !nodes.contains(l)),
        "a look-alike became a node: {up}"
    );

    // WHEN it scales down to 1, a non-dry reconcile runs with no orphan grace, then it is deleted
    scale(&stack, &id, 1).await;
    let report = reconcile(&stack).await;
    assert!(
        look_alikes.iter().all(|l| !report.to_string().contains(l)),
        "{report}"
    );
    assert_eq!(report["plan"]["actions"], json!([]), "{report}");
    delete(&stack, &id).await;

    // THEN the look-alikes run on, untouched; every node of the cluster is gone
    assert_eq!(
        states(&stack, &look_alikes).await,
        vec!["running", "running"]
    );
    let all_nodes: Vec<String> = nodes;
    assert!(
        states(&stack, &all_nodes)
            .await
            .iter()
            .all(|s| s == "terminated" || s == "shutting-down"),
        "every node of its own is gone"
    );
    // AND no command (a join with its token least of all) was ever sent to one
    let targets = stack.command_targets().await;
    assert!(!targets.is_empty());
    assert!(
        look_alikes.iter().all(|l| !targets.contains(l)),
        "a command reached a look-alike: {targets:?}"
    );
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_deployments_on_one_account_and_region_never_touch_each_other() {
    // GIVEN two deployments in one account: `mecplane` at home in us-east-1 and `beta` in
    // eu-west-1, each with a cluster in us-east-1 behind its own load balancer
    let alpha = Stack::start_with(300, &NO_ORPHAN_GRACE, &stack::RECONCILE_OFF).await;
    let beta = alpha
        .start_beside("beta", "eu-west-1", &NO_ORPHAN_GRACE)
        .await;
    let spec = |name: &str| {
        let mut spec = stack::spec(name, 1, 1);
        spec["region"] = json!("us-east-1");
        spec["api_endpoint"] = json!("nlb");
        spec
    };
    let (a, b) = tokio::join!(create(&alpha, spec("alpha")), create(&beta, spec("beta")));
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    let a_has = alpha.leftovers(&a_id).await;
    let b_has = beta.leftovers(&b_id).await;
    assert_eq!((a_has.0.len(), a_has.1.len()), (2, 1), "{a_has:?}");
    assert_eq!((b_has.0.len(), b_has.1.len()), (2, 1), "{b_has:?}");
    assert!(
        !a_has.2.is_empty() && !b_has.2.is_empty(),
        "kubeconfigs stored"
    );
    assert_eq!(alpha.balancers_left(&a_id).await.len(), 3);
    assert_eq!(beta.balancers_left(&b_id).await.len(), 3);
    // Each one's nodes carry its own deployment tag and node profile.
    let ec2 = alpha.ec2_in("us-east-1");
    let a_profile = profile_of(&ec2, &node_ids(&a)[0]).await;
    let b_profile = profile_of(&ec2, &node_ids(&b)[0]).await;
    assert_ne!(a_profile, b_profile);

    // WHEN each runs non-dry reconciles with no orphan grace
    for _ in 0..2 {
        for (stack, other) in [(&alpha, &b_id), (&beta, &a_id)] {
            let report = reconcile(stack).await;
            // THEN neither plans anything nor even sees the other's cluster
            assert_eq!(report["plan"]["actions"], json!([]), "{report}");
            assert_eq!(report["plan"]["findings"], json!([]), "{report}");
            assert_eq!(report["records"], 1, "{report}");
            assert_eq!(report["instances"], 2, "{report}");
            assert!(!report.to_string().contains(other.as_str()), "{report}");
        }
    }
    assert_eq!(alpha.leftovers(&a_id).await, a_has);
    assert_eq!(beta.leftovers(&b_id).await, b_has);
    assert_eq!(alpha.balancers_left(&a_id).await.len(), 3);
    assert_eq!(beta.balancers_left(&b_id).await.len(), 3);

    // WHEN alpha deletes its cluster, THEN beta's is whole and ACTIVE; then beta deletes its own
    delete(&alpha, &a_id).await;
    assert_eq!(beta.leftovers(&b_id).await, b_has);
    assert_eq!(beta.balancers_left(&b_id).await.len(), 3);
    assert_eq!(beta.record(&b_id).await["status"], "ACTIVE");
    delete(&beta, &b_id).await;
    for (stack, id) in [(&alpha, &a_id), (&beta, &b_id)] {
        let (live, groups, params) = stack.leftovers(id).await;
        assert!(live.is_empty() && groups.is_empty() && params.is_empty());
        assert!(stack.balancers_left(id).await.is_empty());
        stack.assert_calls_allowed_by_template().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_made_before_identities_is_adopted_and_then_deletes_cleanly() {
    let stack = Stack::start(300).await;
    let record = create(&stack, stack::spec("legacy", 1, 1)).await;
    let id = record["id"].as_str().unwrap().to_string();
    let group = record["security_group_id"].as_str().unwrap().to_string();
    let ec2 = stack.ec2_in("us-east-1");
    let nodes = node_ids(&record);
    // GIVEN its resources as a deployment made before identities left them: no deployment tag
    // (and a look-alike someone tagged with the cluster's id)
    let untag = |ids: Vec<String>| {
        ec2.delete_tags()
            .set_resources(Some(ids))
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("mecplane:deployment")
                    .build(),
            )
            .send()
    };
    let mut legacy = nodes.clone();
    legacy.push(group.clone());
    untag(legacy).await.expect("untag");
    let look_alike = run_instance(&ec2, &[("mecplane:cluster", id.as_str())], None).await;
    let before = reconcile(&stack).await;
    assert_eq!(
        before["instances"], 0,
        "not the deployment's until adopted: {before}"
    );

    // WHEN an admin runs infra/adopt.py on the stack's table
    let out = std::process::Command::new(stack::repo_root().join(".venv/bin/python"))
        .arg(stack::repo_root().join("infra/adopt.py"))
        .args([
            "--table",
            &stack.env["MECPLANE_TABLE"],
            "--prefix",
            "mecplane",
        ])
        .args(["--region", "us-east-1", "--endpoint-url", &stack.endpoint()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("run adopt.py");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");

    // THEN what the record names is the deployment's again (the look-alike is not), and the
    // delete leaves nothing of it
    let after = reconcile(&stack).await;
    assert_eq!(after["instances"], 2, "{after}\n{said}");
    assert_eq!(after["plan"]["actions"], json!([]), "{after}");
    delete(&stack, &id).await;
    let (live, groups, params) = stack.leftovers(&id).await;
    assert_eq!(
        live,
        vec![look_alike.clone()],
        "only the look-alike runs on"
    );
    assert!(
        groups.is_empty() && params.is_empty(),
        "{groups:?} {params:?}"
    );
    let tags = ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(&look_alike)
                .build(),
        )
        .send()
        .await
        .expect("describe tags");
    assert!(
        tags.tags()
            .iter()
            .all(|t| t.key() != Some("mecplane:deployment")),
        "adopt.py tags only what the records name"
    );
}
