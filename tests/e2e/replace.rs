//! `POST /clusters/{id}/nodes/{instance id}/replace` on the local stack: in a 3+1 cluster, a
//! terminated worker is replaced (removed from the cluster, a new worker with its index joined),
//! then a dead first control plane is replaced: removed from dqlite with `--force` by another
//! control plane before its successor joins through that one, so the cluster never loses quorum.
//! The answers a client sees for bad requests are checked on the way.

use std::time::Duration;

use crate::support::stack::{self, node_of, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(300);

/// POSTs the replacement, expects 202 with the update's Location, waits until it ends; answers
/// the record and the update.
async fn replace(stack: &Stack, id: &str, instance_id: &str) -> (Value, Value) {
    let path = format!("/clusters/{id}/nodes/{instance_id}/replace");
    let (code, accepted) = stack.api("POST", &path, Some(&json!({}))).await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["status"], "UPDATING", "{accepted}");
    let update_id = accepted["updates"]
        .as_array()
        .and_then(|u| u.last())
        .and_then(|u| u["id"].as_str())
        .unwrap()
        .to_string();
    // One change at a time.
    let (code, busy) = stack.api("POST", &path, Some(&json!({}))).await;
    assert_eq!(
        (code, busy["error"]["code"].as_str()),
        (409, Some("ClusterBusy")),
        "{busy}"
    );
    let record = stack
        .wait_record(id, "the replacement to end", TIMEOUT, |r| {
            r["status"] != "UPDATING"
        })
        .await;
    let (_, update) = stack
        .api("GET", &format!("/clusters/{id}/updates/{update_id}"), None)
        .await;
    (record, update)
}

/// The simulated cluster's members' IPs, and its datastore's state.
async fn members(stack: &Stack, name: &str) -> (Vec<String>, Value) {
    let state = stack.sim_datastore(name).await;
    let mut ips: Vec<String> = state["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["ip"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    (ips, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_worker_then_a_dead_first_control_plane_are_replaced() {
    let stack = Stack::start(300).await;
    let name = "phoenix";
    let (code, created) = stack
        .api("POST", "/clusters", Some(&stack::spec(name, 3, 1)))
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let record = stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;

    // Bad requests: a node the cluster does not have is 404.
    let (code, body) = stack
        .api(
            "POST",
            &format!("/clusters/{id}/nodes/i-0000000000000000/replace"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (404, Some("NotFound")),
        "{body}"
    );

    // GIVEN the worker's instance is lost
    let (worker, worker_ip) = node_of(&record, "worker", 0);
    stack.kill(&worker).await;

    // WHEN it is replaced
    let (record, update) = replace(&stack, &id, &worker).await;

    // THEN a new worker with index 0 is a Ready member, the old one is gone from the cluster
    assert_eq!(update["status"], "Successful", "{update}\n{}", stack.logs());
    assert_eq!(update["kind"], "replace-node");
    assert_eq!(record["status"], "ACTIVE", "{record}");
    let (new_worker, new_ip) = node_of(&record, "worker", 0);
    assert_ne!(
        new_worker,
        worker,
        "{record}\n{}",
        stack.events_text(&id).await
    );
    assert_eq!(record["nodes"].as_array().unwrap().len(), 4, "{record}");
    assert!(
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{record}"
    );
    let (ips, _) = members(&stack, name).await;
    assert_eq!(ips.len(), 4, "{ips:?}");
    assert!(ips.contains(&new_ip), "{ips:?}");
    if new_ip != worker_ip {
        assert!(!ips.contains(&worker_ip), "{ips:?}");
    }

    // GIVEN the first control plane dies
    let (first, first_ip) = node_of(&record, "control-plane", 0);
    stack.kill(&first).await;

    // WHEN it is replaced
    let (record, update) = replace(&stack, &id, &first).await;

    // THEN another control plane removed it from dqlite with --force before its successor joined
    // (through that control plane), and the cluster has three Ready control planes again
    assert_eq!(update["status"], "Successful", "{update}\n{}", stack.logs());
    assert_eq!(record["status"], "ACTIVE", "{record}");
    let (new_first, _) = node_of(&record, "control-plane", 0);
    assert_ne!(new_first, first);
    assert!(
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{record}"
    );
    let (ips, cluster) = members(&stack, name).await;
    assert_eq!(ips.len(), 4, "{cluster}");
    let removals = cluster["removals_log"].as_array().unwrap();
    let removal = removals
        .iter()
        .find(|r| r["ip"] == first_ip.as_str() && r["result"] == "removed")
        .unwrap_or_else(|| panic!("no removal of {first_ip}: {cluster}"));
    assert!(
        removal["flags"]
            .as_str()
            .unwrap_or_default()
            .contains("force"),
        "{removal}"
    );
    assert!(
        !removals.iter().any(|r| r["reason"] == "no-quorum"),
        "quorum was never at risk: {cluster}"
    );
    let events = stack.events_text(&id).await;
    for said in [
        "remove-workers",
        "join-control-planes",
        "replace control-plane 0",
    ] {
        assert!(events.contains(said), "no {said} in {events}");
    }
    stack.assert_calls_allowed_by_template().await;
}
