//! Every stage is idempotent, proven on the real function binaries against the local stack: the
//! create and delete pipelines are driven by hand through the Lambda Invoke API in the state
//! machines' order, and every invocation is made twice with the same input (as a Step Functions
//! retry after a lost answer would). The result must be what one run gives: one record, one
//! instance per node, one command per step, one join per node, and nothing left after the delete.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::stack::{fast_timing, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(180);

/// Invokes a function once and returns its result; a function error fails the test.
async fn invoke(stack: &Stack, function: &str, payload: &Value) -> Value {
    let path = format!("/2015-03-31/functions/{function}/invocations");
    let (status, out) = stack.request("POST", &path, Some(payload), &[]).await;
    assert_eq!(status, 200, "{function}: {out}");
    assert!(
        out.get("errorType").is_none(),
        "{function} failed: {out}\n{}",
        stack.logs()
    );
    out
}

/// Invokes a function twice with the same input; returns the second result.
async fn twice(stack: &Stack, function: &str, payload: &Value) -> Value {
    invoke(stack, function, payload).await;
    invoke(stack, function, payload).await
}

/// A polling stage: each poll is invoked twice, until the stage says it is done.
async fn until_done(stack: &Stack, function: &str, mut state: Value) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        state = twice(stack, function, &state).await;
        if state["poll"]["done"] == true {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{function} never finished: {state}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stage_run_twice_gives_one_cluster_and_one_teardown() {
    let stack = Stack::start(300).await;
    let execution = "arn:aws:states:us-east-1:123456789012:execution:by-hand:twice";

    // Create: register → … → activate, every invocation twice.
    let spec = json!({"name": "twice", "workers": 1, "api_allowed_cidrs": ["203.0.113.0/24"]});
    let register =
        json!({"input": {"spec": spec, "timing": fast_timing()}, "execution_arn": execution});
    let first = invoke(&stack, "register", &register).await;
    let mut state = invoke(&stack, "register", &register).await;
    assert_eq!(first["cluster_id"], state["cluster_id"], "one record");
    let id = state["cluster_id"].as_str().unwrap().to_string();
    for stage in ["resolve-ami", "security-group"] {
        state = twice(&stack, stage, &state).await;
    }
    for role in ["control-plane", "worker"] {
        state["target"] = json!(role);
        state = twice(&stack, "launch-nodes", &state).await;
        state = until_done(&stack, "await-nodes", state).await;
        if role == "control-plane" {
            state = until_done(&stack, "bootstrap", state).await;
        }
        state = until_done(&stack, "join-nodes", state).await;
    }
    state = until_done(&stack, "verify", state).await;
    state = until_done(&stack, "store-kubeconfig", state).await;
    let output = twice(&stack, "activate", &state).await;
    assert_eq!(output["cluster_id"], id);

    // THEN one ACTIVE record with two nodes, two instances, and one of each command
    let record = stack.record(&id).await;
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["nodes"].as_array().unwrap().len(), 2, "{record}");
    let (instances, groups, params) = stack.leftovers(&id).await;
    assert_eq!(instances.len(), 2, "one instance per node: {instances:?}");
    assert_eq!(groups.len(), 1, "one security group: {groups:?}");
    assert_eq!(
        params.len(),
        1,
        "the kubeconfig (no join token is stored): {params:?}"
    );
    for instance in &instances {
        let sent = stack
            .ssm()
            .list_command_invocations()
            .instance_id(instance)
            .send()
            .await
            .expect("ListCommandInvocations");
        let mut keys: HashMap<String, usize> = HashMap::new();
        for inv in sent.command_invocations() {
            *keys
                .entry(inv.comment().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        assert!(!keys.is_empty(), "{instance} ran nothing");
        assert!(
            keys.values().all(|n| *n == 1),
            "a command was sent twice to {instance}: {keys:?}"
        );
    }
    // AND the worker joined once (the join log lives on the first control plane)
    let log = stack.joins_log().await;
    let joined: Vec<&Value> = log.iter().filter(|e| e["result"] == "joined").collect();
    assert_eq!(joined.len(), 1, "{log:#?}");
    assert_eq!(joined[0]["role"], "worker");

    // Delete: begin-delete → … → finish-delete, every invocation twice.
    let begin = json!({"input": {"id": id, "timing": fast_timing()}, "execution_arn": format!("{execution}-delete")});
    let mut teardown = twice(&stack, "begin-delete", &begin).await;
    teardown = twice(&stack, "terminate-nodes", &teardown).await;
    teardown = until_done(&stack, "await-terminated", teardown).await;
    for stage in [
        "delete-security-group",
        "delete-parameters",
        "finish-delete",
    ] {
        teardown = twice(&stack, stage, &teardown).await;
    }

    // THEN DELETED, nothing left, and the functions called only what their roles allow
    assert_eq!(stack.record(&id).await["status"], "DELETED");
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    stack.assert_calls_allowed_by_template().await;
}
