//! Upgrades and add-on changes through `PATCH /clusters/{id}` on the local stack, run by the real
//! update state machine on simulated MicroK8s nodes: a 3+2 cluster on 1.31/stable is upgraded to
//! 1.32/stable with the refresh failing on the second worker (the rollout stops there: the
//! cluster ACTIVE, the update Failed naming the node, the nodes done stay upgraded, the failed one
//! back in service on its old version); the same PATCH again finishes the rollout, refreshing only
//! the node left (control planes first, one node at a time); then an add-on with arguments is
//! enabled and one disabled.

use std::time::Duration;

use crate::support::stack::{node_of, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(300);

/// PATCHes `body`, expects 202, waits until the update ends; answers the record and the update.
async fn change(stack: &Stack, id: &str, body: Value) -> (Value, Value) {
    let (code, accepted) = stack
        .api("PATCH", &format!("/clusters/{id}"), Some(&body))
        .await;
    assert_eq!(code, 202, "{body}: {accepted}");
    let update_id = accepted["updates"]
        .as_array()
        .and_then(|u| u.last())
        .and_then(|u| u["id"].as_str())
        .expect("the update")
        .to_string();
    let record = stack
        .wait_record(id, "the update to end", TIMEOUT, |r| {
            r["status"] != "UPDATING"
        })
        .await;
    let (code, update) = stack
        .api("GET", &format!("/clusters/{id}/updates/{update_id}"), None)
        .await;
    assert_eq!(code, 200, "{update}");
    (record, update)
}

/// Each simulated node's installed channel, by instance id.
async fn channels(stack: &Stack, name: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = stack
        .sim_instances()
        .await
        .into_iter()
        .filter(|i| i["cluster_name"] == name)
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap_or_default().to_string(),
                i["state"]["installed_channel"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_stops_at_a_failed_node_resumes_then_addons_change() {
    let stack = Stack::start(300).await;

    // GIVEN an ACTIVE 3+2 cluster on 1.31/stable with dns, over three subnets in three zones
    let name = "rolling";
    let (mut spec, subnets) = stack.spec_across_zones(name, 3, 2, 3).await;
    spec["microk8s_channel"] = json!("1.31/stable");
    spec["addons"] = json!(["dns"]);
    let (code, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let record = stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    let second_worker = node_of(&record, "worker", 1).0;
    // control planes one per zone, in the subnets' order; workers round-robin from the first
    let zone_of = |role: &str, index: u64| {
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["role"] == role && n["index"] == index)
            .and_then(|n| n["zone"].as_str())
            .unwrap_or_else(|| panic!("{role} {index} has no zone: {record}"))
            .to_string()
    };
    let zones: Vec<String> = subnets.iter().map(|(_, z)| z.clone()).collect();
    assert_eq!(
        [0, 1, 2].map(|i| zone_of("control-plane", i)).to_vec(),
        zones,
        "{record}"
    );
    assert_eq!(
        [0, 1].map(|i| zone_of("worker", i)).to_vec(),
        zones[..2].to_vec()
    );
    // the subnets' zones were looked up (type, opt-in, the instance type offered) before the group
    let placed = stack
        .events(&id)
        .await
        .iter()
        .find(|e| e["stage"] == "security-group" && e["phase"] == "finished")
        .and_then(|e| e["detail"].as_str())
        .unwrap_or_default()
        .to_string();
    for zone in &zones {
        assert!(
            placed.contains(&format!("{zone} (availability-zone)")),
            "{placed}"
        );
    }

    // A skip of two minors or a downgrade is refused, naming the field.
    for channel in ["1.33/stable", "1.30/stable"] {
        let (code, body) = stack
            .api(
                "PATCH",
                &format!("/clusters/{id}"),
                Some(&json!({"microk8s_channel": channel})),
            )
            .await;
        assert_eq!(
            (code, body["error"]["field"].as_str()),
            (422, Some("microk8s_channel")),
            "{channel}: {body}"
        );
    }

    // WHEN it is upgraded to 1.32/stable and the refresh fails on the second worker
    stack
        .fault(
            json!({"cluster_name": name, "role": "worker", "index": 1, "fault": "refresh_fails"}),
        )
        .await;
    let (record, update) = change(&stack, &id, json!({"microk8s_channel": "1.32/stable"})).await;

    // THEN the rollout stopped there: ACTIVE, the update Failed naming the node, the four nodes
    // before it upgraded, the failed one on 1.31 and back in service (uncordoned, Ready)
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["spec"]["microk8s_channel"], "1.31/stable");
    assert_eq!(update["status"], "Failed", "{update}");
    assert_eq!(update["kind"], "upgrade");
    let failure = &update["failure"];
    assert_eq!(failure["stage"], "upgrade-nodes", "{update}");
    assert_eq!(failure["error"], "CommandFailed", "{update}");
    let reason = failure["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("stopped at {second_worker} (5 of 5)"))
            && reason.contains("back in service on 1.31/stable"),
        "{reason}"
    );
    let on = |record: &Value, channel: &str| -> usize {
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["channel"] == channel)
            .count()
    };
    assert_eq!(on(&record, "1.32/stable"), 4, "{record}");
    let sim = channels(&stack, name).await;
    for (instance, channel) in &sim {
        let want = if *instance == second_worker {
            "1.31/stable"
        } else {
            "1.32/stable"
        };
        assert_eq!(channel, want, "{instance}: {sim:?}");
    }
    let cluster = stack.sim_datastore(name).await;
    assert_eq!(
        cluster["cordoned"],
        json!([]),
        "every node back in service: {cluster}"
    );

    // WHEN the same upgrade is asked again without the fault
    stack.request("DELETE", "/_sim/faults", None, &[]).await;
    let (record, update) = change(&stack, &id, json!({"microk8s_channel": "1.32/stable"})).await;

    // THEN only the node left is refreshed, and the cluster is on 1.32 everywhere
    assert_eq!(update["status"], "Successful", "{update}\n{}", stack.logs());
    assert_eq!(record["status"], "ACTIVE");
    assert_eq!(record["spec"]["microk8s_channel"], "1.32/stable");
    assert_eq!(on(&record, "1.32/stable"), 5, "{record}");
    assert!(channels(&stack, name)
        .await
        .iter()
        .all(|(_, c)| c == "1.32/stable"));

    // One node at a time, control planes first: each node's steps end before the next begins.
    let events = stack.events(&id).await;
    let steps: Vec<String> = events
        .iter()
        .filter(|e| e["stage"] == "upgrade-nodes" && e["phase"] == "progress")
        .filter_map(|e| e["detail"].as_str().map(str::to_string))
        .filter(|d| !d.starts_with("upgrading"))
        .collect();
    let first_rollout: Vec<&String> = steps.iter().take(14).collect();
    let mut order = Vec::new();
    for (i, step) in first_rollout.iter().enumerate().take(12) {
        let instance = step.split_whitespace().next().unwrap().to_string();
        let want = ["drained", "refreshed", "Ready"][i % 3];
        assert!(step.contains(want), "step {i} is not {want}: {steps:#?}");
        if i % 3 == 0 {
            order.push(instance);
        } else {
            assert_eq!(&instance, order.last().unwrap(), "{steps:#?}");
        }
    }
    let planes: Vec<String> = (0..3)
        .map(|i| node_of(&record, "control-plane", i).0)
        .collect();
    assert_eq!(order[..3], planes[..], "control planes first, by index");
    assert_eq!(order[3], node_of(&record, "worker", 0).0);

    // The simulator's own log: never two control planes cordoned (out of service) at once, and
    // each of them was.
    let cluster = stack.sim_datastore(name).await;
    let control_planes: Vec<&str> = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "control-plane")
        .filter_map(|m| m["hostname"].as_str())
        .collect();
    let mut down: Vec<&str> = Vec::new();
    let mut cordoned_planes = 0;
    for entry in cluster["cordons_log"].as_array().unwrap() {
        let node = entry["node"].as_str().unwrap_or_default();
        if !control_planes.contains(&node) {
            continue;
        }
        if entry["action"] == "cordoned" {
            down.push(node);
            cordoned_planes += 1;
        } else {
            down.retain(|n| *n != node);
        }
        assert!(
            down.len() <= 1,
            "two control planes down at once: {down:?}\n{cluster}"
        );
    }
    assert!(cordoned_planes >= 3, "{cluster}");

    // WHEN an add-on with arguments is enabled and one disabled
    let pool = "10.0.0.10-10.0.0.20,10.0.1.0/24";
    let (record, update) = change(
        &stack,
        &id,
        json!({"addons": ["metallb:".to_string() + pool, "ingress".to_string()]}),
    )
    .await;

    // THEN MicroK8s enabled them with the arguments intact and disabled dns
    assert_eq!(update["status"], "Successful", "{update}\n{}", stack.logs());
    assert_eq!(
        record["spec"]["addons"],
        json!([format!("metallb:{pool}"), "ingress"])
    );
    let cluster = stack.sim_datastore(name).await;
    let addons: Vec<&str> = cluster["addons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        addons.contains(&"metallb") && addons.contains(&"ingress"),
        "{cluster}"
    );
    assert!(!addons.contains(&"dns"), "{cluster}");
    assert!(
        cluster["addon_args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str() == Some(&format!("metallb {pool}"))),
        "{cluster}"
    );
    stack.assert_calls_allowed_by_template().await;
}
