//! Fleet reconciliation on the local stack, real machines and binaries. On demand
//! (`POST /reconcile`): a healthy cluster is left alone; a worker terminated out of band is
//! planned in a dry run, then replaced and joined, the record back ACTIVE; an orphan instance with
//! the project's tags is removed after its grace and not before. Scheduled: with the gateway
//! firing the schedule every few seconds (and EC2 state-change events), a terminated worker is
//! replaced without anyone asking, and the runs over a healthy fleet made no mutating call.

use std::time::Duration;

use crate::support::stack::{self, node_of, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(300);
/// The orphan grace the test stacks run with.
const ORPHAN_GRACE_SECONDS: u64 = 20;

async fn reconcile(stack: &Stack, dry_run: bool) -> Value {
    let (code, report) = stack
        .api("POST", "/reconcile", Some(&json!({"dry_run": dry_run})))
        .await;
    assert_eq!(code, 200, "{report}");
    report
}

/// Whether an instance is live (not shutting down or terminated) in moto.
async fn is_live(stack: &Stack, instance_id: &str) -> bool {
    let out = stack
        .ec2()
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .any(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated" | "shutting-down")
            )
        })
}

async fn create(stack: &Stack, name: &str, control_planes: u32, workers: u32) -> Value {
    let (code, created) = stack
        .api(
            "POST",
            "/clusters",
            Some(&stack::spec(name, control_planes, workers)),
        )
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_demand_a_lost_worker_is_replaced_and_an_orphan_removed_after_its_grace() {
    let grace = ORPHAN_GRACE_SECONDS.to_string();
    let stack = Stack::start_with(
        300,
        &[("MECPLANE_ORPHAN_GRACE_SECONDS", grace.as_str())],
        &stack::RECONCILE_OFF,
    )
    .await;
    let record = create(&stack, "mended", 1, 2).await;
    let id = record["id"].as_str().unwrap().to_string();

    // A healthy fleet: nothing planned, nothing written.
    let report = reconcile(&stack, false).await;
    assert_eq!(report["plan"]["actions"], json!([]), "{report}");
    assert_eq!(report["records"], 1);
    assert_eq!(stack.record(&id).await["version"], record["version"]);

    // An orphan: an instance with the project's tags and no record.
    let orphan = stack
        .ec2()
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("mecplane:cluster")
                        .value("c-00000000000000ff")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("run the orphan")
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    let orphaned_at = std::time::Instant::now();

    // GIVEN a worker lost out of band
    let lost = node_of(&record, "worker", 1).0;
    stack.kill(&lost).await;

    // WHEN a dry run is asked: the replacement is planned, nothing done
    let dry = reconcile(&stack, true).await;
    let actions = dry["plan"]["actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "replace-node" && a["instance_id"] == lost.as_str()),
        "{dry}"
    );
    assert!(
        !actions.iter().any(|a| a["action"] == "terminate-orphan"),
        "the orphan is younger than its grace: {dry}"
    );
    assert_eq!(dry["outcomes"], json!([]));
    assert_eq!(stack.record(&id).await["status"], "ACTIVE");

    // WHEN it is run for real
    let report = reconcile(&stack, false).await;
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["action"] == "replace-node")
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    assert!(
        outcome["result"].as_str().unwrap().starts_with("done"),
        "{outcome}"
    );

    // THEN a new worker 1 joins and the record is ACTIVE again, the update by the reconcile
    let record = stack
        .wait_record(&id, "the replacement", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    let replacement = node_of(&record, "worker", 1).0;
    assert_ne!(replacement, lost);
    assert!(
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{record}"
    );
    let update = record["updates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (
            update["kind"].as_str(),
            update["status"].as_str(),
            update["created_by"].as_str()
        ),
        (
            Some("replace-node"),
            Some("Successful"),
            Some("mecplane:reconcile")
        ),
        "{update}"
    );
    let (_, events) = stack
        .api("GET", &format!("/clusters/{id}/events"), None)
        .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["stage"] == "reconcile"
                && e["detail"].as_str().unwrap_or_default().contains(&lost)),
        "{events}"
    );
    assert!(
        is_live(&stack, &orphan).await,
        "not removed before its grace"
    );

    // AND the orphan goes once its grace has passed, and nothing else
    let wait = Duration::from_secs(ORPHAN_GRACE_SECONDS + 2).saturating_sub(orphaned_at.elapsed());
    tokio::time::sleep(wait).await;
    let report = reconcile(&stack, false).await;
    let removed: Vec<&Value> = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "terminate-orphan")
        .collect();
    assert_eq!(removed.len(), 1, "{report}");
    assert_eq!(removed[0]["instance_id"], orphan.as_str());
    assert!(!is_live(&stack, &orphan).await);
    assert!(is_live(&stack, &replacement).await);
    stack.assert_calls_allowed_by_template().await;
}

