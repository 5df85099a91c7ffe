//! The HTTP API end to end on the local stack, as a client sees it through API Gateway: every
//! route's success path and each error class, idempotent POSTs, a race of twenty POSTs for one
//! name, and paging over more than one page.

use std::time::{Duration, Instant};

use crate::support::stack::{self, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(240);

/// Polls `GET /clusters/{id}` until the status is `want` (or the cluster ended elsewhere).
async fn wait_status(stack: &Stack, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (code, record) = stack.api("GET", &format!("/clusters/{id}"), None).await;
        assert_eq!(code, 200, "{record}");
        if record["status"] == want {
            return record;
        }
        assert!(
            record["status"] != "FAILED" && Instant::now() < deadline,
            "waiting for {want}: {record}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn error_of(body: &Value) -> (&str, Option<&str>) {
    (
        body["error"]["code"].as_str().unwrap_or_default(),
        body["error"]["field"].as_str(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_and_every_error_class() {
    let stack = Stack::start(300).await;

    // Health, and IAM auth: no SigV4 Authorization header, no entry.
    let (code, body) = stack.api("GET", "/healthz", None).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = stack.request("GET", "/api/clusters", None, &[]).await;
    assert_eq!(code, 403);

    // 400 malformed JSON, 422 a field out of range or of the wrong shape, an unknown field,
    // 413 too large: each names what is wrong.
    let (code, body) = stack
        .api_bytes("POST", "/clusters", Some(b"{\"name\": ".to_vec()), &[])
        .await;
    assert_eq!((code, error_of(&body).0), (400, "MalformedJson"), "{body}");
    for (spec, field) in [
        (json!({"name": "edge", "workers": 1000}), "workers"),
        (json!({"name": "Not A Name"}), "name"),
        (
            json!({"name": "edge", "control_planes": 2}),
            "control_planes",
        ),
        (
            json!({"name": "edge", "microk8s_channel": "latest/edge"}),
            "microk8s_channel",
        ),
        (
            json!({"name": "edge", "api_allowed_cidrs": ["10.0.0.0/33"]}),
            "api_allowed_cidrs",
        ),
        (json!({"name": "edge", "workers": "two"}), "workers"),
        // a region outside the deployment's allowed regions (here us-east-1 and eu-west-1)
        (json!({"name": "edge", "region": "ap-south-1"}), "region"),
        (json!({"name": "edge", "color": "blue"}), "color"),
    ] {
        let (code, body) = stack.api("POST", "/clusters", Some(&spec)).await;
        assert_eq!(code, 422, "{spec}: {body}");
        let (_, named) = error_of(&body);
        assert!(
            named.is_some_and(|f| f.starts_with(field)),
            "{spec} names {field}: {body}"
        );
    }
    let big = format!(
        "{{\"name\":\"edge\",\"tags\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(70 * 1024)
    );
    let (code, body) = stack
        .api_bytes("POST", "/clusters", Some(big.into_bytes()), &[])
        .await;
    assert_eq!(
        (code, error_of(&body).0),
        (413, "PayloadTooLarge"),
        "{body}"
    );
    let (code, body) = stack.api("GET", "/clusters/no-such-cluster", None).await;
    assert_eq!((code, error_of(&body).0), (404, "NotFound"), "{body}");
    let (code, body) = stack.api("GET", "/nowhere", None).await;
    assert_eq!((code, error_of(&body).0), (404, "NotFound"), "{body}");
    let (code, body) = stack.api("PUT", "/clusters", None).await;
    assert_eq!(
        (code, error_of(&body).0),
        (405, "MethodNotAllowed"),
        "{body}"
    );
    let (code, body) = stack.api("GET", "/clusters?max_results=0", None).await;
    assert_eq!(
        (code, error_of(&body)),
        (422, ("ValidationError", Some("max_results"))),
        "{body}"
    );
    // Nothing was registered by any of that.
    let (_, list) = stack.api("GET", "/clusters", None).await;
    assert_eq!(list["clusters"], json!([]), "{list}");

    // 202 with the record; the same Idempotency-Key again answers the first cluster; the key
    // with another body is refused; the name without a key is taken (409).
    let spec = stack::spec("edge-api", 1, 1);
    let key = [("idempotency-key", "create-edge-api-1")];
    let (code, first) = stack.api_with("POST", "/clusters", Some(&spec), &key).await;
    assert_eq!(code, 202, "{first}");
    let id = first["id"].as_str().expect("id").to_string();
    let (code, again) = stack.api_with("POST", "/clusters", Some(&spec), &key).await;
    assert_eq!((code, &again["id"]), (202, &first["id"]), "{again}");
    let (code, body) = stack
        .api_with(
            "POST",
            "/clusters",
            Some(&stack::spec("edge-api", 1, 2)),
            &key,
        )
        .await;
    assert_eq!(
        (code, error_of(&body).0),
        (422, "IdempotencyKeyReused"),
        "{body}"
    );
    // Another caller's key of the same text is another key: not the first answer, but a create
    // of its own (here refused, the name being taken).
    let bob = [
        ("idempotency-key", "create-edge-api-1"),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDBOB/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd"),
    ];
    let (code, body) = stack.api_with("POST", "/clusters", Some(&spec), &bob).await;
    assert_eq!((code, error_of(&body).0), (409, "NameTaken"), "{body}");
    let (code, body) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(
        (code, error_of(&body)),
        (409, ("NameTaken", Some("name"))),
        "{body}"
    );
    // client_token in the body works as the key does.
    let mut with_token = spec.clone();
    with_token["client_token"] = json!("create-edge-api-1");
    let (code, body) = stack.api("POST", "/clusters", Some(&with_token)).await;
    assert_eq!((code, &body["id"]), (202, &first["id"]), "{body}");

    // While CREATING: no kubeconfig and no delete (409), but get (by id and by name) works.
    let (code, body) = stack.api("GET", "/clusters/edge-api", None).await;
    assert_eq!((code, body["id"].as_str()), (200, Some(id.as_str())));
    if body["status"] == "CREATING" {
        let (code, body) = stack
            .api("GET", &format!("/clusters/{id}/kubeconfig"), None)
            .await;
        assert_eq!(
            (code, error_of(&body).0),
            (409, "ClusterNotActive"),
            "{body}"
        );
        let (code, body) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
        assert_eq!((code, error_of(&body).0), (409, "ClusterBusy"), "{body}");
    }

    // ACTIVE: the kubeconfig, the events of every stage, and one cluster in the list.
    let record = wait_status(&stack, &id, "ACTIVE").await;
    assert_eq!(
        record["nodes"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    let (code, body) = stack
        .api("GET", "/clusters/edge-api/kubeconfig", None)
        .await;
    assert_eq!(code, 200, "{body}");
    let kubeconfig = body["kubeconfig"].as_str().expect("kubeconfig text");
    assert!(
        kubeconfig.contains("apiVersion: v1") && kubeconfig.contains("server: https://"),
        "{kubeconfig}"
    );
    let events = stack.events(&id).await;
    let stages: Vec<&str> = events.iter().filter_map(|e| e["stage"].as_str()).collect();
    for stage in ["bootstrap", "join-workers", "verify", "activate"] {
        assert!(stages.contains(&stage), "{stage} in {stages:?}");
    }
    let (_, list) = stack.api("GET", "/clusters?status=ACTIVE", None).await;
    assert_eq!(list["clusters"].as_array().map(Vec::len), Some(1), "{list}");

    // DELETE: 202, then DELETED; a second DELETE is harmless; the name is free again, the id
    // stays readable as history, and nothing is left in the cloud.
    let (code, body) = stack.api("DELETE", "/clusters/edge-api", None).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (202, Some("DELETING")),
        "{body}"
    );
    wait_status(&stack, &id, "DELETED").await;
    let (code, _) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(code, 202);
    let (code, body) = stack.api("GET", "/clusters/edge-api", None).await;
    assert_eq!(code, 404, "{body}");
    let (_, list) = stack.api("GET", "/clusters", None).await;
    assert_eq!(list["clusters"], json!([]), "{list}");
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_posts_make_one_cluster_and_the_list_pages() {
    let stack = Stack::start(300).await;

    // GIVEN twenty concurrent POSTs of one name, each with its own key
    let posts = (0..20).map(|i| {
        let stack = &stack;
        async move {
            let key = format!("race-{i}");
            stack
                .api_with(
                    "POST",
                    "/clusters",
                    Some(&stack::spec("raced", 1, 0)),
                    &[("idempotency-key", key.as_str())],
                )
                .await
        }
    });
    let answers = futures::future::join_all(posts).await;

    // THEN exactly one is accepted and nineteen are told the name is taken
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(c, _)| *c == 202)
        .map(|(_, b)| b)
        .collect();
    let taken = answers
        .iter()
        .filter(|(c, b)| *c == 409 && error_of(b).0 == "NameTaken")
        .count();
    assert_eq!((accepted.len(), taken), (1, 19), "{answers:?}");
    let mut ids = vec![accepted[0]["id"].as_str().unwrap().to_string()];

    // AND with four more clusters, pages of two list all five exactly once
    for name in ["page-a", "page-b", "page-c", "page-d"] {
        let (code, body) = stack
            .api("POST", "/clusters", Some(&stack::spec(name, 1, 0)))
            .await;
        assert_eq!(code, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/clusters?max_results=2&next_token={t}"),
            None => "/clusters?max_results=2".to_string(),
        };
        let (code, page) = stack.api("GET", &path, None).await;
        assert_eq!(code, 200, "{page}");
        let clusters = page["clusters"].as_array().expect("clusters");
        assert!(clusters.len() <= 2, "{page}");
        listed.extend(
            clusters
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match page["next_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert!(pages >= 3, "five clusters in pages of two: {pages} pages");
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    let (code, body) = stack
        .api("GET", "/clusters?next_token=not-a-token", None)
        .await;
    assert_eq!((code, error_of(&body).0), (422, "InvalidToken"), "{body}");
    let (_, other) = stack.api("GET", "/clusters?region=eu-west-1", None).await;
    assert_eq!(other["clusters"], json!([]), "{other}");

    // Finally every cluster is deleted once ACTIVE, and nothing is left.
    for id in &ids {
        wait_status(&stack, id, "ACTIVE").await;
        let (code, body) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
        assert_eq!(code, 202, "{body}");
    }
    for id in &ids {
        wait_status(&stack, id, "DELETED").await;
        assert_eq!(stack.leftovers(id).await, (vec![], vec![], vec![]));
    }
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_addon_with_arguments_reaches_microk8s_and_the_creator_is_recorded() {
    let stack = Stack::start(300).await;

    // GIVEN a cluster asking for an add-on whose arguments hold a comma
    let mut spec = stack::spec("edge-args", 1, 0);
    spec["addons"] = json!(["dns", "metallb:10.0.0.10-10.0.0.20,10.0.1.0/24"]);
    let (code, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    // THEN the record names the principal that signed the request
    let creator = created["created_by"].as_str().unwrap_or_default();
    assert!(
        creator.starts_with("arn:aws:iam::") && creator.contains(":user/"),
        "{created}"
    );

    // AND the cluster becomes ACTIVE with MicroK8s enabling metallb with its one argument
    let record = wait_status(&stack, &id, "ACTIVE").await;
    assert_eq!(record["created_by"], creator);
    let sim = stack.sim_instances().await;
    let node = sim
        .iter()
        .find(|i| i["cluster_name"] == "edge-args")
        .expect("the node");
    let dump = node.to_string();
    assert!(
        dump.contains("metallb 10.0.0.10-10.0.0.20,10.0.1.0/24"),
        "metallb's argument, comma and all: {dump}"
    );
    assert!(
        node.to_string().contains("\"dns\"") && dump.contains("\"metallb\""),
        "{dump}"
    );

    // AND names shaped like ids, 0.0.0.0/0 without the flag and over-limit requests are 422,
    // a path no cluster could have is 404
    for (body, field) in [
        (json!({"name": "c-0123456789abcdef"}), "name"),
        (
            json!({"name": "open", "api_allowed_cidrs": ["0.0.0.0/0"]}),
            "api_allowed_cidrs[0]",
        ),
        (
            json!({"name": "big", "instance_type": "m7i.48xlarge"}),
            "instance_type",
        ),
    ] {
        let (code, answer) = stack.api("POST", "/clusters", Some(&body)).await;
        assert_eq!(
            (code, error_of(&answer)),
            (422, ("ValidationError", Some(field))),
            "{answer}"
        );
    }
    let long = "x".repeat(3000);
    let (code, answer) = stack.api("GET", &format!("/clusters/{long}"), None).await;
    assert_eq!(code, 404, "{answer}");
    stack.assert_calls_allowed_by_template().await;
}

/// With `OwnClustersOnly`, what one principal learns of another's cluster through a name clash
/// and a reconcile report: nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_own_clusters_only_a_name_clash_and_a_reconcile_report_reveal_no_other_cluster() {
    let stack = Stack::start_with(
        300,
        &[("MECPLANE_OWN_CLUSTERS_ONLY", "true")],
        &stack::RECONCILE_OFF,
    )
    .await;
    let mallory = [(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDMALLORY/20260101/us-east-1/execute-api/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=0000",
    )];
    // GIVEN a cluster of the usual signer and one of mallory's
    let (code, theirs) = stack
        .api("POST", "/clusters", Some(&stack::spec("own-secret", 1, 0)))
        .await;
    assert_eq!(code, 202, "{theirs}");
    let their_id = theirs["id"].as_str().unwrap().to_string();
    let (code, mine) = stack
        .api_with(
            "POST",
            "/clusters",
            Some(&stack::spec("own-mallory", 1, 0)),
            &mallory,
        )
        .await;
    assert_eq!(code, 202, "{mine}");
    let my_id = mine["id"].as_str().unwrap().to_string();

    // WHEN mallory asks for the other's name, THEN the 409 does not say which cluster holds it
    let (code, clash) = stack
        .api_with(
            "POST",
            "/clusters",
            Some(&stack::spec("own-secret", 1, 0)),
            &mallory,
        )
        .await;
    assert_eq!(code, 409, "{clash}");
    assert_eq!(clash["error"]["code"], "NameTaken");
    assert!(!clash.to_string().contains(&their_id), "{clash}");

    // AND a dry-run reconcile shows mallory's cluster only
    let (code, report) = stack
        .api_with(
            "POST",
            "/reconcile",
            Some(&json!({"dry_run": true})),
            &mallory,
        )
        .await;
    assert_eq!(code, 200, "{report}");
    let text = report.to_string();
    assert!(
        !text.contains(&their_id) && !text.contains("own-secret"),
        "{text}"
    );
    assert_eq!(report["records"], 1, "{report}");
    // while the signer sees its own
    let (code, report) = stack
        .api("POST", "/reconcile", Some(&json!({"dry_run": true})))
        .await;
    assert_eq!(code, 200, "{report}");
    assert!(!report.to_string().contains(&my_id), "{report}");
    assert_eq!(report["records"], 1, "{report}");
}
