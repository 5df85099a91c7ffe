//! Changes to a live cluster end to end: the update state machine scales a 1+2 cluster to 1+4,
//! then to 1+1 (the removed workers drained, gone from the cluster, their instances terminated),
//! and a scale up whose joins fail leaves the cluster ACTIVE with the update Failed and nothing
//! half-launched. The record is prepared as the API's `PATCH /clusters/{id}` prepares it
//! (`UPDATING`, an update `InProgress`) and the execution started with the API's name and input.

use std::time::Duration;

use crate::support::stack::{self, fast_timing, Stack};
use mecplane::aws::dynamodb::Dynamo;
use mecplane::ports::ClusterStore;
use mecplane::record::{ClusterRecord, NodeState, Role, Status, Update, UpdateKind, UpdateStatus};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(240);

fn store(stack: &Stack) -> Dynamo {
    Dynamo::new(&stack.sdk, stack.env["MECPLANE_TABLE"].clone())
}

async fn load(stack: &Stack, id: &str) -> ClusterRecord {
    store(stack).get(id).await.unwrap().expect("record")
}

/// What the API does for `PATCH {"workers": to}`: the record `UPDATING` with a scale update
/// `InProgress`, then the update execution `<id>-update-<update id>`. Answers the execution ARN
/// and the update id.
async fn start_scale(stack: &Stack, id: &str, to: u32) -> (String, String) {
    let mut record = load(stack, id).await;
    assert_eq!(record.status, Status::Active, "{record:?}");
    let update_id = format!("u-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let from = record.spec.workers;
    let name = format!("{id}-update-{update_id}");
    let arn = format!(
        "{}:{name}",
        stack
            .update_machine()
            .replacen(":stateMachine:", ":execution:", 1)
    );
    record.status = Status::Updating;
    record.updates.push(Update {
        id: update_id.clone(),
        kind: UpdateKind::Scale,
        params: json!({"workers": {"from": from, "to": to}}),
        status: UpdateStatus::InProgress,
        execution_arn: Some(arn),
        created_by: None,
        started_at: mecplane::clock::now_rfc3339(),
        finished_at: None,
        failure: None,
    });
    store(stack).update(&record).await.expect("record UPDATING");
    let input = json!({
        "cluster_id": id,
        "update_id": update_id,
        "region": record.spec.region,
        "timing": fast_timing(),
    });
    let started = stack
        .sfn()
        .start_execution()
        .state_machine_arn(stack.update_machine())
        .name(name)
        .input(input.to_string())
        .send()
        .await
        .expect("start update")
        .execution_arn;
    (started, update_id)
}

/// The live (not terminated) instances tagged for the cluster in `region`, by instance id.
async fn live_instances(stack: &Stack, region: &str, id: &str) -> Vec<String> {
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("tag:mecplane:cluster")
        .values(id)
        .build();
    let found = stack
        .ec2_in(region)
        .describe_instances()
        .filters(filter)
        .max_results(1000)
        .send()
        .await
        .expect("describe instances");
    let mut live: Vec<String> = found
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    live.sort();
    live
}

fn update<'a>(record: &'a ClusterRecord, update_id: &str) -> &'a Update {
    record
        .updates
        .iter()
        .find(|u| u.id == update_id)
        .expect("the update")
}