/// The gateway's record of the reconcile runs it started (schedule and EC2 events).
async fn runs(stack: &Stack) -> Vec<Value> {
    let (code, body) = stack.request("GET", "/_local/reconciles", None, &[]).await;
    assert_eq!(code, 200, "{body}");
    body["reconciles"].as_array().cloned().unwrap_or_default()
}

/// The IAM actions the `reconcile` function has used so far.
async fn reconcile_actions(stack: &Stack) -> Vec<String> {
    let (_, body) = stack.request("GET", "/_local/calls", None, &[]).await;
    body["calls"]["reconcile"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_schedule_a_stopped_control_plane_is_replaced_and_a_dead_cluster_only_reported() {
    let stack = Stack::start_with(
        300,
        &[],
        &[
            ("MECPLANE_RECONCILE_INTERVAL_SECONDS", "3"),
            ("MECPLANE_RECONCILE_EC2_EVENTS", "true"),
        ],
    )
    .await;
    let record = create(&stack, "sentinel", 3, 1).await;
    let id = record["id"].as_str().unwrap().to_string();

    // Scheduled runs over the healthy fleet: only reads.
    let active_runs = runs(&stack).await.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs(&stack)
        .await
        .iter()
        .skip(active_runs)
        .filter(|r| r["trigger"] == "schedule" && r["status"] == "succeeded")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            runs(&stack).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let actions = reconcile_actions(&stack).await;
    assert!(!actions.is_empty());
    for action in &actions {
        assert!(
            [
                "ec2:Describe",
                "dynamodb:Query",
                "dynamodb:GetItem",
                "states:Describe",
                "logs:",
                "xray:"
            ]
            .iter()
            .any(|read| action.starts_with(read)),
            "a mutating call over a healthy fleet: {action} in {actions:?}"
        );
    }
    assert_eq!(stack.record(&id).await["version"], record["version"]);

    // GIVEN a control plane stopped out of band
    let stopped = node_of(&record, "control-plane", 1).0;
    stack
        .ec2()
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .expect("stop");

    // THEN, without anyone asking, it is replaced: three Ready control planes again
    let healed = stack
        .wait_record(
            &id,
            "the replacement of the stopped control plane",
            TIMEOUT,
            |r| {
                r["status"] == "ACTIVE"
                    && r["updates"].as_array().is_some_and(|u| {
                        u.iter()
                            .any(|u| u["kind"] == "replace-node" && u["status"] == "Successful")
                    })
            },
        )
        .await;
    let successor = node_of(&healed, "control-plane", 1).0;
    assert_ne!(successor, stopped);
    assert!(
        healed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{healed}"
    );
    assert_eq!(healed["nodes"].as_array().unwrap().len(), 4);
    let update = healed["updates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(update["created_by"], "mecplane:reconcile", "{update}");
    assert!(
        runs(&stack)
            .await
            .iter()
            .any(|r| r["trigger"] == "ec2" && r["instance_id"] == stopped.as_str()),
        "the stop sent its state-change event"
    );

    // GIVEN every node of the cluster killed at once
    for n in healed["nodes"].as_array().unwrap() {
        stack
            .ec2()
            .terminate_instances()
            .instance_ids(n["instance_id"].as_str().unwrap())
            .send()
            .await
            .expect("terminate");
    }

    // THEN no remediation: DEGRADED, reported, no new update started
    let degraded = stack
        .wait_record(&id, "DEGRADED", TIMEOUT, |r| r["status"] == "DEGRADED")
        .await;
    assert_eq!(
        degraded["degraded"]["nodes"].as_array().unwrap().len(),
        4,
        "{degraded}"
    );
    assert!(
        degraded["degraded"]["reason"]
            .as_str()
            .unwrap()
            .contains("not remediated"),
        "{degraded}"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    let later = stack.record(&id).await;
    assert_eq!(
        later["updates"].as_array().unwrap().len(),
        healed["updates"].as_array().unwrap().len()
    );
    assert_eq!(later["status"], "DEGRADED");
    stack.assert_calls_allowed_by_template().await;
}
