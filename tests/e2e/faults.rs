//! Failure paths end to end: each fault is injected into the node simulator (or EC2), the create
//! runs on the real state machine, and the test checks what the user sees (the execution's named
//! error, the record's stage and reason) and what is left behind (nothing, unless the spec says
//! `retain_on_failure`).

use std::time::Duration;

use crate::support::stack::{fast_timing, Stack, CLUSTER_REGIONS};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(240);

struct Case {
    name: &'static str,
    fault: Value,
    workers: u32,
    /// Where the cluster lives: rollback and delete must work outside the control plane's region.
    region: &'static str,
    retain: bool,
    error: &'static str,
    stage: &'static str,
    reason_contains: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "f-offline",
            fault: json!({"cluster_name": "f-offline", "role": "worker", "fault": "agent_offline"}),
            workers: 1,
            region: CLUSTER_REGIONS[0],
            retain: false,
            error: "NodesNotReady",
            stage: "await-workers",
            reason_contains: "SSM agent not online",
        },
        Case {
            name: "f-bootstrap",
            fault: json!({"cluster_name": "f-bootstrap", "fault": "command_fails", "script": "bootstrap"}),
            workers: 0,
            region: CLUSTER_REGIONS[1],
            retain: false,
            error: "CommandFailed",
            stage: "bootstrap",
            reason_contains: "bootstrap on i-",
        },
        Case {
            name: "f-token",
            fault: json!({"cluster_name": "f-token", "role": "control-plane", "fault": "expire_tokens"}),
            workers: 1,
            region: CLUSTER_REGIONS[0],
            retain: false,
            error: "CommandFailed",
            stage: "join-workers",
            reason_contains: "join on i-",
        },
        Case {
            name: "f-capacity",
            fault: json!({"cluster_name": "f-capacity", "role": "worker", "fault": "insufficient_capacity"}),
            workers: 2,
            region: CLUSTER_REGIONS[0],
            retain: false,
            error: "InsufficientCapacity",
            stage: "launch-workers",
            reason_contains: "",
        },
        Case {
            name: "f-terminated",
            fault: json!({"cluster_name": "f-terminated", "role": "control-plane", "fault": "terminate_during_command", "script": "bootstrap"}),
            workers: 0,
            region: CLUSTER_REGIONS[0],
            retain: false,
            error: "InstanceTerminated",
            stage: "bootstrap",
            reason_contains: "terminated",
        },
        Case {
            name: "f-retained",
            fault: json!({"cluster_name": "f-retained", "fault": "command_fails", "script": "bootstrap"}),
            workers: 1,
            region: CLUSTER_REGIONS[1],
            retain: true,
            error: "CommandFailed",
            stage: "bootstrap",
            reason_contains: "bootstrap on i-",
        },
        // Retained after the kubeconfig's one-time transport key was stored: the key goes all
        // the same.
        Case {
            name: "f-keyleft",
            fault: json!({"cluster_name": "f-keyleft", "fault": "command_fails", "script": "kubeconfig"}),
            workers: 0,
            region: CLUSTER_REGIONS[0],
            retain: true,
            error: "CommandFailed",
            stage: "store-kubeconfig",
            reason_contains: "kubeconfig on i-",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_fails_named_and_leaves_nothing_behind() {
    let stack = Stack::start(300).await;
    let mut timing = fast_timing();
    timing["nodes_timeout_seconds"] = json!(8);

    // GIVEN one fault per cluster, and every create started from the console with just a spec
    let mut started = Vec::new();
    for case in cases() {
        stack.fault(case.fault.clone()).await;
        let spec = json!({"name": case.name, "workers": case.workers, "region": case.region,
                          "retain_on_failure": case.retain});
        let arn = stack
            .start_create(case.name, json!({"spec": spec, "timing": timing}))
            .await;
        started.push((case, arn));
    }

    for (case, arn) in started {
        // WHEN its execution ends
        let ended = stack.wait_execution(&arn, TIMEOUT).await;

        // THEN it failed with the named error, and the record says where and why
        assert_eq!(ended.status, "FAILED", "{}: {ended:?}", case.name);
        assert_eq!(
            ended.error.as_deref(),
            Some(case.error),
            "{}: {ended:?}\n{}",
            case.name,
            stack.logs()
        );
        let record = stack.record(case.name).await;
        assert_eq!(record["status"], "FAILED", "{}: {record}", case.name);
        assert_eq!(
            record["failure"]["stage"], case.stage,
            "{}: {record}",
            case.name
        );
        assert_eq!(record["failure"]["error"], case.error, "{}", case.name);
        let reason = record["failure"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(case.reason_contains),
            "{}: reason {reason:?}",
            case.name
        );
        let id = record["id"].as_str().unwrap().to_string();

        // AND nothing is left behind, unless the spec asked to keep it
        let (instances, groups, params) = stack.leftovers(&id).await;
        if case.retain {
            // The control plane that failed is kept (f-retained: workers launch only after a
            // bootstrap succeeds, so there are none; f-keyleft asks for none).
            assert_eq!(instances.len(), 1, "{}: instances retained", case.name);
            assert_eq!(groups.len(), 1, "{}: security group retained", case.name);
            // No join token is ever stored, and the private half of the kubeconfig's one-time
            // transport key goes even when the rest is retained.
            assert!(
                !params
                    .iter()
                    .any(|p| p.ends_with("/join-token") || p.ends_with("/transport-key")),
                "{}: a token or transport key left behind: {params:?}",
                case.name
            );
            // A FAILED cluster can be deleted, and then nothing is left.
            let del = stack
                .start_delete(
                    &format!("delete-{}", case.name),
                    json!({"name": case.name, "timing": fast_timing()}),
                )
                .await;
            assert_eq!(
                stack.wait_execution(&del, TIMEOUT).await.status,
                "SUCCEEDED"
            );
            assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
        } else {
            assert_eq!(
                (instances, groups, params),
                (vec![], vec![], vec![]),
                "{}: leftovers",
                case.name
            );
        }
    }
    // The failure and rollback paths call only what the functions' roles allow.
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_console_input_fails_validation_and_registers_nothing() {
    let stack = Stack::start(300).await;
    let arn = stack
        .start_create("bad-input", json!({"name": "Bad_Name", "workers": 2}))
        .await;
    let ended = stack.wait_execution(&arn, TIMEOUT).await;
    assert_eq!(ended.status, "FAILED");
    assert_eq!(ended.error.as_deref(), Some("ValidationError"));
    assert!(ended.cause.unwrap_or_default().contains("name"));
    let (status, list) = stack.api("GET", "/clusters", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["clusters"], json!([]));

    // A subnet EC2 does not know is refused at the request, naming the entry, nothing registered
    let unknown_subnet =
        json!({"name": "f-subnet", "workers": 1, "subnet_ids": ["subnet-0123456789abcdef0"]});
    let (code, refused) = stack.api("POST", "/clusters", Some(&unknown_subnet)).await;
    assert_eq!(
        (code, refused["error"]["field"].as_str()),
        (422, Some("subnet_ids[0]")),
        "{refused}"
    );
    let (_, list) = stack.api("GET", "/clusters", None).await;
    assert_eq!(list["clusters"], json!([]));
    // AND started from the console (no API in between, as when a subnet goes after the request),
    // the create fails in security-group before anything exists, naming the entry
    let arn = stack.start_create("f-subnet", unknown_subnet).await;
    stack.wait_execution(&arn, TIMEOUT).await;
    let id = stack.record("f-subnet").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let record = wait_status(&stack, &id, "FAILED").await;
    assert_eq!(
        (
            record["failure"]["stage"].as_str(),
            record["failure"]["error"].as_str()
        ),
        (Some("security-group"), Some("ValidationError")),
        "{record}"
    );
    let reason = record["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("subnet_ids[0]") && reason.contains("no subnet subnet-0123456789abcdef0"),
        "{reason}"
    );
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_stopped_by_hand_can_be_deleted_and_leaves_nothing() {
    // Agents that take a minute to come online keep the create waiting on its control plane.
    let stack = Stack::start(60_000).await;

    // GIVEN its create execution stopped from the console, with an instance already launched
    let (id, _) = stack.create_stopped_while_awaiting_nodes("f-stopped").await;
    assert_eq!(stack.leftovers(&id).await.0.len(), 1, "one control plane");
    assert_eq!(stack.record(&id).await["status"], "CREATING");

    // WHEN the user deletes it
    let (code, deleting) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;

    // THEN the delete is accepted, the record says what happened to the create, and nothing is left
    assert_eq!(code, 202, "{deleting}");
    assert_eq!(deleting["status"], "DELETING");
    assert_eq!(deleting["failure"]["error"], "CreateInterrupted");
    assert!(deleting["failure"]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("ABORTED"));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stack.record(&id).await["status"] != "DELETED" {
        assert!(std::time::Instant::now() < deadline, "{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cleanup_that_cannot_finish_is_said_and_a_delete_finishes_it() {
    let stack = Stack::start(300).await;
    // GIVEN a bootstrap that fails, and instances that refuse to be terminated
    stack
        .fault(
            json!({"cluster_name": "f-cleanup", "fault": "command_fails", "script": "bootstrap"}),
        )
        .await;
    stack
        .fault(json!({"cluster_name": "f-cleanup", "fault": "terminate_fails"}))
        .await;
    let arn = stack
        .start_create(
            "f-cleanup",
            json!({"spec": {"name": "f-cleanup"}, "timing": fast_timing()}),
        )
        .await;

    // WHEN the create fails and its cleanup cannot finish
    let ended = stack.wait_execution(&arn, TIMEOUT).await;

    // THEN the execution reports the original error, and the record says the cleanup is
    // incomplete and what to do, instead of claiming it removed everything
    assert_eq!(ended.status, "FAILED");
    assert_eq!(ended.error.as_deref(), Some("CommandFailed"), "{ended:?}");
    let record = stack.record("f-cleanup").await;
    assert_eq!(record["status"], "FAILED");
    assert_eq!(record["failure"]["error"], "CommandFailed");
    let reason = record["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cleanup incomplete") && reason.contains("UnauthorizedOperation"),
        "{reason}"
    );
    let id = record["id"].as_str().unwrap().to_string();
    let events = stack.events_text(&id).await;
    // AND EC2's refusal named the caller's role ARN and the account: neither reaches the record,
    // the API or the execution history (the simulator words it as EC2 does)
    let history = stack
        .sfn()
        .get_execution_history()
        .execution_arn(&arn)
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let (_, shown) = stack.api("GET", &format!("/clusters/{id}"), None).await;
    // (the record and the history name the project's own executions and functions by ARN: that
    // is theirs to show; what may not show is the refusal's caller, account and details)
    for (what, text) in [
        ("failure", record["failure"].to_string()),
        ("API failure", shown["failure"].to_string()),
        ("events", events.clone()),
    ] {
        for leak in ["123456789012", "assumed-role", "arn:aws:"] {
            assert!(!text.contains(leak), "{leak} in the {what}: {text}");
        }
    }
    let history = format!("{:?}", history.events());
    for leak in ["assumed-role", "arn:aws:sts", "instance/i-"] {
        assert!(!history.contains(leak), "{leak} in the history: {history}");
    }
    assert!(
        events.contains("delete the cluster to remove the rest"),
        "{events}"
    );
    let (instances, groups, _) = stack.leftovers(&id).await;
    assert_eq!(
        (instances.len(), groups.len()),
        (1, 1),
        "what is left is real"
    );

    // AND once terminating works again, a delete removes the rest
    let (code, body) = stack.request("DELETE", "/_sim/faults", None, &[]).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(code, 202, "{body}");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stack.record(&id).await["status"] != "DELETED" {
        assert!(std::time::Instant::now() < deadline, "{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    stack.assert_calls_allowed_by_template().await;
}

/// Polls the record until its status is `want`.
async fn wait_status(stack: &Stack, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let record = stack.record(id).await;
        if record["status"] == want {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} still {} (want {want}): {record}\n{}",
            record["status"],
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_delete_is_resumed_by_the_next_delete_until_nothing_is_left() {
    let stack = Stack::start(300).await;
    let (status, created) = stack
        .api(
            "POST",
            "/clusters",
            Some(&json!({"name": "f-resume", "workers": 0})),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    wait_status(&stack, &id, "ACTIVE").await;

    // GIVEN a delete that fails: the instances refuse to be terminated
    stack
        .fault(json!({"cluster_name": "f-resume", "fault": "terminate_fails"}))
        .await;
    let (code, deleting) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(code, 202, "{deleting}");
    let first = deleting["delete_execution_arn"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.ends_with(&format!(":{id}-delete")), "{first}");
    let ended = stack.wait_execution(&first, TIMEOUT).await;
    assert_eq!(ended.status, "FAILED", "{ended:?}");
    assert_eq!(stack.record(&id).await["status"], "DELETING");
    assert_eq!(
        stack.leftovers(&id).await.0.len(),
        1,
        "the instance is left"
    );

    // WHEN terminating works again and the cluster is deleted again
    let (code, body) = stack.request("DELETE", "/_sim/faults", None, &[]).await;
    assert_eq!(code, 200, "{body}");
    let (code, resumed) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;

    // THEN a new delete execution resumes the teardown, the history says so, and nothing is left
    assert_eq!(code, 202, "{resumed}");
    assert_eq!(resumed["status"], "DELETING");
    assert_eq!(resumed["delete_attempt"], 2, "{resumed}");
    let second = resumed["delete_execution_arn"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(second.ends_with(&format!(":{id}-delete-2")), "{second}");
    assert_eq!(
        stack.wait_execution(&second, TIMEOUT).await.status,
        "SUCCEEDED",
        "{}",
        stack.logs()
    );
    wait_status(&stack, &id, "DELETED").await;
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    let events = stack.events_text(&id).await;
    assert!(events.contains("delete resumed"), "{events}");
    // Deleting it again is the same answer, and starts nothing.
    let (code, done) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!((code, done["status"].as_str()), (202, Some("DELETED")));
    assert_eq!(done["delete_execution_arn"].as_str(), Some(second.as_str()));
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_inside_mark_failed_still_runs_the_cleanup() {
    // Agents that come online after a few seconds keep the create waiting on its control plane.
    let stack = Stack::start(4_000).await;
    stack
        .fault(json!({"cluster_name": "f-unrecorded", "fault": "command_fails", "script": "bootstrap"}))
        .await;
    let (status, created) = stack
        .api(
            "POST",
            "/clusters",
            Some(&json!({"name": "f-unrecorded", "workers": 0})),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let arn = created["execution_arn"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stack.record(&id).await["stage"] != "await-control-planes" {
        assert!(std::time::Instant::now() < deadline, "{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // GIVEN a record the create cannot mark FAILED (another writer moved it where FAILED cannot
    // follow, standing in for a table that refuses MarkFailed's write)
    let store =
        mecplane::aws::dynamodb::Dynamo::new(&stack.sdk, stack.env["MECPLANE_TABLE"].clone());
    let mut record = mecplane::ports::ClusterStore::get(&store, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, mecplane::record::Status::Creating);
    record.status = mecplane::record::Status::Active;
    mecplane::ports::ClusterStore::update(&store, &record)
        .await
        .expect("record moved to ACTIVE");

    // WHEN the bootstrap fails and MarkFailed fails too
    let ended = stack.wait_execution(&arn, TIMEOUT).await;

    // THEN the execution still fails with the error that failed the create, and the cleanup ran:
    // nothing is left
    assert_eq!(ended.status, "FAILED", "{ended:?}");
    assert_eq!(ended.error.as_deref(), Some("CommandFailed"), "{ended:?}");
    let record = stack.record(&id).await;
    assert_eq!(
        record["status"], "ACTIVE",
        "MarkFailed could not write: {record}"
    );
    assert_eq!(record["failure"], Value::Null, "{record}");
    assert_eq!(
        stack.leftovers(&id).await,
        (vec![], vec![], vec![]),
        "{}",
        stack.logs()
    );
    stack.assert_calls_allowed_by_template().await;
}
