//! [`handle`] end to end against the fakes: every route's success path and each error class,
//! idempotent and concurrent creates, pagination, delete and kubeconfig rules — and a check that
//! `docs/openapi.yaml` documents exactly the routes, statuses and fields the code emits.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::*;
use crate::error::CloudError;
use crate::fakes::{FakeCloud, FakeExecutions, FakeStore};
use crate::ports::{ClusterStore, ExecutionStatus, KeyClaim, ListFilter, RecordPage};
use crate::record::{ClusterRecord, Event, Status};
use crate::resources;

const CREATE_ARN: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:create-cluster";
const DELETE_ARN: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:delete-cluster";
const UPDATE_ARN: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:update-cluster";

type Ctx = ApiContext<FakeStore, FakeExecutions, FakeCloud>;

fn config() -> ApiConfig {
    ApiConfig {
        create_state_machine_arn: CREATE_ARN.into(),
        delete_state_machine_arn: DELETE_ARN.into(),
        update_state_machine_arn: UPDATE_ARN.into(),
        policy: Policy::default(),
        timing: Timing {
            poll_seconds: 1,
            ..Timing::default()
        },
    }
}

fn ctx() -> Ctx {
    ApiContext {
        store: FakeStore::default(),
        executions: FakeExecutions::default(),
        parameters: FakeCloud::new(),
        config: config(),
    }
}

fn get(path: &str) -> ApiRequest {
    ApiRequest::new("GET", path)
}

fn post(body: &str) -> ApiRequest {
    ApiRequest {
        body: body.as_bytes().to_vec(),
        ..ApiRequest::new("POST", "/clusters")
    }
}

fn with_key(mut req: ApiRequest, key: &str) -> ApiRequest {
    req.headers.push(("Idempotency-Key".into(), key.into()));
    req
}

fn body(r: &ApiResponse) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// Status, error code and field of an error answer.
fn error_of(r: &ApiResponse) -> (u16, String, Option<String>) {
    let b = body(r);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let e = &b["error"];
    assert!(e["message"].is_string(), "{b}");
    (
        r.status,
        e["code"].as_str().unwrap_or_default().to_string(),
        e["field"].as_str().map(Into::into),
    )
}

