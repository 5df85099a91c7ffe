//! `PATCH /clusters/{id}` through API Gateway on the local stack, as a client sees it: a stale
//! `If-Match` is 412, a PATCH that changes nothing is 200, two PATCHes at once make one update
//! (one 202, one 409), a DELETE while the update runs is 409, and the update — run by the real
//! update state machine — ends `Successful` with the cluster `ACTIVE` at its new size, listed at
//! `GET /clusters/{id}/updates`.

use std::time::Duration;

use crate::support::stack::{self, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(240);

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patch_scales_one_change_at_a_time() {
    let stack = Stack::start(300).await;
    let (code, created) = stack
        .api("POST", "/clusters", Some(&stack::spec("patchy", 1, 1)))
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/clusters/{id}");

    // While CREATING: 409, even for a PATCH that would change nothing (200 once ACTIVE).
    let (code, body) = stack
        .api("PATCH", &path, Some(&json!({"workers": 1})))
        .await;
    if body["status"] != "ACTIVE" {
        assert_eq!((code, code_of(&body)), (409, "ClusterBusy"), "{body}");
    }
    let record = stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    let version = record["version"].as_u64().unwrap();

    // Bad input names the field; a stale If-Match is 412; nothing to change is 200.
    for (patch, field) in [
        (json!({"workers": 1000}), "workers"),
        (
            json!({"microk8s_channel": "1.31/stable"}),
            "microk8s_channel",
        ),
        (json!({"colour": "blue"}), "colour"),
    ] {
        let (code, body) = stack.api("PATCH", &path, Some(&patch)).await;
        assert_eq!(
            (code, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{patch}: {body}"
        );
    }
    let stale = format!("\"{}\"", version - 1);
    let (code, body) = stack
        .api_with(
            "PATCH",
            &path,
            Some(&json!({"workers": 2})),
            &[("if-match", stale.as_str())],
        )
        .await;
    assert_eq!(
        (code, code_of(&body)),
        (412, "PreconditionFailed"),
        "{body}"
    );
    let (code, body) = stack
        .api("PATCH", "/clusters/patchy", Some(&json!({"workers": 1})))
        .await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("ACTIVE")),
        "{body}"
    );

    // Two at once (with the current version): one update.
    let current = format!("\"{version}\"");
    let headers = [("if-match", current.as_str())];
    let (two, three) = (json!({"workers": 2}), json!({"workers": 3}));
    let (a, b) = tokio::join!(
        stack.api_with("PATCH", &path, Some(&two), &headers),
        stack.api_with("PATCH", &path, Some(&three), &headers),
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert!(
        codes == [202, 409] || codes == [202, 412],
        "one 202 and one refusal: {a:?} {b:?}"
    );
    let accepted = if a.0 == 202 { &a.1 } else { &b.1 };
    assert_eq!(accepted["status"], "UPDATING", "{accepted}");
    let update = accepted["updates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let update_id = update["id"].as_str().unwrap().to_string();
    let to = update["params"]["workers"]["to"].as_u64().unwrap();
    assert!(update["execution_arn"]
        .as_str()
        .is_some_and(|arn| arn.ends_with(&format!(":{id}-update-{update_id}"))));

    // While it runs: no delete.
    let (code, body) = stack.api("DELETE", &path, None).await;
    assert_eq!((code, code_of(&body)), (409, "ClusterBusy"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UPDATING"),
        "{body}"
    );

    // The update ends: ACTIVE at the new size, the update Successful.
    let record = stack
        .wait_record(&id, "the update to end", TIMEOUT, |r| {
            r["status"] == "ACTIVE"
        })
        .await;
    assert_eq!(record["spec"]["workers"].as_u64(), Some(to), "{record}");
    let (code, one) = stack
        .api("GET", &format!("{path}/updates/{update_id}"), None)
        .await;
    assert_eq!(
        (code, one["status"].as_str()),
        (200, Some("Successful")),
        "{one}"
    );
    let (code, list) = stack.api("GET", &format!("{path}/updates"), None).await;
    assert_eq!(code, 200);
    assert_eq!(list["updates"][0]["id"], update_id.as_str(), "{list}");
    let (code, _) = stack
        .api("GET", &format!("{path}/updates/u-0000000000000000"), None)
        .await;
    assert_eq!(code, 404);

    let (code, body) = stack.api("DELETE", &path, None).await;
    assert_eq!(code, 202, "{body}");
    stack
        .wait_record(&id, "DELETED", TIMEOUT, |r| r["status"] == "DELETED")
        .await;
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
}