fn workers(record: &ClusterRecord) -> Vec<&mecplane::record::Node> {
    record
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_one_plus_two_to_four_then_to_one_then_a_failed_scale_up() {
    let stack = Stack::start(300).await;

    // GIVEN an ACTIVE 1+2 cluster outside the control plane's region
    let region = stack::CLUSTER_REGIONS[1];
    let name = "up-down";
    let mut spec = stack::spec(name, 1, 2);
    spec["region"] = json!(region);
    let (status, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let ended = stack
        .wait_execution(created["execution_arn"].as_str().unwrap(), TIMEOUT)
        .await;
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());

    // WHEN it is scaled to 1+4
    let (arn, up) = start_scale(&stack, &id, 4).await;
    let ended = stack.wait_execution(&arn, TIMEOUT).await;

    // THEN the record is ACTIVE with four Ready workers at indexes 0..3, the update Successful
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());
    let output = ended.output.expect("output");
    assert_eq!(
        (output["workers"].as_u64(), output["nodes"].as_u64()),
        (Some(4), Some(5))
    );
    let record = load(&stack, &id).await;
    assert_eq!(record.status, Status::Active);
    assert_eq!(record.spec.workers, 4);
    assert_eq!(record.nodes.len(), 5, "{record:?}");
    assert!(
        record.nodes.iter().all(|n| n.state == NodeState::Ready),
        "{record:?}"
    );
    let mut indexes: Vec<u32> = workers(&record).iter().map(|n| n.index).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3]);
    let done = update(&record, &up);
    assert_eq!(done.status, UpdateStatus::Successful);
    assert!(done.finished_at.is_some() && done.failure.is_none());
    assert_eq!(live_instances(&stack, region, &id).await.len(), 5);
    let cluster = stack.sim_datastore(name).await;
    assert_eq!(cluster["members"].as_array().unwrap().len(), 5, "{cluster}");

    // WHEN it is scaled down to 1+1
    let before = record.clone();
    let (arn, down) = start_scale(&stack, &id, 1).await;
    let ended = stack.wait_execution(&arn, TIMEOUT).await;

    // THEN the highest-index workers were drained, removed from the cluster and terminated
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());
    let record = load(&stack, &id).await;
    assert_eq!(record.status, Status::Active);
    assert_eq!(record.spec.workers, 1);
    assert_eq!(update(&record, &down).status, UpdateStatus::Successful);
    let kept: Vec<_> = workers(&record);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].index, 0);
    let removed: Vec<_> = workers(&before)
        .into_iter()
        .filter(|n| n.index > 0)
        .collect();
    assert_eq!(removed.len(), 3);
    let live = live_instances(&stack, region, &id).await;
    assert_eq!(live.len(), 2, "{live:?}");
    for n in &removed {
        assert!(
            !live.contains(&n.instance_id),
            "{} still runs",
            n.instance_id
        );
    }
    let cluster = stack.sim_datastore(name).await;
    let members = cluster["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{cluster}");
    let outputs = stack.command_outputs().await.join("\n");
    for n in &removed {
        let ip = n.private_ip.as_deref().unwrap();
        assert!(
            !members.iter().any(|m| m["ip"] == ip),
            "{ip} still a member"
        );
        let removal = cluster["removals_log"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ip"] == ip && r["result"] == "removed")
            .unwrap_or_else(|| panic!("no removal of {ip}: {cluster}"));
        let hostname = removal["hostname"].as_str().unwrap();
        assert!(
            outputs.contains(&format!("node/{hostname} drained")),
            "{hostname} was not drained"
        );
    }
    let events = stack.events_text(&id).await;
    for said in [
        "begin-update",
        "remove-workers",
        "finish-update",
        "workers 4 -> 1",
    ] {
        assert!(events.contains(said), "no {said} in {events}");
    }

    // WHEN a scale up to 1+2 fails: the new worker's join fails
    stack
        .fault(json!({"cluster_name": name, "role": "worker", "index": 1, "fault": "command_fails", "script": "join"}))
        .await;
    let (arn, failed) = start_scale(&stack, &id, 2).await;
    let ended = stack.wait_execution(&arn, TIMEOUT).await;

    // THEN the execution fails with a named error, the cluster is ACTIVE as it was, the update
    // Failed with the reason, and the new worker is terminated
    assert_eq!(ended.status, "FAILED", "{ended:?}");
    assert_eq!(ended.error.as_deref(), Some("CommandFailed"), "{ended:?}");
    let record = load(&stack, &id).await;
    assert_eq!(record.status, Status::Active);
    assert_eq!(record.spec.workers, 1);
    assert_eq!(record.nodes.len(), 2, "{record:?}");
    let u = update(&record, &failed);
    assert_eq!(u.status, UpdateStatus::Failed);
    assert!(u.finished_at.is_some());
    let failure = u.failure.clone().expect("failure");
    assert_eq!(failure.stage, "join-workers");
    assert_eq!(failure.error, "CommandFailed");
    assert!(failure.reason.contains("join on i-"), "{failure:?}");
    assert!(!failure.reason.contains("arn:aws"), "{failure:?}");
    assert_eq!(live_instances(&stack, region, &id).await, live);
    stack.assert_calls_allowed_by_template().await;
}