async fn create<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    name: &str,
) -> ClusterRecord {
    let r = handle(ctx, post(&json!({"name": name}).to_string())).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

/// Moves a record to `status` as the stages would.
async fn set_status(store: &FakeStore, id: &str, status: Status) -> ClusterRecord {
    let mut r = store.get(id).await.unwrap().unwrap();
    r.status = status;
    if status == Status::Active {
        r.kubeconfig_parameter = Some(resources::Deployment::default().kubeconfig_parameter(id));
    }
    store.update(&r).await.unwrap()
}

#[tokio::test]
async fn healthz() {
    let r = handle(&ctx(), get("/healthz")).await;
    assert_eq!((r.status, body(&r)), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn create_registers_the_record_and_starts_the_execution() {
    let ctx = ctx();
    let r = handle(
        &ctx,
        post(r#"{"name": "edge-1", "workers": 2, "tags": {"env": "dev"}}"#),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let record: ClusterRecord = serde_json::from_slice(&r.body).unwrap();
    assert!(resources::is_cluster_id(&record.id));
    assert_eq!(
        r.header("location"),
        Some(format!("/clusters/{}", record.id).as_str())
    );
    assert_eq!(
        (
            record.status,
            record.spec.workers,
            record.spec.name.as_str()
        ),
        (Status::Creating, 2, "edge-1")
    );

    let started = ctx.executions.started();
    assert_eq!(started.len(), 1);
    assert_eq!(
        (
            started[0].state_machine_arn.as_str(),
            started[0].name.as_str()
        ),
        (CREATE_ARN, record.id.as_str())
    );
    assert_eq!(
        record.execution_arn.as_deref(),
        Some(started[0].arn.as_str())
    );
    let input: Value = serde_json::from_str(&started[0].input).unwrap();
    assert_eq!(
        input,
        json!({"cluster_id": record.id, "spec": record.spec, "timing": config().timing})
    );
    // The register stage accepts exactly this input.
    assert!(matches!(
        crate::state::CreateInput::parse(&input),
        Ok(crate::state::CreateInput::Registered { .. })
    ));

    assert_eq!(ctx.store.records(), vec![record.clone()]);
    assert_eq!(ctx.store.all_events().len(), 1);
}

#[tokio::test]
async fn bad_bodies_are_4xx_naming_the_field() {
    let ctx = ctx();
    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        ("{", 400, "MalformedJson", None),
        ("", 400, "MalformedJson", None),
        ("[]", 422, "ValidationError", None),
        (r#"{}"#, 422, "ValidationError", Some("name")),
        (r#"{"name": "Edge"}"#, 422, "ValidationError", Some("name")),
        (
            r#"{"name": "a", "workers": 51}"#,
            422,
            "ValidationError",
            Some("workers"),
        ),
        (
            r#"{"name": "a", "workers": "2"}"#,
            422,
            "ValidationError",
            Some("workers"),
        ),
        (
            r#"{"name": "a", "wrokers": 2}"#,
            422,
            "ValidationError",
            Some("wrokers"),
        ),
        (
            r#"{"name": "a", "control_planes": 2}"#,
            422,
            "ValidationError",
            Some("control_planes"),
        ),
        (
            r#"{"name": "a", "instance_type": "big"}"#,
            422,
            "ValidationError",
            Some("instance_type"),
        ),
        (
            r#"{"name": "a", "microk8s_channel": "edge"}"#,
            422,
            "ValidationError",
            Some("microk8s_channel"),
        ),
        (
            r#"{"name": "a", "api_allowed_cidrs": ["10.0.0.1/8"]}"#,
            422,
            "ValidationError",
            Some("api_allowed_cidrs[0]"),
        ),
        (
            r#"{"name": "a", "region": "moon"}"#,
            422,
            "ValidationError",
            Some("region"),
        ),
        (
            r#"{"name": "a", "tags": {"aws:x": "y"}}"#,
            422,
            "ValidationError",
            Some("tags.aws:x"),
        ),
        (
            r#"{"name": "a", "client_token": ""}"#,
            422,
            "ValidationError",
            Some("client_token"),
        ),
    ];
    for (text, status, code, field) in cases {
        let r = handle(&ctx, post(text)).await;
        assert_eq!(
            error_of(&r),
            (*status, code.to_string(), field.map(Into::into)),
            "{text}"
        );
    }
    let big = format!(
        r#"{{"name": "a", "addons": ["{}"]}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    assert_eq!(error_of(&handle(&ctx, post(&big)).await).0, 413);
    assert!(ctx.store.records().is_empty() && ctx.executions.started().is_empty());
}

#[tokio::test]
async fn a_taken_name_is_409() {
    let ctx = ctx();
    let first = create(&ctx, "edge").await;
    let r = handle(&ctx, post(r#"{"name": "edge"}"#)).await;
    let (status, code, field) = error_of(&r);
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (409, "NameTaken", Some("name"))
    );
    assert!(body(&r)["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&first.id));
    assert_eq!(ctx.executions.started().len(), 1);
}

#[tokio::test]
async fn the_same_key_twice_makes_one_cluster() {
    let ctx = ctx();
    let a = handle(
        &ctx,
        with_key(post(r#"{"name": "edge", "workers": 1}"#), "k-1"),
    )
    .await;
    // Same request, spelled differently, key moved to the body.
    let b = handle(
        &ctx,
        post(r#"{ "workers": 1, "name": "edge", "client_token": "k-1" }"#),
    )
    .await;
    assert_eq!((a.status, b.status), (202, 202));
    assert_eq!(body(&a), body(&b));
    assert_eq!(a.header("location"), b.header("location"));
    assert_eq!(ctx.store.records().len(), 1);
    assert_eq!(ctx.executions.started().len(), 1);

    let c = handle(
        &ctx,
        with_key(post(r#"{"name": "edge", "workers": 2}"#), "k-1"),
    )
    .await;
    assert_eq!(
        error_of(&c),
        (
            422,
            "IdempotencyKeyReused".into(),
            Some("Idempotency-Key".into())
        )
    );
    let d = handle(&ctx, post(r#"{"name": "other", "client_token": "k-1"}"#)).await;
    assert_eq!(
        error_of(&d),
        (
            422,
            "IdempotencyKeyReused".into(),
            Some("client_token".into())
        )
    );
}

#[tokio::test]
async fn a_replay_finishes_a_create_cut_short() {
    let ctx = ctx();
    // GIVEN a first attempt that claimed the key and stored the record, then stopped
    let spec = crate::spec::ClusterRequest {
        name: Some("edge".into()),
        ..Default::default()
    };
    let hash = idempotency::request_hash(&spec);
    ctx.store
        .claim_key("k", "c-00000000000000aa", &hash)
        .await
        .unwrap();
    let spec = spec.validate(&Policy::default()).unwrap();
    ctx.store
        .create(&ClusterRecord::new("c-00000000000000aa".into(), spec, None))
        .await
        .unwrap();
    // WHEN the client retries
    let r = handle(&ctx, with_key(post(r#"{"name": "edge"}"#), "k")).await;
    // THEN the execution is started for that cluster
    assert_eq!(r.status, 202);
    assert_eq!(body(&r)["id"], "c-00000000000000aa");
    assert_eq!(ctx.executions.started()[0].name, "c-00000000000000aa");
    assert!(ctx.store.records()[0].execution_arn.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_of_one_name_make_one_cluster() {
    let ctx = Arc::new(ctx());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let ctx = ctx.clone();
        tasks.spawn(async move { handle(&*ctx, post(r#"{"name": "race"}"#)).await });
    }
    let statuses: Vec<u16> = tasks.join_all().await.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(ctx.store.records().len(), 1);
    assert_eq!(ctx.executions.started().len(), 1);
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_caller() {
    let ctx = ctx();
    let as_caller = |name: &str, caller: &str| ApiRequest {
        caller: Some(caller.into()),
        ..with_key(post(&format!(r#"{{"name": "{name}"}}"#)), "same-key")
    };
    let alice = handle(&ctx, as_caller("edge-a", "arn:aws:iam::1:user/alice")).await;
    assert_eq!(alice.status, 202);
    // Bob's "same-key" is not Alice's: a cluster of his own, not Alice's answer nor a 422.
    let bob = handle(&ctx, as_caller("edge-b", "arn:aws:iam::1:user/bob")).await;
    assert_eq!(bob.status, 202, "{}", String::from_utf8_lossy(&bob.body));
    assert_ne!(body(&alice)["id"], body(&bob)["id"]);
    // Alice's retry still answers her first cluster.
    let again = handle(&ctx, as_caller("edge-a", "arn:aws:iam::1:user/alice")).await;
    assert_eq!(body(&again)["id"], body(&alice)["id"]);
    assert_eq!(ctx.store.records().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_retries_with_one_key_get_one_answer() {
    let ctx = Arc::new(ctx());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let ctx = ctx.clone();
        tasks.spawn(
            async move { handle(&*ctx, with_key(post(r#"{"name": "race"}"#), "same")).await },
        );
    }
    let answers = tasks.join_all().await;
    assert!(
        answers.iter().all(|r| r.status == 202),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|r| body(r)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ctx.store.records().len(), 1);
    assert_eq!(ctx.executions.started().len(), 1);
    assert!(ctx.store.records()[0].execution_arn.is_some());
}

#[tokio::test]
async fn get_by_id_or_name() {
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    for path in [format!("/clusters/{}", rec.id), "/clusters/edge".into()] {
        let r = handle(&ctx, get(&path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            serde_json::from_slice::<ClusterRecord>(&r.body).unwrap(),
            rec
        );
    }
    assert_eq!(error_of(&handle(&ctx, get("/clusters/ghost")).await).0, 404);
    assert_eq!(
        error_of(&handle(&ctx, get("/clusters/c-0000000000000000")).await).1,
        "NotFound"
    );
}

#[tokio::test]
async fn list_pages_newest_first_and_hides_deleted() {
    let ctx = ctx();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&ctx, &format!("edge-{i}")).await.id);
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = get("/clusters");
        req.query.push(("max_results".into(), "2".into()));
        if let Some(t) = &token {
            req.query.push(("next_token".into(), t.clone()));
        }
        let r = handle(&ctx, req).await;
        assert_eq!(r.status, 200);
        let b = body(&r);
        let page = b["clusters"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        pages += 1;
        match b["next_token"].as_str() {
            Some(t) => token = Some(t.into()),
            None => {
                assert!(
                    b.as_object().unwrap().contains_key("next_token"),
                    "next_token is null, not absent"
                );
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every cluster exactly once");

    set_status(&ctx.store, &ids[1], Status::Deleted).await;
    let listed = |b: Value| {
        b["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let all = listed(body(&handle(&ctx, get("/clusters")).await));
    assert_eq!(all.len(), 4);
    assert!(!all.contains(&ids[1]));
    let mut req = get("/clusters");
    req.query.push(("status".into(), "DELETED".into()));
    assert_eq!(listed(body(&handle(&ctx, req).await)), vec![ids[1].clone()]);
    // A page is topped up past deleted records.
    let mut req = get("/clusters");
    req.query.push(("max_results".into(), "4".into()));
    assert_eq!(listed(body(&handle(&ctx, req).await)).len(), 4);

    let mut req = get("/clusters");
    req.query.push(("region".into(), "eu-west-1".into()));
    assert!(listed(body(&handle(&ctx, req).await)).is_empty());
}

#[tokio::test]
async fn list_rejects_bad_queries() {
    let ctx = ctx();
    for (k, v, code) in [
        ("max_results", "0", "ValidationError"),
        ("max_results", "101", "ValidationError"),
        ("max_results", "x", "ValidationError"),
        ("status", "BROKEN", "ValidationError"),
        ("next_token", "not-a-token", "InvalidToken"),
    ] {
        let mut req = get("/clusters");
        req.query.push((k.into(), v.into()));
        assert_eq!(
            error_of(&handle(&ctx, req).await),
            (422, code.into(), Some(k.into())),
            "{k}={v}"
        );
    }
}

#[tokio::test]
async fn a_create_that_ended_without_a_result_can_be_deleted() {
    let ctx = ctx();
    let rec = create(&ctx, "stuck").await;
    let create_arn = rec.execution_arn.clone().expect("execution");
    // While the create runs, a delete is refused.
    let busy = handle(&ctx, ApiRequest::new("DELETE", "/clusters/stuck")).await;
    assert_eq!(error_of(&busy), (409, "ClusterBusy".into(), None));

    // Stopped by hand: the record still says CREATING, the execution says ABORTED.
    ctx.executions
        .set_status(&create_arn, crate::ports::ExecutionStatus::Aborted);
    let r = handle(&ctx, ApiRequest::new("DELETE", "/clusters/stuck")).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let deleting: ClusterRecord = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(deleting.status, Status::Deleting);
    let failure = deleting.failure.expect("failure recorded");
    assert_eq!(failure.error, "CreateInterrupted");
    assert!(failure.reason.contains("ABORTED"), "{}", failure.reason);
    assert!(ctx
        .executions
        .started()
        .iter()
        .any(|e| e.state_machine_arn == DELETE_ARN));
}

#[tokio::test]
async fn a_create_never_started_can_be_deleted() {
    // GIVEN a CREATING record no execution owns: the API that wrote it died before StartExecution
    let elsewhere = ctx();
    let mut orphan = create(&elsewhere, "orphan").await;
    orphan.execution_arn = None;
    orphan.version = 1;
    let ctx = ctx();
    assert!(ctx.store.create(&orphan).await.unwrap());

    // WHEN it is deleted
    let r = handle(&ctx, ApiRequest::new("DELETE", "/clusters/orphan")).await;

    // THEN the delete is accepted, the record says the create never started, and only the delete
    // execution runs
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let deleting: ClusterRecord = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(deleting.status, Status::Deleting);
    let failure = deleting.failure.expect("failure recorded");
    assert_eq!(failure.error, "CreateInterrupted");
    assert!(
        failure.reason.contains("never started"),
        "{}",
        failure.reason
    );
    let started = ctx.executions.started();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].state_machine_arn, DELETE_ARN);

    // AND a late replay of the create starts nothing and answers the record as it is
    let replay = finish_create_for_tests(&ctx, &orphan.id).await;
    assert_eq!(replay["status"], "DELETING");
    assert_eq!(ctx.executions.started().len(), 1);
}

/// Replays the create of a stored record (what a retried `POST` with its key does).
async fn finish_create_for_tests(ctx: &Ctx, id: &str) -> Value {
    let record = ctx.store.get(id).await.unwrap().unwrap();
    let r = clusters::finish_create(ctx, record).await.unwrap();
    body(&r)
}

#[tokio::test]
async fn a_failed_delete_is_resumed_by_the_next_delete() {
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    set_status(&ctx.store, &rec.id, Status::Active).await;
    let delete = || handle(&ctx, ApiRequest::new("DELETE", "/clusters/edge"));
    let deletes = || -> Vec<String> {
        ctx.executions
            .started()
            .into_iter()
            .filter(|e| e.state_machine_arn == DELETE_ARN)
            .map(|e| e.name)
            .collect()
    };
    let first: ClusterRecord = serde_json::from_slice(&delete().await.body).unwrap();
    assert_eq!(deletes(), [format!("{}-delete", rec.id)]);
    assert_eq!(first.delete_attempt, 1);

    // While it runs, a DELETE starts nothing.
    assert_eq!(delete().await.status, 202);
    assert_eq!(deletes().len(), 1);

    // GIVEN the delete execution failed (a step failed): the record stays DELETING
    let failed_arn = first.delete_execution_arn.clone().unwrap();
    ctx.executions
        .set_status(&failed_arn, ExecutionStatus::Failed);

    // WHEN the cluster is deleted again
    let r = delete().await;

    // THEN the next attempt starts under a new name, the record follows it, and the history says
    // the delete was resumed
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let resumed: ClusterRecord = serde_json::from_slice(&r.body).unwrap();
    let second = format!("{}-delete-2", rec.id);
    assert_eq!(deletes(), [format!("{}-delete", rec.id), second.clone()]);
    assert_eq!(resumed.status, Status::Deleting);
    assert_eq!(resumed.delete_attempt, 2);
    let second_arn = resumed.delete_execution_arn.clone().unwrap();
    assert!(second_arn.ends_with(&format!(":{second}")), "{second_arn}");
    let events = ctx.store.events(&rec.id).await.unwrap();
    assert!(
        events.iter().any(|e| e.detail.contains("delete resumed")
            && e.detail.contains("FAILED")
            && e.detail.contains(&second)),
        "{events:?}"
    );

    // Running again: nothing more; timed out or stopped: the attempt after.
    assert_eq!(delete().await.status, 202);
    assert_eq!(deletes().len(), 2);
    for (n, how) in [
        (3, ExecutionStatus::TimedOut),
        (4, ExecutionStatus::Aborted),
    ] {
        let arn = ctx
            .store
            .get(&rec.id)
            .await
            .unwrap()
            .unwrap()
            .delete_execution_arn;
        ctx.executions.set_status(&arn.unwrap(), how);
        let r: ClusterRecord = serde_json::from_slice(&delete().await.body).unwrap();
        assert_eq!(r.delete_attempt, n);
        assert_eq!(deletes().last(), Some(&format!("{}-delete-{n}", rec.id)));
    }

    // A delete execution started from the console that failed is resumed the same way.
    let console = ctx
        .executions
        .start(DELETE_ARN, "from-the-console", "{}")
        .await
        .unwrap();
    let mut r = ctx.store.get(&rec.id).await.unwrap().unwrap();
    r.delete_execution_arn = Some(console.clone());
    ctx.store.update(&r).await.unwrap();
    ctx.executions.set_status(&console, ExecutionStatus::Failed);
    let r: ClusterRecord = serde_json::from_slice(&delete().await.body).unwrap();
    assert_eq!(r.delete_attempt, 5);
    assert_eq!(deletes().last(), Some(&format!("{}-delete-5", rec.id)));
}

#[tokio::test]
async fn delete_moves_to_deleting_and_starts_the_delete_execution() {
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    let busy = handle(
        &ctx,
        ApiRequest::new("DELETE", &format!("/clusters/{}", rec.id)),
    )
    .await;
    assert_eq!(error_of(&busy), (409, "ClusterBusy".into(), None));

    set_status(&ctx.store, &rec.id, Status::Active).await;
    let r = handle(&ctx, ApiRequest::new("DELETE", "/clusters/edge")).await;
    assert_eq!(r.status, 202);
    assert_eq!(
        r.header("location"),
        Some(format!("/clusters/{}", rec.id).as_str())
    );
    let deleting: ClusterRecord = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(deleting.status, Status::Deleting);
    let started = ctx.executions.started();
    let delete = started
        .iter()
        .find(|e| e.state_machine_arn == DELETE_ARN)
        .unwrap();
    assert_eq!(delete.name, format!("{}-delete", rec.id));
    assert_eq!(
        serde_json::from_str::<Value>(&delete.input).unwrap(),
        json!({"id": rec.id, "timing": config().timing})
    );
    assert_eq!(
        deleting.delete_execution_arn.as_deref(),
        Some(delete.arn.as_str())
    );
    // The begin-delete stage accepts this input.
    assert!(serde_json::from_str::<crate::state::DeleteInput>(&delete.input).is_ok());

    // Again while DELETING: the same answer, no second execution.
    let again = handle(
        &ctx,
        ApiRequest::new("DELETE", &format!("/clusters/{}", rec.id)),
    )
    .await;
    assert_eq!(again.status, 202);
    assert_eq!(ctx.executions.started().len(), 2);

    // Once DELETED: by id it is still 202 (done); the name is free, so by name it is 404.
    set_status(&ctx.store, &rec.id, Status::Deleted).await;
    let done = handle(
        &ctx,
        ApiRequest::new("DELETE", &format!("/clusters/{}", rec.id)),
    )
    .await;
    assert_eq!(
        (done.status, body(&done)["status"].as_str()),
        (202, Some("DELETED"))
    );
    assert_eq!(
        error_of(&handle(&ctx, ApiRequest::new("DELETE", "/clusters/edge")).await).0,
        404
    );
    assert_eq!(
        error_of(&handle(&ctx, ApiRequest::new("DELETE", "/clusters/ghost")).await).0,
        404
    );
}

#[tokio::test]
async fn delete_of_a_failed_cluster_survives_a_concurrent_write() {
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    set_status(&ctx.store, &rec.id, Status::Failed).await;
    ctx.store.conflict_next_updates(1);
    let r = handle(
        &ctx,
        ApiRequest::new("DELETE", &format!("/clusters/{}", rec.id)),
    )
    .await;
    assert_eq!(
        (r.status, body(&r)["status"].as_str()),
        (202, Some("DELETING"))
    );
}

#[tokio::test]
async fn a_delete_outlasts_a_run_of_concurrent_writes_then_answers_503() {
    // GIVEN a failed cluster whose record a teardown keeps writing
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    set_status(&ctx.store, &rec.id, Status::Failed).await;
    let delete = || {
        handle(
            &ctx,
            ApiRequest::new("DELETE", &format!("/clusters/{}", rec.id)),
        )
    };
    // WHEN every write but the last attempt's loses: the delete still goes through
    ctx.store
        .conflict_next_updates(super::clusters::WRITE_ATTEMPTS as u32 - 1);
    let r = delete().await;
    assert_eq!(
        (r.status, body(&r)["status"].as_str()),
        (202, Some("DELETING"))
    );
    // AND a record that never stops changing is a 503 to retry, not a lost write
    let other = create(&ctx, "edge-2").await;
    set_status(&ctx.store, &other.id, Status::Failed).await;
    ctx.store
        .conflict_next_updates(super::clusters::WRITE_ATTEMPTS as u32);
    let r = handle(
        &ctx,
        ApiRequest::new("DELETE", &format!("/clusters/{}", other.id)),
    )
    .await;
    assert_eq!(error_of(&r).0, 503);
    assert_eq!(
        ctx.store.get(&other.id).await.unwrap().unwrap().status,
        Status::Failed
    );
}

#[tokio::test]
async fn events_oldest_first() {
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    ctx.store
        .append_event(&Event::now(
            &rec.id,
            "register",
            crate::record::Phase::Finished,
            "ok",
        ))
        .await
        .unwrap();
    let r = handle(&ctx, get("/clusters/edge/events")).await;
    assert_eq!(r.status, 200);
    let events = body(&r)["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["stage"], "api");
    assert_eq!(events[1]["stage"], "register");
    assert_eq!(
        error_of(&handle(&ctx, get("/clusters/ghost/events")).await).0,
        404
    );
}

#[tokio::test]
async fn kubeconfig_only_while_active() {
    let ctx = ctx();
    let rec = create(&ctx, "edge").await;
    let path = format!("/clusters/{}/kubeconfig", rec.id);
    assert_eq!(
        error_of(&handle(&ctx, get(&path)).await),
        (409, "ClusterNotActive".into(), None)
    );

    set_status(&ctx.store, &rec.id, Status::Active).await;
    assert_eq!(
        error_of(&handle(&ctx, get(&path)).await).1,
        "ClusterNotActive",
        "no parameter yet"
    );
    let yaml = "apiVersion: v1\nkind: Config\n";
    ctx.parameters
        .put_secret(
            &resources::Deployment::default().kubeconfig_parameter(&rec.id),
            yaml,
        )
        .await
        .unwrap();
    let r = handle(&ctx, get(&path)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        body(&r),
        json!({"cluster_id": rec.id, "name": "edge", "kubeconfig": yaml})
    );

    let mut req = get("/clusters/edge/kubeconfig");
    req.headers
        .push(("Accept".into(), "application/yaml".into()));
    let r = handle(&ctx, req).await;
    assert_eq!(
        (r.status, r.header("content-type"), r.body.as_slice()),
        (200, Some("application/yaml"), yaml.as_bytes())
    );
    assert_eq!(
        error_of(&handle(&ctx, get("/clusters/ghost/kubeconfig")).await).0,
        404
    );
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let ctx = ctx();
    assert_eq!(error_of(&handle(&ctx, get("/nope")).await).1, "NotFound");
    let r = handle(&ctx, ApiRequest::new("PATCH", "/clusters")).await;
    assert_eq!(error_of(&r), (405, "MethodNotAllowed".into(), None));
    assert_eq!(r.header("allow"), Some("POST, GET"));
    assert_eq!(
        handle(&ctx, ApiRequest::new("POST", "/healthz"))
            .await
            .header("allow"),
        Some("GET")
    );
}

/// Step Functions that refuses every start.
struct DownExecutions(CloudError);

#[async_trait]
impl Executions for DownExecutions {
    async fn start(&self, _: &str, _: &str, _: &str) -> Result<String, CloudError> {
        Err(self.0.clone())
    }
    async fn status(&self, _: &str) -> Result<ExecutionStatus, CloudError> {
        Err(self.0.clone())
    }
}

#[tokio::test]
async fn a_create_that_cannot_start_is_failed_and_deletable() {
    let store = FakeStore::default();
    let down = ApiContext {
        store: store.clone(),
        executions: DownExecutions(CloudError::Transient("throttled".into())),
        parameters: FakeCloud::new(),
        config: config(),
    };
    let r = handle(&down, post(r#"{"name": "edge"}"#)).await;
    assert_eq!(error_of(&r).0, 503);
    assert_eq!(error_of(&r).1, "ServiceUnavailable");
    assert_eq!(r.header("retry-after"), Some("2"));
    let rec = store.records().pop().unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert_eq!(
        rec.failure.as_ref().map(|f| f.error.as_str()),
        Some("StartExecutionFailed")
    );

    // A later delete (with Step Functions back) cleans it up.
    let up = ApiContext {
        store: store.clone(),
        executions: FakeExecutions::default(),
        parameters: FakeCloud::new(),
        config: config(),
    };
    let r = handle(&up, ApiRequest::new("DELETE", "/clusters/edge")).await;
    assert_eq!(
        (r.status, body(&r)["status"].as_str()),
        (202, Some("DELETING"))
    );

    // A delete whose execution cannot start stays DELETING and is retried by the next DELETE.
    let rec2 = create(&up, "edge2").await;
    set_status(&store, &rec2.id, Status::Active).await;
    let down = ApiContext {
        store: store.clone(),
        ..down
    };
    assert_eq!(
        handle(&down, ApiRequest::new("DELETE", "/clusters/edge2"))
            .await
            .status,
        503
    );
    let r = handle(&up, ApiRequest::new("DELETE", "/clusters/edge2")).await;
    assert_eq!(r.status, 202);
    assert!(body(&r)["delete_execution_arn"].is_string());
}

/// A table that fails every read with a chosen error.
struct DownStore(CloudError);

#[async_trait]
impl ClusterStore for DownStore {
    async fn create(&self, _: &ClusterRecord) -> Result<bool, CloudError> {
        Err(self.0.clone())
    }
    async fn get(&self, _: &str) -> Result<Option<ClusterRecord>, CloudError> {
        Err(self.0.clone())
    }
    async fn find_by_name(&self, _: &str) -> Result<Option<ClusterRecord>, CloudError> {
        Err(self.0.clone())
    }
    async fn update(&self, _: &ClusterRecord) -> Result<ClusterRecord, CloudError> {
        Err(self.0.clone())
    }
    async fn list(
        &self,
        _: &ListFilter,
        _: Option<&str>,
        _: u32,
    ) -> Result<RecordPage, CloudError> {
        Err(self.0.clone())
    }
    async fn append_event(&self, _: &Event) -> Result<(), CloudError> {
        Err(self.0.clone())
    }
    async fn events(&self, _: &str) -> Result<Vec<Event>, CloudError> {
        Err(self.0.clone())
    }
    async fn claim_key(&self, _: &str, _: &str, _: &str) -> Result<KeyClaim, CloudError> {
        Err(self.0.clone())
    }
    async fn find_key(&self, _: &str) -> Result<Option<KeyClaim>, CloudError> {
        Err(self.0.clone())
    }
}

#[tokio::test]
async fn aws_trouble_is_503_or_500_never_for_bad_input() {
    let transient = ApiContext {
        store: DownStore(CloudError::Transient("throttled".into())),
        executions: FakeExecutions::default(),
        parameters: FakeCloud::new(),
        config: config(),
    };
    for req in [
        get("/clusters"),
        get("/clusters/edge"),
        post(r#"{"name": "edge"}"#),
        ApiRequest::new("DELETE", "/clusters/edge"),
    ] {
        let r = handle(&transient, req).await;
        assert_eq!((r.status, r.header("retry-after")), (503, Some("2")));
    }
    let broken = ApiContext {
        store: DownStore(CloudError::Other("boom".into())),
        ..transient
    };
    assert_eq!(
        error_of(&handle(&broken, get("/clusters/edge/events")).await),
        (500, "InternalError".into(), None)
    );
    // Bad input is refused before the table is touched.
    assert_eq!(handle(&broken, post("{")).await.status, 400);
    assert_eq!(
        handle(&broken, post(r#"{"name": "a", "workers": 99}"#))
            .await
            .status,
        422
    );
    assert_eq!(handle(&broken, get("/healthz")).await.status, 200);
}

#[test]
fn config_reads_the_environment() {
    // One test touches these variables, so tests running in parallel do not race on them.
    std::env::remove_var(ApiConfig::CREATE_ARN_VAR);
    assert_eq!(
        ApiConfig::from_env().unwrap_err(),
        ConfigError::Missing(ApiConfig::CREATE_ARN_VAR)
    );
    std::env::set_var(ApiConfig::CREATE_ARN_VAR, CREATE_ARN);
    std::env::set_var(ApiConfig::DELETE_ARN_VAR, DELETE_ARN);
    std::env::remove_var(ApiConfig::UPDATE_ARN_VAR);
    assert_eq!(
        ApiConfig::from_env().unwrap_err(),
        ConfigError::Missing(ApiConfig::UPDATE_ARN_VAR)
    );
    std::env::set_var(ApiConfig::UPDATE_ARN_VAR, UPDATE_ARN);
    std::env::set_var(ApiConfig::POLL_SECONDS_VAR, "1");
    let c = ApiConfig::from_env().unwrap();
    assert_eq!(
        (c.create_state_machine_arn.as_str(), c.timing.poll_seconds),
        (CREATE_ARN, 1)
    );
    std::env::set_var(ApiConfig::POLL_SECONDS_VAR, "0");
    assert!(matches!(
        ApiConfig::from_env(),
        Err(ConfigError::Invalid { .. })
    ));
    std::env::set_var(ApiConfig::POLL_SECONDS_VAR, "soon");
    assert!(matches!(
        ApiConfig::from_env(),
        Err(ConfigError::Invalid { .. })
    ));
    std::env::remove_var(ApiConfig::POLL_SECONDS_VAR);
}

mod openapi {
    //! `docs/openapi.yaml` read as indented text (no YAML dependency): its paths, methods and
    //! response statuses must be exactly [`routes::ROUTES`], and each schema's properties exactly
    //! the fields the code serializes.

    use super::*;

    fn document() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn indent(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }

    fn meaningful(line: &str) -> bool {
        let t = line.trim_start();
        !t.is_empty() && !t.starts_with('#')
    }

    fn key_of(line: &str) -> Option<String> {
        let t = line.trim();
        if t.starts_with('-') {
            return None;
        }
        let (key, _) = t.split_once(':')?;
        Some(key.trim_matches(|c| c == '\'' || c == '"').to_string())
    }

    /// The lines under `key` among `lines` (at their shallowest indentation).
    fn block<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
        let top = lines
            .iter()
            .filter(|l| meaningful(l))
            .map(|l| indent(l))
            .min()
            .unwrap_or(0);
        let start = lines
            .iter()
            .position(|l| meaningful(l) && indent(l) == top && key_of(l).as_deref() == Some(key))
            .unwrap_or_else(|| panic!("openapi.yaml: no key '{key}'"));
        lines[start + 1..]
            .iter()
            .take_while(|l| !meaningful(l) || indent(l) > top)
            .copied()
            .collect()
    }

    fn path<'a>(lines: &[&'a str], keys: &[&str]) -> Vec<&'a str> {
        keys.iter().fold(lines.to_vec(), |acc, k| block(&acc, k))
    }

    /// The keys directly under a block.
    fn keys(lines: &[&str]) -> std::collections::BTreeSet<String> {
        let top = lines
            .iter()
            .filter(|l| meaningful(l))
            .map(|l| indent(l))
            .min()
            .unwrap_or(0);
        lines
            .iter()
            .filter(|l| meaningful(l) && indent(l) == top)
            .filter_map(|l| key_of(l))
            .collect()
    }

    fn json_keys(v: &Value) -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn every_route_method_and_status_is_documented() {
        let doc = document();
        let lines: Vec<&str> = doc.lines().collect();
        assert!(doc.starts_with("openapi: 3.1"), "an OpenAPI 3.1 document");
        let paths = block(&lines, "paths");
        let templates: std::collections::BTreeSet<String> =
            routes::ROUTES.iter().map(|r| r.path.to_string()).collect();
        assert_eq!(keys(&paths), templates, "documented paths == served paths");
        for route in routes::ROUTES {
            let method = route.method.to_ascii_lowercase();
            let operation = path(&paths, &[route.path, &method]);
            let mut documented = keys(&block(&operation, "responses"));
            // 403 is API Gateway's answer to a request IAM auth refuses; the function never
            // sees those, and every route documents it. A route may answer 403 itself too
            // (`POST /reconcile`): then it is in its statuses.
            assert!(
                documented.contains("403"),
                "{} {}: 403 documented",
                route.method,
                route.path
            );
            if !route.statuses.contains(&403) {
                documented.remove("403");
            }
            let served: std::collections::BTreeSet<String> =
                route.statuses.iter().map(u16::to_string).collect();
            assert_eq!(documented, served, "{} {}", route.method, route.path);
        }
        for template in &templates {
            let methods: std::collections::BTreeSet<String> = routes::ROUTES
                .iter()
                .filter(|r| r.path == template)
                .map(|r| r.method.to_ascii_lowercase())
                .collect();
            let documented: std::collections::BTreeSet<String> = keys(&block(&paths, template))
                .into_iter()
                .filter(|k| k != "parameters")
                .collect();
            assert_eq!(documented, methods, "{template}");
        }
        for code in errors::codes::ALL {
            assert!(doc.contains(code), "error code {code} is documented");
        }
    }

    #[tokio::test]
    async fn schemas_list_exactly_the_serialized_fields() {
        let doc = document();
        let lines: Vec<&str> = doc.lines().collect();
        let schemas = path(&lines, &["components", "schemas"]);
        let properties = |name: &str| keys(&path(&schemas, &[name, "properties"]));

        let ctx = ctx();
        let rec = create(&ctx, "edge").await;
        let mut full = ctx.store.get(&rec.id).await.unwrap().unwrap();
        full.spec.vpc_id = Some("vpc-0123456789abcdef0".into());
        full.nodes.push(crate::record::Node {
            instance_id: "i-1".into(),
            role: crate::record::Role::ControlPlane,
            index: 0,
            private_ip: None,
            public_ip: None,
            state: crate::record::NodeState::Pending,
            channel: Some("1.32/stable".into()),
            zone: Some("us-east-1a".into()),
            zone_type: Some("wavelength-zone".into()),
            carrier_ip: Some("155.146.0.2".into()),
            volume_type: Some("gp2".into()),
        });
        full.failure = Some(crate::record::Failure {
            stage: "s".into(),
            error: "e".into(),
            reason: "r".into(),
        });
        full.updates.push(crate::record::Update {
            id: "u-0123456789abcdef".into(),
            kind: crate::record::UpdateKind::Scale,
            params: json!({"workers": {"from": 1, "to": 2}}),
            status: crate::record::UpdateStatus::Failed,
            execution_arn: Some("arn".into()),
            created_by: Some("arn".into()),
            started_at: "t".into(),
            finished_at: Some("t".into()),
            failure: full.failure.clone(),
        });
        full.balancer = Some(crate::record::ApiBalancer {
            dns_name: "mecplane-c-1.elb.amazonaws.com".into(),
            load_balancer_arn: "arn:lb".into(),
            listener_arn: "arn:listener".into(),
            target_group_arn: "arn:tg".into(),
        });
        full.node_check = crate::record::NodeCheck {
            checked_at: Some(1),
            pending: Some(crate::record::PendingCheck {
                command_id: "c".into(),
                instance_id: "i-1".into(),
                sent_at: 2,
            }),
        };
        let v = serde_json::to_value(&full).unwrap();
        assert_eq!(properties("ClusterRecord"), json_keys(&v));
        assert_eq!(properties("Update"), json_keys(&v["updates"][0]));
        assert_eq!(
            properties("UpdateList"),
            json_keys(&body(&handle(&ctx, get("/clusters/edge/updates")).await))
        );
        assert_eq!(
            properties("ClusterPatch"),
            json_keys(&serde_json::to_value(updates::ClusterPatch::default()).unwrap())
        );
        assert_eq!(properties("ClusterSpec"), json_keys(&v["spec"]));
        assert_eq!(properties("Node"), json_keys(&v["nodes"][0]));
        assert_eq!(properties("Failure"), json_keys(&v["failure"]));
        let event =
            serde_json::to_value(Event::now("c-1", "api", crate::record::Phase::Started, ""))
                .unwrap();
        assert_eq!(properties("Event"), json_keys(&event));
        // Some fields are left out of the JSON when unset (idempotency hashes).
        let request = serde_json::to_value(crate::spec::ClusterRequest {
            allow_api_from_anywhere: Some(false),
            exposed_ports: Some(vec![]),
            subnet_ids: Some(vec![]),
            worker_subnet_ids: Some(vec![]),
            vpc_id: Some("vpc-0123456789abcdef0".into()),
            ami_id: Some("ami-0123456789abcdef0".into()),
            api_endpoint: Some("nlb".into()),
            extra_sans: Some(vec![]),
            pod_security: Some("restricted".into()),
            ..Default::default()
        })
        .unwrap();
        for field in crate::spec::ClusterRequest::OMITTED_WHEN_UNSET {
            assert!(request.get(field).is_some(), "{field} is set above");
        }
        assert_eq!(properties("ClusterRequest"), json_keys(&request));
        let list = body(&handle(&ctx, get("/clusters")).await);
        assert_eq!(properties("ClusterList"), json_keys(&list));
        assert_eq!(
            properties("EventList"),
            json_keys(&body(&handle(&ctx, get("/clusters/edge/events")).await))
        );
        let err = body(&handle(&ctx, get("/nope")).await);
        assert_eq!(properties("Error"), json_keys(&err));
        assert_eq!(
            keys(&path(
                &schemas,
                &["Error", "properties", "error", "properties"]
            )),
            json_keys(&err["error"])
        );
        let kube = serde_json::to_value(clusters::KubeconfigAnswer {
            cluster_id: "c",
            name: "n",
            kubeconfig: "k",
        })
        .unwrap();
        assert_eq!(properties("Kubeconfig"), json_keys(&kube));
        assert_eq!(
            properties("Health"),
            json_keys(&body(&handle(&ctx, get("/healthz")).await))
        );
    }
}

fn as_principal(mut req: ApiRequest, principal: &str) -> ApiRequest {
    req.caller = Some(format!("arn:aws:iam::123456789012:user/{principal}"));
    req
}

#[tokio::test]
async fn the_creator_is_recorded_and_clusters_per_principal_are_limited() {
    let mut ctx = ctx();
    ctx.config.policy.max_clusters_per_principal = 2;
    for name in ["a", "b"] {
        let r = handle(
            &ctx,
            as_principal(post(&json!({"name": name}).to_string()), "alice"),
        )
        .await;
        assert_eq!(r.status, 202);
        assert_eq!(
            body(&r)["created_by"],
            "arn:aws:iam::123456789012:user/alice"
        );
    }
    let got = handle(&ctx, get("/clusters/a")).await;
    assert_eq!(
        body(&got)["created_by"],
        "arn:aws:iam::123456789012:user/alice"
    );
    let r = handle(&ctx, as_principal(post(r#"{"name": "c"}"#), "alice")).await;
    assert_eq!(error_of(&r), (409, "TooManyClusters".into(), None));
    assert!(body(&r)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allows 2"));
    // Another principal has a limit of its own; a deleted cluster no longer counts.
    let r = handle(&ctx, as_principal(post(r#"{"name": "c"}"#), "bob")).await;
    assert_eq!(r.status, 202);
    let a = ctx.store.find_by_name("a").await.unwrap().unwrap();
    set_status(&ctx.store, &a.id, Status::Deleted).await;
    let r = handle(&ctx, as_principal(post(r#"{"name": "d"}"#), "alice")).await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn own_clusters_only_hides_the_clusters_of_others() {
    let mut ctx = ctx();
    ctx.config.policy.own_clusters_only = true;
    let r = handle(&ctx, as_principal(post(r#"{"name": "edge"}"#), "alice")).await;
    let id = body(&r)["id"].as_str().unwrap().to_string();
    set_status(&ctx.store, &id, Status::Active).await;
    for path in [
        "/clusters/edge".to_string(),
        format!("/clusters/{id}"),
        format!("/clusters/{id}/events"),
        format!("/clusters/{id}/kubeconfig"),
    ] {
        let r = handle(&ctx, as_principal(get(&path), "bob")).await;
        assert_eq!(error_of(&r).0, 404, "{path}");
        let own = handle(&ctx, as_principal(get(&path), "alice")).await;
        assert_ne!(own.status, 404, "{path}");
    }
    let r = handle(
        &ctx,
        as_principal(ApiRequest::new("DELETE", "/clusters/edge"), "bob"),
    )
    .await;
    assert_eq!(error_of(&r).0, 404);
    assert_eq!(
        ctx.store.get(&id).await.unwrap().unwrap().status,
        Status::Active
    );
    let list = |who| handle(&ctx, as_principal(get("/clusters"), who));
    assert_eq!(body(&list("bob").await)["clusters"], json!([]));
    assert_eq!(body(&list("alice").await)["clusters"][0]["id"], id.as_str());
    let r = handle(
        &ctx,
        as_principal(ApiRequest::new("DELETE", "/clusters/edge"), "alice"),
    )
    .await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn a_path_no_cluster_could_have_is_404_without_asking_the_table() {
    let broken = ApiContext {
        store: DownStore(CloudError::Other("key too long".into())),
        executions: FakeExecutions::default(),
        parameters: FakeCloud::new(),
        config: config(),
    };
    let long = "a".repeat(3000);
    for req in [
        get(&format!("/clusters/{long}")),
        get(&format!("/clusters/{long}/events")),
        get("/clusters/Edge%20One/kubeconfig"),
        ApiRequest::new("DELETE", &format!("/clusters/{long}")),
    ] {
        assert_eq!(error_of(&handle(&broken, req).await).0, 404);
    }
}

#[tokio::test]
async fn a_name_shaped_like_an_id_is_422() {
    let r = handle(&ctx(), post(r#"{"name": "c-0123456789abcdef"}"#)).await;
    assert_eq!(
        error_of(&r),
        (422, "ValidationError".into(), Some("name".into()))
    );
}

#[tokio::test]
async fn cost_guardrails_are_422_naming_the_field() {
    let ctx = ctx();
    for (req, field) in [
        (
            r#"{"name": "a", "instance_type": "p5.48xlarge"}"#,
            "instance_type",
        ),
        (
            r#"{"name": "a", "root_volume_gib": 2000}"#,
            "root_volume_gib",
        ),
        (r#"{"name": "a", "workers": 12}"#, "workers"),
    ] {
        assert_eq!(
            error_of(&handle(&ctx, post(req)).await),
            (422, "ValidationError".into(), Some(field.into())),
            "{req}"
        );
    }
}

// ---- PATCH /clusters/{id}: changes to a live cluster, and their history ----

fn patch(path: &str, body: &str) -> ApiRequest {
    ApiRequest {
        body: body.as_bytes().to_vec(),
        ..ApiRequest::new("PATCH", path)
    }
}

fn if_match(mut req: ApiRequest, tag: &str) -> ApiRequest {
    req.headers.push(("If-Match".into(), tag.into()));
    req
}

/// An ACTIVE cluster with `workers` workers.
async fn active<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    store: &FakeStore,
    name: &str,
    workers: u32,
) -> ClusterRecord {
    let r = handle(
        ctx,
        post(&json!({"name": name, "workers": workers}).to_string()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = body(&r)["id"].as_str().unwrap().to_string();
    set_status(store, &id, Status::Active).await
}

/// What helper stages do when an update ends: the spec takes the new size, the update its
/// outcome, the record ACTIVE again.
async fn finish_update(store: &FakeStore, id: &str, outcome: crate::record::UpdateStatus) {
    let mut r = store.get(id).await.unwrap().unwrap();
    let u = r.updates.last_mut().unwrap();
    u.status = outcome;
    u.finished_at = Some(crate::clock::now_rfc3339());
    if outcome == crate::record::UpdateStatus::Successful {
        r.spec.workers = u.params["workers"]["to"].as_u64().unwrap() as u32;
    }
    r.status = Status::Active;
    store.update(&r).await.unwrap();
}

#[tokio::test]
async fn patch_records_the_update_and_starts_its_execution() {
    let ctx = ctx();
    let rec = active(&ctx, &ctx.store, "edge", 2).await;
    let r = handle(
        &ctx,
        as_principal(patch("/clusters/edge", r#"{"workers": 4}"#), "alice"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let got: ClusterRecord = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(got.status, Status::Updating);
    assert_eq!(got.spec.workers, 2, "the API never changes the spec itself");
    assert_eq!(got.updates.len(), 1);
    let u = &got.updates[0];
    assert!(resources::is_update_id(&u.id), "{}", u.id);
    assert_eq!(
        (u.kind, u.status),
        (
            crate::record::UpdateKind::Scale,
            crate::record::UpdateStatus::InProgress
        )
    );
    assert_eq!(u.params, json!({"workers": {"from": 2, "to": 4}}));
    assert_eq!(
        u.created_by.as_deref(),
        Some("arn:aws:iam::123456789012:user/alice")
    );
    assert!(u.finished_at.is_none() && u.failure.is_none());
    assert_eq!(
        r.header("location"),
        Some(format!("/clusters/{}/updates/{}", rec.id, u.id).as_str())
    );
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", got.version).as_str())
    );

    let started = ctx.executions.started();
    assert_eq!(started.len(), 2, "the create's and the update's");
    let update = &started[1];
    assert_eq!(update.state_machine_arn, UPDATE_ARN);
    assert_eq!(update.name, format!("{}-update-{}", rec.id, u.id));
    assert_eq!(
        serde_json::from_str::<Value>(&update.input).unwrap(),
        json!({"cluster_id": rec.id, "update_id": u.id, "region": "us-east-1",
               "timing": serde_json::to_value(&ctx.config.timing).unwrap()})
    );
    assert_eq!(u.execution_arn.as_deref(), Some(update.arn.as_str()));
    assert_eq!(ctx.store.get(&rec.id).await.unwrap().unwrap(), got);
    assert!(ctx
        .store
        .events(&rec.id)
        .await
        .unwrap()
        .iter()
        .any(|e| e.detail.contains("scale from 2 to 4 worker(s)") && e.detail.contains(&u.id)));
}

#[tokio::test]
async fn a_patch_that_changes_nothing_is_200_and_starts_nothing() {
    let ctx = ctx();
    let rec = active(&ctx, &ctx.store, "edge", 2).await;
    for req in [
        r#"{"workers": 2}"#,
        r#"{}"#,
        r#"{"microk8s_channel": "1.32/stable", "addons": ["dns"], "workers": 2}"#,
        r#"{"workers": null}"#,
    ] {
        let r = handle(&ctx, patch(&format!("/clusters/{}", rec.id), req)).await;
        assert_eq!(r.status, 200, "{req}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(body(&r)["status"], "ACTIVE");
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", rec.version).as_str())
        );
    }
    assert_eq!(ctx.executions.started().len(), 1, "only the create's");
    assert_eq!(ctx.store.get(&rec.id).await.unwrap().unwrap(), rec);
}

#[tokio::test]
async fn every_record_answer_carries_its_etag_and_a_stale_if_match_is_412() {
    let ctx = ctx();
    let created = handle(&ctx, post(r#"{"name": "edge"}"#)).await;
    assert_eq!(
        created.header("etag"),
        Some("\"2\""),
        "registered, then bound"
    );
    let rec = set_status(
        &ctx.store,
        body(&created)["id"].as_str().unwrap(),
        Status::Active,
    )
    .await;
    let got = handle(&ctx, get("/clusters/edge")).await;
    let tag = format!("\"{}\"", rec.version);
    assert_eq!(got.header("etag"), Some(tag.as_str()));

    for stale in ["\"1\"", "\"2\", \"1\"", "W/\"3\"", "nope"] {
        let r = handle(
            &ctx,
            if_match(patch("/clusters/edge", r#"{"workers": 1}"#), stale),
        )
        .await;
        assert_eq!(
            error_of(&r),
            (412, "PreconditionFailed".into(), None),
            "{stale}"
        );
        assert!(body(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&tag));
    }
    assert_eq!(ctx.executions.started().len(), 1, "nothing started");
    // Checked before anything else about the change, a no-op included.
    let r = handle(&ctx, if_match(patch("/clusters/edge", "{}"), "\"1\"")).await;
    assert_eq!(r.status, 412);

    let r = handle(
        &ctx,
        if_match(patch("/clusters/edge", r#"{"workers": 1}"#), &tag),
    )
    .await;
    assert_eq!(r.status, 202);
    let next = r.header("etag").unwrap().to_string();
    assert_ne!(next, tag);
    // The ETag answered is the one to send next; the old one is stale now.
    let r = handle(
        &ctx,
        if_match(patch("/clusters/edge", r#"{"workers": 2}"#), &tag),
    )
    .await;
    assert_eq!(r.status, 412);
    let r = handle(
        &ctx,
        if_match(patch("/clusters/edge", r#"{"workers": 2}"#), &next),
    )
    .await;
    assert_eq!(error_of(&r).0, 409, "matches, but an update runs");
    let id = body(&got)["id"].as_str().unwrap().to_string();
    finish_update(&ctx.store, &id, crate::record::UpdateStatus::Successful).await;
    let deleted = handle(&ctx, ApiRequest::new("DELETE", "/clusters/edge")).await;
    assert_eq!(deleted.status, 202);
    let version = body(&deleted)["version"].as_u64().unwrap();
    assert_eq!(
        deleted.header("etag"),
        Some(format!("\"{version}\"").as_str())
    );
}

#[tokio::test]
async fn a_patch_unless_active_is_409_naming_the_status() {
    let ctx = ctx();
    let creating = create(&ctx, "young").await;
    let r = handle(&ctx, patch("/clusters/young", r#"{"workers": 3}"#)).await;
    assert_eq!(error_of(&r), (409, "ClusterBusy".into(), None));
    assert!(body(&r)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CREATING"));
    // A no-op too: nothing is decided about a cluster that is not ACTIVE.
    assert_eq!(
        handle(&ctx, patch("/clusters/young", "{}")).await.status,
        409
    );

    let rec = active(&ctx, &ctx.store, "edge", 1).await;
    assert_eq!(
        handle(&ctx, patch("/clusters/edge", r#"{"workers": 3}"#))
            .await
            .status,
        202
    );
    let r = handle(&ctx, patch("/clusters/edge", r#"{"workers": 5}"#)).await;
    assert_eq!(error_of(&r), (409, "ClusterBusy".into(), None));
    let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
    let update = &ctx.store.get(&rec.id).await.unwrap().unwrap().updates[0];
    assert!(
        message.contains("UPDATING") && message.contains(&update.id),
        "{message}"
    );

    set_status(&ctx.store, &creating.id, Status::Failed).await;
    let r = handle(&ctx, patch("/clusters/young", r#"{"workers": 3}"#)).await;
    assert!(
        error_of(&r) == (409, "ClusterBusy".into(), None)
            && body(&r)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("FAILED")
    );
    assert_eq!(ctx.executions.started().len(), 3, "two creates, one update");
}

/// A store whose first two reads wait for each other, so two requests read the same record
/// before either writes.
struct RacingStore {
    inner: FakeStore,
    gate: tokio::sync::Barrier,
    gets: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl ClusterStore for RacingStore {
    async fn create(&self, r: &ClusterRecord) -> Result<bool, CloudError> {
        self.inner.create(r).await
    }
    async fn get(&self, id: &str) -> Result<Option<ClusterRecord>, CloudError> {
        let read = self.inner.get(id).await;
        if self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            self.gate.wait().await;
        }
        read
    }
    async fn find_by_name(&self, name: &str) -> Result<Option<ClusterRecord>, CloudError> {
        self.inner.find_by_name(name).await
    }
    async fn update(&self, r: &ClusterRecord) -> Result<ClusterRecord, CloudError> {
        self.inner.update(r).await
    }
    async fn list(
        &self,
        f: &ListFilter,
        t: Option<&str>,
        n: u32,
    ) -> Result<RecordPage, CloudError> {
        self.inner.list(f, t, n).await
    }
    async fn append_event(&self, e: &Event) -> Result<(), CloudError> {
        self.inner.append_event(e).await
    }
    async fn events(&self, id: &str) -> Result<Vec<Event>, CloudError> {
        self.inner.events(id).await
    }
    async fn claim_key(&self, k: &str, id: &str, h: &str) -> Result<KeyClaim, CloudError> {
        self.inner.claim_key(k, id, h).await
    }
    async fn find_key(&self, k: &str) -> Result<Option<KeyClaim>, CloudError> {
        self.inner.find_key(k).await
    }
}

#[tokio::test]
async fn two_patches_racing_make_one_update() {
    let plain = ctx();
    let rec = active(&plain, &plain.store, "edge", 1).await;
    let racing = ApiContext {
        store: RacingStore {
            inner: plain.store.clone(),
            gate: tokio::sync::Barrier::new(2),
            gets: Default::default(),
        },
        executions: plain.executions.clone(),
        parameters: FakeCloud::new(),
        config: config(),
    };
    let path = format!("/clusters/{}", rec.id);
    let (a, b) = tokio::join!(
        handle(&racing, patch(&path, r#"{"workers": 3}"#)),
        handle(&racing, patch(&path, r#"{"workers": 5}"#)),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{a:?} {b:?}");
    let stored = plain.store.get(&rec.id).await.unwrap().unwrap();
    assert_eq!(stored.updates.len(), 1);
    assert_eq!(
        plain.executions.started().len(),
        2,
        "the create's and one update's"
    );

    // Twenty at once on a multi-threaded runtime: still one update.
    let ctx = Arc::new(ctx());
    let rec = active(&*ctx, &ctx.store, "many", 1).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let ctx = ctx.clone();
        let path = format!("/clusters/{}", rec.id);
        tasks.spawn(async move {
            handle(
                &*ctx,
                patch(&path, &format!(r#"{{"workers": {}}}"#, 2 + i % 5)),
            )
            .await
        });
    }
    let statuses: Vec<u16> = tasks.join_all().await.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [202, 409, 503].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(
        ctx.store.get(&rec.id).await.unwrap().unwrap().updates.len(),
        1
    );
}

#[tokio::test]
async fn an_update_that_cannot_start_fails_and_leaves_the_cluster_active() {
    let up = ctx();
    let rec = active(&up, &up.store, "edge", 2).await;
    let down = ApiContext {
        store: up.store.clone(),
        executions: DownExecutions(CloudError::Transient("throttled".into())),
        parameters: FakeCloud::new(),
        config: config(),
    };
    let r = handle(&down, patch("/clusters/edge", r#"{"workers": 0}"#)).await;
    assert_eq!(error_of(&r), (503, "ServiceUnavailable".into(), None));
    assert_eq!(r.header("retry-after"), Some("2"));
    let stored = up.store.get(&rec.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.spec.workers), (Status::Active, 2));
    let u = &stored.updates[0];
    assert_eq!(u.status, crate::record::UpdateStatus::Failed);
    assert!(u.finished_at.is_some());
    let failure = u.failure.as_ref().unwrap();
    assert_eq!(failure.error, "StartExecutionFailed");
    assert!(
        failure
            .reason
            .starts_with("the update execution could not be started"),
        "{}",
        failure.reason
    );
    // With Step Functions back, the same PATCH goes through as a new update.
    let r = handle(&up, patch("/clusters/edge", r#"{"workers": 0}"#)).await;
    assert_eq!(r.status, 202);
    let updates = body(&handle(&up, get("/clusters/edge/updates")).await)["updates"].clone();
    assert_eq!(updates[0]["status"], "InProgress");
    assert_eq!(updates[1]["status"], "Failed");
}

#[tokio::test]
async fn a_delete_while_updating_is_409_and_an_interrupted_update_is_failed() {
    let ctx = ctx();
    let rec = active(&ctx, &ctx.store, "edge", 1).await;
    assert_eq!(
        handle(&ctx, patch("/clusters/edge", r#"{"workers": 2}"#))
            .await
            .status,
        202
    );
    let r = handle(&ctx, ApiRequest::new("DELETE", "/clusters/edge")).await;
    assert_eq!(error_of(&r), (409, "ClusterBusy".into(), None));
    let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("UPDATING") && message.contains("delete it"),
        "{message}"
    );
    let stored = ctx.store.get(&rec.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Updating);
    assert!(stored.delete_execution_arn.is_none());

    // The update execution is stopped from the console: the next DELETE finds it ended, marks
    // the update Failed, the cluster ACTIVE, and deletes it.
    let arn = stored.updates[0].execution_arn.clone().unwrap();
    ctx.executions.set_status(&arn, ExecutionStatus::Aborted);
    let r = handle(&ctx, ApiRequest::new("DELETE", "/clusters/edge")).await;
    assert_eq!(
        (r.status, body(&r)["status"].as_str()),
        (202, Some("DELETING"))
    );
    let u = &ctx.store.get(&rec.id).await.unwrap().unwrap().updates[0];
    assert_eq!(u.status, crate::record::UpdateStatus::Failed);
    let f = u.failure.as_ref().unwrap();
    assert_eq!(f.error, "UpdateInterrupted");
    assert!(f.reason.contains("ABORTED"), "{}", f.reason);
}

#[tokio::test]
async fn an_interrupted_update_does_not_block_the_next_patch() {
    let ctx = ctx();
    let rec = active(&ctx, &ctx.store, "edge", 1).await;
    handle(&ctx, patch("/clusters/edge", r#"{"workers": 2}"#)).await;
    let first = ctx.store.get(&rec.id).await.unwrap().unwrap().updates[0].clone();
    // Still running: busy.
    assert_eq!(
        handle(&ctx, patch("/clusters/edge", r#"{"workers": 3}"#))
            .await
            .status,
        409
    );
    ctx.executions.set_status(
        first.execution_arn.as_deref().unwrap(),
        ExecutionStatus::Failed,
    );
    let r = handle(&ctx, patch("/clusters/edge", r#"{"workers": 3}"#)).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let updates = &body(&r)["updates"];
    assert_eq!(updates[0]["status"], "Failed");
    assert_eq!(updates[1]["status"], "InProgress");
    assert_eq!(updates[1]["params"]["workers"], json!({"from": 1, "to": 3}));
}

#[tokio::test]
async fn updates_are_listed_newest_first_and_found_by_id() {
    let ctx = ctx();
    let rec = active(&ctx, &ctx.store, "edge", 1).await;
    let empty = handle(&ctx, get("/clusters/edge/updates")).await;
    assert_eq!((empty.status, body(&empty)), (200, json!({"updates": []})));
    let mut ids = Vec::new();
    for (to, outcome) in [
        (3, crate::record::UpdateStatus::Successful),
        (2, crate::record::UpdateStatus::Failed),
        (0, crate::record::UpdateStatus::Successful),
    ] {
        let r = handle(
            &ctx,
            patch("/clusters/edge", &json!({"workers": to}).to_string()),
        )
        .await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        ids.push(
            r.header("location")
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string(),
        );
        finish_update(&ctx.store, &rec.id, outcome).await;
    }
    let stored = ctx.store.get(&rec.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.spec.workers), (Status::Active, 0));
    let listed = body(&handle(&ctx, get(&format!("/clusters/{}/updates", rec.id))).await);
    let listed_ids: Vec<&str> = listed["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed_ids,
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]
    );
    assert_eq!(
        listed["updates"][1]["params"],
        json!({"workers": {"from": 3, "to": 2}})
    );
    assert_eq!(
        listed["updates"][0]["params"],
        json!({"workers": {"from": 3, "to": 0}})
    );

    let one = handle(&ctx, get(&format!("/clusters/edge/updates/{}", ids[1]))).await;
    assert_eq!(one.status, 200);
    assert_eq!(body(&one), listed["updates"][1]);
    for missing in [
        "/clusters/edge/updates/u-0000000000000000".to_string(),
        "/clusters/ghost/updates".to_string(),
        format!("/clusters/ghost/updates/{}", ids[0]),
    ] {
        assert_eq!(
            error_of(&handle(&ctx, get(&missing)).await).0,
            404,
            "{missing}"
        );
    }
}

#[tokio::test]
async fn a_record_keeps_at_most_max_updates() {
    let ctx = ctx();
    let rec = active(&ctx, &ctx.store, "edge", 0).await;
    let max = crate::record::MAX_UPDATES_KEPT;
    for i in 0..max + 2 {
        let to = if i % 2 == 0 { 1 } else { 0 };
        let r = handle(
            &ctx,
            patch("/clusters/edge", &json!({"workers": to}).to_string()),
        )
        .await;
        assert_eq!(r.status, 202);
        finish_update(&ctx.store, &rec.id, crate::record::UpdateStatus::Successful).await;
    }
    let stored = ctx.store.get(&rec.id).await.unwrap().unwrap();
    assert_eq!(stored.updates.len(), max);
    assert_eq!(
        stored.updates[max - 1].params["workers"]["to"],
        0,
        "the newest kept"
    );
}

#[tokio::test]
async fn bad_patches_are_4xx_naming_the_field() {
    let ctx = ctx();
    active(&ctx, &ctx.store, "edge", 2).await;
    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        ("{", 400, "MalformedJson", None),
        ("", 400, "MalformedJson", None),
        ("[]", 422, "ValidationError", None),
        (
            r#"{"workers": 51}"#,
            422,
            "ValidationError",
            Some("workers"),
        ),
        (
            r#"{"workers": 10}"#,
            422,
            "ValidationError",
            Some("workers"),
        ),
        (
            r#"{"workers": -1}"#,
            422,
            "ValidationError",
            Some("workers"),
        ),
        (
            r#"{"workers": "3"}"#,
            422,
            "ValidationError",
            Some("workers"),
        ),
        (r#"{"wrokers": 3}"#, 422, "ValidationError", Some("wrokers")),
        (r#"{"name": "other"}"#, 422, "ValidationError", Some("name")),
        (
            r#"{"workers": 3, "microk8s_channel": "1.33/stable"}"#,
            422,
            "ValidationError",
            Some("microk8s_channel"),
        ),
        (
            r#"{"microk8s_channel": "1.34/stable"}"#,
            422,
            "ValidationError",
            Some("microk8s_channel"),
        ),
        (
            r#"{"microk8s_channel": "1.31/stable"}"#,
            422,
            "ValidationError",
            Some("microk8s_channel"),
        ),
        (
            r#"{"microk8s_channel": "1.33/edge"}"#,
            422,
            "ValidationError",
            Some("microk8s_channel"),
        ),
        (
            r#"{"addons": ["dns", "gpu"]}"#,
            422,
            "ValidationError",
            Some("addons[1]"),
        ),
        (
            r#"{"addons": ["dns", "dns"]}"#,
            422,
            "ValidationError",
            Some("addons[1]"),
        ),
        (
            r#"{"addons": ["ingress"], "microk8s_channel": "1.33/stable"}"#,
            422,
            "ValidationError",
            Some("addons"),
        ),
        (
            r#"{"addons": ["dns", 3]}"#,
            422,
            "ValidationError",
            Some("addons[1]"),
        ),
    ];
    for (req, status, code, field) in cases {
        let r = handle(&ctx, patch("/clusters/edge", req)).await;
        assert_eq!(
            error_of(&r),
            (*status, code.to_string(), field.map(String::from)),
            "{req}"
        );
    }
    let r = handle(
        &ctx,
        patch("/clusters/edge", r#"{"microk8s_channel": "1.31/stable"}"#),
    )
    .await;
    let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("MicroK8s is never downgraded"),
        "{message}"
    );
    let r = handle(&ctx, patch("/clusters/edge", r#"{"workers": 10}"#)).await;
    assert!(body(&r)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit of 10 nodes"));
    assert_eq!(ctx.executions.started().len(), 1, "only the create's");
    // Out of range is refused before the table is asked.
    let broken = ApiContext {
        store: DownStore(CloudError::Other("boom".into())),
        executions: FakeExecutions::default(),
        parameters: FakeCloud::new(),
        config: config(),
    };
    assert_eq!(
        handle(&broken, patch("/clusters/edge", r#"{"workers": 99}"#))
            .await
            .status,
        422
    );
    assert_eq!(
        handle(&ctx, patch("/clusters/ghost", "{}")).await.status,
        404
    );
}

#[tokio::test]
async fn own_clusters_only_covers_patch_and_updates() {
    let mut ctx = ctx();
    ctx.config.policy.own_clusters_only = true;
    let r = handle(&ctx, as_principal(post(r#"{"name": "edge"}"#), "alice")).await;
    let id = body(&r)["id"].as_str().unwrap().to_string();
    set_status(&ctx.store, &id, Status::Active).await;
    let bob = handle(
        &ctx,
        as_principal(patch("/clusters/edge", r#"{"workers": 1}"#), "bob"),
    )
    .await;
    assert_eq!(error_of(&bob).0, 404);
    let alice = handle(
        &ctx,
        as_principal(patch("/clusters/edge", r#"{"workers": 1}"#), "alice"),
    )
    .await;
    assert_eq!(alice.status, 202);
    let location = alice.header("location").unwrap().to_string();
    for path in [format!("/clusters/{id}/updates"), location] {
        assert_eq!(
            error_of(&handle(&ctx, as_principal(get(&path), "bob")).await).0,
            404
        );
        assert_eq!(
            handle(&ctx, as_principal(get(&path), "alice")).await.status,
            200,
            "{path}"
        );
    }
}

/// `handle_with` with `cloud` as every region's EC2 and SSM (and an empty ELB).
async fn handle_in(ctx: &Ctx, cloud: &FakeCloud, req: ApiRequest) -> ApiResponse {
    use crate::reconcile::{Fleet, RegionPorts, Settings};
    let cloud = cloud.clone();
    let ports_in = move |_: &str| RegionPorts {
        ec2: Box::new(cloud.clone()),
        ssm: Box::new(cloud.clone()),
        balancers: Box::new(crate::fakes::FakeBalancers::default()),
    };
    let settings = Settings::default();
    let fleet = Fleet {
        ports_in: &ports_in,
        allowed_regions: &[],
        settings: &settings,
    };
    handle_with(ctx, req, Some(&fleet)).await
}

/// Placement (`crate::placement`) as `POST /clusters` checks it: against the fake EC2 of the
/// cluster's region, before anything is claimed.
mod placement {
    use super::*;
    use crate::stages::fixtures::zone;

    /// A VPC with subnets in three standard zones, a Local Zone offering two types, and a Local
    /// Zone whose group is not opted in.
    fn cloud() -> FakeCloud {
        let cloud = FakeCloud::new();
        cloud.add_subnet("subnet-0000000a0", "vpc-0000000a", "us-east-1a");
        cloud.add_subnet("subnet-0000000b0", "vpc-0000000a", "us-east-1b");
        cloud.add_subnet("subnet-0000000b1", "vpc-0000000a", "us-east-1b");
        cloud.add_subnet("subnet-0000000c0", "vpc-0000000a", "us-east-1c");
        cloud.add_subnet("subnet-0000000d0", "vpc-0000000a", "us-east-1d");
        cloud.add_zone(
            zone("us-east-1-bos-1a", "local-zone", true),
            &["t3.xlarge", "t3.medium"],
        );
        cloud.add_subnet("subnet-000000b05", "vpc-0000000a", "us-east-1-bos-1a");
        cloud.add_zone(
            zone("us-east-1-mia-1a", "local-zone", false),
            &["t3.medium"],
        );
        cloud.add_subnet("subnet-0000000a1a", "vpc-0000000a", "us-east-1-mia-1a");
        cloud.add_subnet("subnet-0000000f0", "vpc-0000000f", "us-east-1a");
        cloud
    }

    /// Nothing was claimed: no record, no execution, the name free.
    fn nothing_claimed(ctx: &Ctx) {
        assert!(ctx.store.records().is_empty(), "no record");
        assert!(ctx.executions.started().is_empty(), "no execution");
    }

    #[tokio::test]
    async fn refusals_are_422_naming_the_field_and_claim_nothing() {
        let (ctx, cloud) = (ctx(), cloud());
        let ask = |body: Value| with_key(post(&body.to_string()), "k-1");

        // The default type (t4g.medium) in the Local Zone: named, with what the zone offers.
        let r = handle_in(
            &ctx,
            &cloud,
            ask(json!({"name": "edge", "subnet_ids": ["subnet-0000000a0", "subnet-000000b05"]})),
        )
        .await;
        let (status, code, field) = error_of(&r);
        assert_eq!((status, code.as_str()), (422, "ValidationError"));
        assert_eq!(field.as_deref(), Some("instance_type"));
        let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("t4g.medium is not offered in us-east-1-bos-1a")
                && message.contains("offered there: t3.medium, t3.xlarge"),
            "{message}"
        );
        nothing_claimed(&ctx);

        // Workers in a zone whose group is not opted in: the entry and the group.
        let r = handle_in(
            &ctx,
            &cloud,
            ask(json!({"name": "edge", "workers": 1, "worker_subnet_ids": ["subnet-0000000a1a"]})),
        )
        .await;
        assert_eq!(
            error_of(&r),
            (
                422,
                "ValidationError".into(),
                Some("worker_subnet_ids[0]".into())
            )
        );
        assert!(
            body(&r)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("zone group us-east-1-mia-1"),
            "{}",
            body(&r)
        );
        // A subnet that does not exist, and one of another VPC.
        let r = handle_in(
            &ctx,
            &cloud,
            ask(json!({"name": "edge", "subnet_ids": ["subnet-0000000a0", "subnet-00000000e"]})),
        )
        .await;
        assert_eq!(error_of(&r).2.as_deref(), Some("subnet_ids[1]"));
        let r = handle_in(
            &ctx,
            &cloud,
            ask(json!({"name": "edge", "subnet_ids": ["subnet-0000000a0", "subnet-0000000f0"]})),
        )
        .await;
        assert_eq!(error_of(&r).2.as_deref(), Some("subnet_ids[1]"));
        nothing_claimed(&ctx);

        // Fixed, with the same key and name: nothing of the refusals stands in the way.
        let r = handle_in(
            &ctx,
            &cloud,
            ask(json!({"name": "edge", "instance_type": "t3.medium",
                "subnet_ids": ["subnet-0000000a0", "subnet-000000b05"]})),
        )
        .await;
        assert_eq!(r.status, 202, "{}", body(&r));
        assert_eq!(ctx.store.records().len(), 1);
        assert_eq!(ctx.executions.started().len(), 1);
        // The replay answers the same cluster.
        let again = handle_in(
            &ctx,
            &cloud,
            ask(json!({"name": "edge", "instance_type": "t3.medium",
                "subnet_ids": ["subnet-0000000a0", "subnet-000000b05"]})),
        )
        .await;
        assert_eq!(
            (again.status, body(&again)["id"].clone()),
            (202, body(&r)["id"].clone())
        );
        assert_eq!(ctx.executions.started().len(), 1);
        // Even once the placement would be refused (the subnet's zone no longer usable) or
        // could not be checked: the replay answers the cluster the key was taken for.
        cloud.add_subnet("subnet-0000000a0", "vpc-0000000a", "us-east-1-mia-1a");
        cloud.fail_next_lookup(CloudError::Transient("Throttling".into()));
        for _ in 0..2 {
            let replay = handle_in(
                &ctx,
                &cloud,
                ask(json!({"name": "edge", "instance_type": "t3.medium",
                    "subnet_ids": ["subnet-0000000a0", "subnet-000000b05"]})),
            )
            .await;
            assert_eq!(replay.status, 202, "{}", body(&replay));
            assert_eq!(body(&replay)["id"], body(&r)["id"]);
        }
        // A new request is checked as ever: the failure the replays never met, then the zone.
        let other =
            || post(&json!({"name": "other", "subnet_ids": ["subnet-0000000a0"]}).to_string());
        assert_eq!(error_of(&handle_in(&ctx, &cloud, other()).await).0, 503);
        let refused = handle_in(&ctx, &cloud, other()).await;
        assert_eq!(error_of(&refused).2.as_deref(), Some("subnet_ids[0]"));
    }

    #[tokio::test]
    async fn an_ec2_failure_during_the_check_is_a_503_to_retry() {
        let (ctx, cloud) = (ctx(), cloud());
        let ask = || {
            with_key(
                post(&json!({"name": "edge", "subnet_ids": ["subnet-0000000a0"]}).to_string()),
                "k-1",
            )
        };
        for error in [
            CloudError::Transient("Throttling".into()),
            CloudError::Other("UnauthorizedOperation".into()),
        ] {
            cloud.fail_next_lookup(error);
            let r = handle_in(&ctx, &cloud, ask()).await;
            assert_eq!(error_of(&r).0, 503, "{}", body(&r));
            assert_eq!(r.header("retry-after"), Some("2"));
            nothing_claimed(&ctx);
        }
        let r = handle_in(&ctx, &cloud, ask()).await;
        assert_eq!(r.status, 202, "{}", body(&r));
    }

    #[tokio::test]
    async fn a_vpc_alone_gets_one_standard_subnet_per_zone_in_the_record() {
        let (ctx, cloud) = (ctx(), cloud());
        let r = handle_in(
            &ctx,
            &cloud,
            post(&json!({"name": "edge", "control_planes": 3, "workers": 2, "vpc_id": "vpc-0000000a"}).to_string()),
        )
        .await;
        assert_eq!(r.status, 202, "{}", body(&r));
        let chosen = ["subnet-0000000a0", "subnet-0000000b0", "subnet-0000000c0"];
        assert_eq!(body(&r)["spec"]["subnet_ids"], json!(chosen));
        assert_eq!(body(&r)["spec"]["vpc_id"], "vpc-0000000a");
        let record = ctx.store.records().pop().unwrap();
        assert_eq!(record.spec.subnet_ids, chosen);
        assert_eq!(record.spec.subnet_id.as_deref(), Some(chosen[0]));
        let input: Value = serde_json::from_str(&ctx.executions.started()[0].input).unwrap();
        assert_eq!(
            input["spec"]["subnet_ids"],
            json!(chosen),
            "the stages see them"
        );
        let events = ctx.store.events(&record.id).await.unwrap();
        assert!(
            events[0]
                .detail
                .contains("in vpc-0000000a, subnets subnet-0000000a0"),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_vpc_that_does_not_hold_the_subnets_or_has_none_is_422() {
        let (ctx, cloud) = (ctx(), cloud());
        let r = handle_in(
            &ctx,
            &cloud,
            post(
                &json!({"name": "edge", "vpc_id": "vpc-0000000a",
                "subnet_ids": ["subnet-0000000a0", "subnet-0000000f0"]})
                .to_string(),
            ),
        )
        .await;
        assert_eq!(
            error_of(&r),
            (422, "ValidationError".into(), Some("subnet_ids[1]".into()))
        );
        let r = handle_in(
            &ctx,
            &cloud,
            post(&json!({"name": "edge", "vpc_id": "vpc-000000ee"}).to_string()),
        )
        .await;
        assert_eq!(
            error_of(&r),
            (422, "ValidationError".into(), Some("vpc_id".into()))
        );
        nothing_claimed(&ctx);
    }

    #[tokio::test]
    async fn without_ec2_access_only_the_default_vpc_is_served() {
        let ctx = ctx();
        let r = handle(
            &ctx,
            post(&json!({"name": "edge", "vpc_id": "vpc-0000000a"}).to_string()),
        )
        .await;
        assert_eq!(error_of(&r).0, 503);
        nothing_claimed(&ctx);
        let r = handle(&ctx, post(&json!({"name": "edge"}).to_string())).await;
        assert_eq!(r.status, 202);
    }
}

fn as_session(mut req: ApiRequest, role: &str, session: &str) -> ApiRequest {
    req.caller = Some(format!(
        "arn:aws:sts::123456789012:assumed-role/{role}/{session}"
    ));
    req
}

#[tokio::test]
async fn a_role_owns_its_clusters_whatever_the_session_name() {
    let mut ctx = ctx();
    ctx.config.policy.max_clusters_per_principal = 2;
    ctx.config.policy.own_clusters_only = true;
    let r = handle(
        &ctx,
        as_session(post(r#"{"name": "a"}"#), "Deployer", "alice"),
    )
    .await;
    assert_eq!(r.status, 202);
    let a = body(&r);
    assert_eq!(
        a["created_by"],
        "arn:aws:sts::123456789012:assumed-role/Deployer"
    );
    assert_eq!(a["created_by_session"], "alice");
    let got = body(&handle(&ctx, as_session(get("/clusters/a"), "Deployer", "alice")).await);
    assert_eq!(got["created_by_session"], "alice", "GET shows the session");

    // Another session name is the same owner: it sees the cluster, and shares the quota.
    let other = handle(&ctx, as_session(get("/clusters/a"), "Deployer", "mallory")).await;
    assert_eq!(other.status, 200);
    let r = handle(
        &ctx,
        as_session(post(r#"{"name": "b"}"#), "Deployer", "bob"),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(body(&r)["created_by_session"], "bob");
    let r = handle(
        &ctx,
        as_session(post(r#"{"name": "c"}"#), "Deployer", "fresh-session"),
    )
    .await;
    assert_eq!(
        error_of(&r),
        (409, "TooManyClusters".into(), None),
        "a new session name is no fresh quota"
    );
    // Another role is another owner.
    let r = handle(&ctx, as_session(get("/clusters/a"), "Other", "alice")).await;
    assert_eq!(error_of(&r).0, 404);
    let r = handle(&ctx, as_session(post(r#"{"name": "c"}"#), "Other", "alice")).await;
    assert_eq!(r.status, 202);
    // An IAM user has no session.
    let r = handle(&ctx, as_principal(post(r#"{"name": "d"}"#), "carol")).await;
    assert_eq!(body(&r)["created_by_session"], Value::Null);
}

#[tokio::test]
async fn a_record_from_before_is_still_owned_by_its_role() {
    let mut ctx = ctx();
    ctx.config.policy.own_clusters_only = true;
    ctx.config.policy.max_clusters_per_principal = 1;
    let rec = create(&ctx, "old").await;
    // As written before the split: the whole session ARN, no session field.
    let mut old = ctx.store.get(&rec.id).await.unwrap().unwrap();
    old.created_by = Some("arn:aws:sts::123456789012:assumed-role/Deployer/alice".into());
    old.created_by_session = None;
    ctx.store.update(&old).await.unwrap();
    for session in ["alice", "bob"] {
        let r = handle(&ctx, as_session(get("/clusters/old"), "Deployer", session)).await;
        assert_eq!(r.status, 200, "{session}");
    }
    let list = body(&handle(&ctx, as_session(get("/clusters"), "Deployer", "bob")).await);
    assert_eq!(list["clusters"][0]["id"], rec.id.as_str());
    let r = handle(&ctx, as_session(get("/clusters/old"), "Other", "alice")).await;
    assert_eq!(error_of(&r).0, 404);
    // It counts towards its role's quota.
    let r = handle(
        &ctx,
        as_session(post(r#"{"name": "new"}"#), "Deployer", "bob"),
    )
    .await;
    assert_eq!(error_of(&r), (409, "TooManyClusters".into(), None));
}

#[tokio::test]
async fn name_taken_names_the_holder_only_to_whom_may_see_it() {
    let mut ctx = ctx();
    ctx.config.policy.own_clusters_only = true;
    let r = handle(&ctx, as_principal(post(r#"{"name": "edge"}"#), "alice")).await;
    let id = body(&r)["id"].as_str().unwrap().to_string();
    let r = handle(&ctx, as_principal(post(r#"{"name": "edge"}"#), "bob")).await;
    assert_eq!(error_of(&r), (409, "NameTaken".into(), Some("name".into())));
    let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        !message.contains(&id) && !message.contains("CREATING"),
        "{message}"
    );
    let r = handle(&ctx, as_principal(post(r#"{"name": "edge"}"#), "alice")).await;
    let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(&id), "its owner is told which: {message}");
    // Without OwnClustersOnly every cluster is anyone's to read: the holder is named.
    ctx.config.policy.own_clusters_only = false;
    let r = handle(&ctx, as_principal(post(r#"{"name": "edge"}"#), "bob")).await;
    assert!(body(&r)["error"]["message"].as_str().unwrap().contains(&id));
}

/// `POST /reconcile`: who may run one that acts, and what an owner sees of a run.
mod reconcile_route {
    use super::*;
    use crate::record::{Node, NodeState, Role};

    fn reconcile(dry_run: bool) -> ApiRequest {
        ApiRequest {
            body: json!({"dry_run": dry_run}).to_string().into_bytes(),
            ..ApiRequest::new("POST", "/reconcile")
        }
    }

    #[tokio::test]
    async fn a_run_that_acts_needs_a_principal_the_deployment_names() {
        let (mut ctx, cloud) = (ctx(), FakeCloud::new());
        // Nobody by default: 403 naming why, with the way out.
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(false), "bob")).await;
        assert_eq!(error_of(&r), (403, "NotAllowed".into(), None));
        let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("ReconcilePrincipals") && message.contains("dry_run"),
            "{message}"
        );
        // An empty body asks to act too.
        let r = handle_in(
            &ctx,
            &cloud,
            as_principal(ApiRequest::new("POST", "/reconcile"), "bob"),
        )
        .await;
        assert_eq!(error_of(&r).0, 403);
        // A dry run is anyone's.
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(true), "bob")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(body(&r)["dry_run"], true);

        ctx.config.policy.reconcile_principals = vec![
            "arn:aws:iam::123456789012:role/ops/Operator".into(),
            "arn:aws:iam::123456789012:user/carol".into(),
        ];
        for (req, want) in [
            (as_session(reconcile(false), "Operator", "pager"), 200),
            (as_principal(reconcile(false), "carol"), 200),
            (as_principal(reconcile(false), "bob"), 403),
            (as_session(reconcile(false), "Deployer", "Operator"), 403),
            (reconcile(false), 403),
        ] {
            let caller = req.caller.clone();
            let r = handle_in(&ctx, &cloud, req).await;
            assert_eq!(
                r.status,
                want,
                "{caller:?}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(false), "bob")).await;
        let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("arn:aws:iam::123456789012:user/bob is not one of"),
            "{message}"
        );
        // Without fleet access, a refusal is still a refusal.
        let r = handle(&ctx, as_principal(reconcile(false), "bob")).await;
        assert_eq!(error_of(&r).0, 403);
    }

    /// An ACTIVE cluster of `who` whose one node's instance is gone (the plan names it).
    async fn dead_cluster(ctx: &Ctx, who: &str, name: &str) -> (String, String) {
        let r = handle(
            ctx,
            as_principal(post(&json!({"name": name}).to_string()), who),
        )
        .await;
        let id = body(&r)["id"].as_str().unwrap().to_string();
        let mut record = set_status(&ctx.store, &id, Status::Active).await;
        let instance_id = format!("i-{:017x}", name.len() as u64 * 7919 + who.len() as u64);
        record.nodes.push(Node {
            instance_id: instance_id.clone(),
            role: Role::ControlPlane,
            index: 0,
            private_ip: None,
            public_ip: None,
            state: NodeState::Ready,
            channel: None,
            zone: None,
            zone_type: None,
            carrier_ip: None,
            volume_type: None,
        });
        ctx.store.update(&record).await.unwrap();
        (id, instance_id)
    }

    #[tokio::test]
    async fn with_own_clusters_only_the_report_shows_the_callers_clusters_only() {
        let (mut ctx, cloud) = (ctx(), FakeCloud::new());
        let (alice_id, alice_node) = dead_cluster(&ctx, "alice", "alice-edge").await;
        let (bob_id, bob_node) = dead_cluster(&ctx, "bob", "bob-secret-name").await;
        // An orphan instance (no record): nobody's.
        let orphan = cloud.add_tagged("c-00000000000000ff", Role::Worker, 0, 100_000);

        // Without OwnClustersOnly the report is the fleet's.
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(true), "alice")).await;
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(text.contains(&bob_id) && text.contains(&bob_node), "{text}");

        ctx.config.policy.own_clusters_only = true;
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(true), "alice")).await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body).to_string();
        for secret in [
            &bob_id,
            &bob_node,
            "bob-secret-name",
            &orphan,
            "c-00000000000000ff",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains(&alice_id) && text.contains(&alice_node),
            "{text}"
        );
        let report = body(&r);
        assert_eq!(report["records"], 1);
        assert_eq!(report["instances"], 1);
        assert_eq!(report["plan"]["clusters_by_status"], json!({"ACTIVE": 1}));
        assert_eq!(report["plan"]["unhealthy_nodes"], 1);
        assert!(report["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["cluster_id"] == alice_id.as_str()));

        // A principal with no cluster sees an empty report; and so does an operator who acts:
        // its run's outcomes are filtered the same way.
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(true), "carol")).await;
        let report = body(&r);
        assert_eq!(report["records"], 0);
        assert_eq!(report["plan"]["actions"], json!([]));
        ctx.config.policy.reconcile_principals =
            vec!["arn:aws:iam::123456789012:user/carol".into()];
        let r = handle_in(&ctx, &cloud, as_principal(reconcile(false), "carol")).await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body).to_string();
        for secret in [&alice_id, &bob_id, &alice_node, &bob_node, &orphan] {
            assert!(!text.contains(secret.as_str()), "{secret} in {text}");
        }
        // It did act, fleet-wide: alice's cluster is DEGRADED now.
        let alice = ctx.store.get(&alice_id).await.unwrap().unwrap();
        assert_eq!(alice.status, Status::Degraded);
    }
}
