//! The plan on hand-made observations, and whole runs against the fakes: a dead node gets one
//! replacement however many runs overlap, a healthy fleet sees no mutating call, the safety
//! limits report instead of acting, stuck records move on, orphans go after their grace only.

use std::collections::HashMap;

use super::*;
use crate::api::{ApiConfig, ApiContext};
use crate::fakes::{FakeCloud, FakeExecutions, FakeStore};
use crate::ports::{ExecutionStatus, InstanceState, Instances};
use crate::record::{Node, NodeState, Role, UpdateKind, UpdateStatus};
use crate::spec::{ClusterRequest, Policy};
use crate::state::Timing;

const UPDATE_ARN: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:update-cluster";
const DELETE_ARN: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:delete-cluster";

type Ctx = ApiContext<FakeStore, FakeExecutions, FakeCloud>;

fn ctx() -> Ctx {
    ApiContext {
        store: FakeStore::default(),
        executions: FakeExecutions::default(),
        parameters: FakeCloud::new(),
        config: ApiConfig {
            create_state_machine_arn: "arn:create".into(),
            delete_state_machine_arn: DELETE_ARN.into(),
            update_state_machine_arn: UPDATE_ARN.into(),
            policy: Policy::default(),
            timing: Timing::default(),
        },
    }
}

/// An ACTIVE record of `cps`+`workers` Ready nodes, each an instance in `cloud`.
async fn cluster(ctx: &Ctx, cloud: &FakeCloud, n: u32, cps: u32, workers: u32) -> ClusterRecord {
    let spec = ClusterRequest {
        control_planes: Some(cps),
        workers: Some(workers),
        ..serde_json::from_value(serde_json::json!({"name": format!("edge-{n}")})).unwrap()
    }
    .validate(&Policy::default())
    .unwrap();
    let id = format!("c-{n:016x}");
    let mut record = ClusterRecord::new(id.clone(), spec, Some(format!("arn:exec:{id}")));
    record.status = Status::Active;
    for (role, count) in [(Role::ControlPlane, cps), (Role::Worker, workers)] {
        for index in 0..count {
            let instance_id = cloud.add_tagged(&id, role, index, 600);
            record.nodes.push(Node {
                instance_id,
                role,
                index,
                private_ip: Some(format!("10.0.{n}.{index}")),
                public_ip: None,
                state: NodeState::Ready,
                channel: None,
            });
        }
    }
    assert!(ctx.store.create(&record).await.unwrap());
    ctx.store.get(&id).await.unwrap().unwrap()
}

async fn reconcile(ctx: &Ctx, cloud: &FakeCloud, settings: &Settings, dry_run: bool) -> Report {
    let event = ReconcileEvent {
        dry_run,
        ..ReconcileEvent::default()
    };
    let cloud = cloud.clone();
    let instances_in = move |_: &str| Box::new(cloud.clone()) as Box<dyn Instances>;
    let fleet = Fleet {
        instances_in: &instances_in,
        allowed_regions: &["us-east-1".into()],
        settings,
    };
    run(ctx, &fleet, &event).await.unwrap()
}

fn node_of(record: &ClusterRecord, role: Role, index: u32) -> String {
    record
        .nodes
        .iter()
        .find(|n| n.role == role && n.index == index)
        .unwrap()
        .instance_id
        .clone()
}

#[tokio::test]
async fn a_healthy_fleet_sees_no_change() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let a = cluster(&ctx, &cloud, 1, 3, 2).await;
    let b = cluster(&ctx, &cloud, 2, 1, 1).await;
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");
    assert_eq!(report.records, 2);
    assert_eq!(report.instances, 7);
    assert_eq!(report.plan.clusters_by_status["ACTIVE"], 2);
    // Nothing written, started or terminated.
    for r in [a, b] {
        assert_eq!(
            ctx.store.get(&r.id).await.unwrap().unwrap().version,
            r.version
        );
    }
    assert!(ctx.executions.started().is_empty());
    assert_eq!(cloud.live_instances().len(), 7);
}

