//! Races and HA end to end: two creates of the same name, and a 3+1 cluster whose control planes
//! must join one at a time.

use std::time::Duration;

use crate::support::stack::{fast_timing, Stack};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_creates_of_one_name_make_one_cluster() {
    let stack = Stack::start(300).await;
    let input = json!({"spec": {"name": "twin"}, "timing": fast_timing()});
    let (a, b) = tokio::join!(
        stack.start_create("twin-a", input.clone()),
        stack.start_create("twin-b", input)
    );
    let (a, b) = tokio::join!(
        stack.wait_execution(&a, TIMEOUT),
        stack.wait_execution(&b, TIMEOUT)
    );
    let mut outcomes = [a.status.clone(), b.status.clone()];
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["FAILED".to_string(), "SUCCEEDED".to_string()],
        "{a:?} {b:?}"
    );
    let loser = if a.status == "FAILED" { &a } else { &b };
    assert_eq!(loser.error.as_deref(), Some("NameTaken"));
    let (_, list) = stack.api("GET", "/clusters", None).await;
    let clusters = list["clusters"].as_array().expect("clusters");
    assert_eq!(clusters.len(), 1, "{list}");
    assert_eq!(clusters[0]["status"], "ACTIVE");
    let instances = stack.sim_instances().await;
    assert_eq!(
        instances
            .iter()
            .filter(|i| i["cluster_name"] == "twin")
            .count(),
        1,
        "one instance set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_control_planes_join_one_at_a_time_and_the_worker_with_worker_flag() {
    let stack = Stack::start(300).await;
    let arn = stack.start_create("ha", json!({"spec": {"name": "ha", "control_planes": 3, "workers": 1}, "timing": fast_timing()})).await;
    let ended = stack.wait_execution(&arn, TIMEOUT).await;
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());
    let record = stack.record("ha").await;
    assert_eq!(record["nodes"].as_array().unwrap().len(), 4);

    // The simulator's join log (kept on the first control plane, which holds the datastore)
    // shows two control-plane joins that never overlap, without --worker, and one worker join
    // with it; nothing was turned away.
    let log = stack.joins_log().await;
    let of = |role: &str, result: &str| -> Vec<serde_json::Value> {
        log.iter()
            .filter(|e| e["role"] == role && e["result"] == result)
            .cloned()
            .collect()
    };
    assert_eq!(of("control-plane", "joined").len(), 2, "{log:#?}");
    assert!(of("control-plane", "joined")
        .iter()
        .all(|e| e["flags"].is_null()));
    assert_eq!(of("worker", "joined").len(), 1, "{log:#?}");
    assert_eq!(of("worker", "joined")[0]["flags"], "--worker");
    assert!(
        log.iter().all(|e| e["result"] != "rejected"),
        "no join was turned away: {log:#?}"
    );
    // Control-plane joins are serial: each one that started finished before the next started.
    let mut open: Option<String> = None;
    for e in log.iter().filter(|e| e["role"] == "control-plane") {
        let host = e["hostname"].as_str().unwrap_or_default().to_string();
        match e["result"].as_str() {
            Some("started") => {
                assert!(open.is_none(), "control-plane joins overlapped: {log:#?}");
                open = Some(host);
            }
            Some("joined") => {
                assert_eq!(open.take(), Some(host), "{log:#?}");
            }
            _ => {}
        }
    }
    stack.assert_calls_allowed_by_template().await;
}