#[tokio::test]
async fn a_dead_worker_gets_one_replacement_however_many_runs_overlap() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 2).await;
    let dead = node_of(&record, Role::Worker, 1);
    cloud.set_instance_state(&dead, InstanceState::Terminated);
    let healthy_before = cloud.live_instances();

    // Planned in a dry run, and nothing done.
    let dry = reconcile(&ctx, &cloud, &Settings::default(), true).await;
    assert!(
        matches!(
            &dry.plan.actions[..],
            [Action::ReplaceNode { instance_id, role: Role::Worker, index: 1, .. }] if *instance_id == dead
        ),
        "{dry:?}"
    );
    assert!(dry.outcomes.is_empty());
    assert_eq!(
        ctx.store.get(&record.id).await.unwrap().unwrap().status,
        Status::Active
    );

    // Two runs at once: one replacement.
    let settings = Settings::default();
    let (one, two) = tokio::join!(
        reconcile(&ctx, &cloud, &settings, false),
        reconcile(&ctx, &cloud, &settings, false)
    );
    let started = [one, two]
        .iter()
        .flat_map(|r| r.outcomes.clone())
        .filter(|o| o.result.starts_with("done"))
        .count();
    assert_eq!(started, 1);
    assert_eq!(ctx.executions.started().len(), 1);
    let after = ctx.store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Updating);
    let update = after.updates.last().unwrap();
    assert_eq!(update.kind, UpdateKind::ReplaceNode);
    assert_eq!(update.params["node"]["instance_id"], dead.as_str());
    assert_eq!(update.created_by.as_deref(), Some(CALLER));
    assert_eq!(update.status, UpdateStatus::InProgress);
    // A third run while it runs does nothing; no healthy instance was touched.
    let third = reconcile(&ctx, &cloud, &settings, false).await;
    assert!(third.plan.actions.is_empty(), "{third:?}");
    assert_eq!(cloud.live_instances().len(), healthy_before.len());
    let events = ctx.store.events(&record.id).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.stage == STAGE && e.detail.contains(&dead)));
}

#[tokio::test]
async fn too_many_dead_nodes_are_reported_not_remediated() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 3, 2).await;
    for n in &record.nodes {
        cloud.set_instance_state(&n.instance_id, InstanceState::Stopped);
    }
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(ctx.executions.started().is_empty(), "no replacement");
    assert_eq!(report.plan.unhealthy_nodes, 5);
    assert!(
        report.plan.findings[0]
            .what
            .contains("5 of 5 node(s) look dead"),
        "{report:?}"
    );
    let after = ctx.store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Degraded);
    let degraded = after.degraded.unwrap();
    assert_eq!(degraded.nodes.len(), 5);
    assert!(
        degraded.reason.contains("is stopped"),
        "{}",
        degraded.reason
    );
    // Said once: a second run finds it recorded.
    let again = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(
        again
            .outcomes
            .iter()
            .all(|o| o.result.starts_with("skipped")),
        "{again:?}"
    );
}

#[tokio::test]
async fn the_fleet_wide_repair_limit_holds_and_control_planes_go_first() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let mut dead = Vec::new();
    for n in 1..=3 {
        let r = cluster(&ctx, &cloud, n, 3, 3).await;
        // A worker and a control plane die in each: 2 of 6, within 40 %.
        for id in [
            node_of(&r, Role::Worker, 0),
            node_of(&r, Role::ControlPlane, 2),
        ] {
            cloud.set_instance_state(&id, InstanceState::Terminated);
        }
        dead.push(node_of(&r, Role::ControlPlane, 2));
    }
    let settings = Settings {
        max_repairs_per_run: 2,
        ..Settings::default()
    };
    let report = reconcile(&ctx, &cloud, &settings, false).await;
    let replaced: Vec<String> = report
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::ReplaceNode { instance_id, .. } => Some(instance_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replaced.len(), 2, "two at most: {replaced:?}");
    assert!(
        replaced.iter().all(|id| dead.contains(id)),
        "control planes first: {replaced:?}"
    );
    assert_eq!(report.plan.findings.len(), 1, "{report:?}");
    assert!(report.plan.findings[0].what.contains("limit of 2"));
}

#[tokio::test]
async fn the_only_control_plane_dead_is_reported() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 3).await;
    cloud.set_instance_state(
        &node_of(&record, Role::ControlPlane, 0),
        InstanceState::Terminated,
    );
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(ctx.executions.started().is_empty());
    assert!(
        report.plan.findings[0].what.contains("only control plane"),
        "{report:?}"
    );
}

#[tokio::test]
async fn orphans_go_after_their_grace_and_not_before() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let live = cluster(&ctx, &cloud, 1, 1, 0).await;
    let old = cloud.add_tagged("c-00000000000000ff", Role::Worker, 0, 7200);
    let young = cloud.add_tagged("c-00000000000000fe", Role::Worker, 0, 60);
    let report_only = Settings {
        orphans_report_only: true,
        ..Settings::default()
    };
    let report = reconcile(&ctx, &cloud, &report_only, false).await;
    assert!(report.plan.actions.is_empty());
    assert!(report.plan.findings[0].what.contains(&old));
    assert_eq!(cloud.live_instances().len(), 3);

    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(report.orphans_removed(), 1, "{report:?}");
    let live_ids: Vec<String> = cloud
        .live_instances()
        .into_iter()
        .map(|i| i.instance.instance_id)
        .collect();
    assert!(!live_ids.contains(&old));
    assert!(live_ids.contains(&young), "younger than the grace");
    assert!(live_ids.contains(&live.nodes[0].instance_id));
}

#[tokio::test]
async fn stuck_records_move_on_once_their_execution_has_ended() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    // An update whose execution was stopped from the console, long enough ago.
    let record = cluster(&ctx, &cloud, 1, 1, 1).await;
    let mut r = record.clone();
    r.status = Status::Updating;
    r.updated_at = "2020-01-01T00:00:00Z".into();
    r.updates.push(crate::record::Update {
        id: "u-0000000000000001".into(),
        kind: UpdateKind::Scale,
        params: serde_json::json!({"workers": {"from": 1, "to": 2}}),
        status: UpdateStatus::InProgress,
        execution_arn: Some("arn:exec:update".into()),
        created_by: None,
        started_at: "2020-01-01T00:00:00Z".into(),
        finished_at: None,
        failure: None,
    });
    ctx.store.update(&r).await.unwrap();
    let mut executions = HashMap::new();
    executions.insert("arn:exec:update".to_string(), ExecutionStatus::Aborted);
    // Within the grace of a fresh write, nothing is planned.
    let fresh = Observed {
        now: crate::clock::now_epoch(),
        records: vec![ClusterRecord {
            updated_at: crate::clock::now_rfc3339(),
            ..r.clone()
        }],
        instances: Vec::new(),
        executions: executions.clone(),
    };
    assert!(plan::plan(&fresh, &Settings::default(), None)
        .actions
        .is_empty());

    // The store stamps every write: a grace of 0 stands for "long enough ago".
    let settled = Settings {
        grace_seconds: 0,
        ..Settings::default()
    };
    let report = reconcile(&ctx, &cloud, &settled, false).await;
    assert!(
        matches!(&report.outcomes[..], [Outcome { action: Action::FailStuckUpdate { .. }, result }] if result.starts_with("done")),
        "{report:?}"
    );
    let after = ctx.store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Active);
    assert_eq!(after.updates[0].status, UpdateStatus::Failed);
}

#[test]
fn a_targeted_run_plans_only_the_cluster_of_the_instance() {
    let event: ReconcileEvent = serde_json::from_value(serde_json::json!({
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "region": "us-east-1",
        "detail": {"instance-id": "i-0abc", "state": "terminated"}
    }))
    .unwrap();
    assert_eq!(event.trigger(), "ec2: i-0abc terminated");
    assert!(!event.dry_run);
    let scheduled: ReconcileEvent =
        serde_json::from_value(serde_json::json!({"source": "mecplane.schedule"})).unwrap();
    assert_eq!(scheduled.trigger(), "mecplane.schedule");
}

#[test]
fn the_emf_line_names_every_metric() {
    let report = Report {
        trigger: "mecplane.schedule".into(),
        dry_run: false,
        only: None,
        regions: vec!["us-east-1".into()],
        records: 0,
        instances: 0,
        plan: Plan::default(),
        outcomes: Vec::new(),
    };
    let line: serde_json::Value = serde_json::from_str(&report.emf(12, 1_700_000_000_000)).unwrap();
    let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap();
    for name in [
        "ClustersACTIVE",
        "ClustersDEGRADED",
        "UnhealthyNodes",
        "RepairsStarted",
        "OrphansRemoved",
        "ReconcileDuration",
    ] {
        assert!(metrics.iter().any(|m| m["Name"] == name), "{name}");
        assert!(line.get(name).is_some(), "{name}");
    }
    assert_eq!(line["ReconcileDuration"], 12);
}
