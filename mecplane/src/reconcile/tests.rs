//! The plan on hand-made observations, and whole runs against the fakes: a dead node gets one
//! replacement however many runs overlap, a healthy fleet sees no mutating call, the safety
//! limits report instead of acting, stuck records move on, orphans (instances, groups,
//! parameters, API load balancers) go after their grace only, drifted rules come back, IMDS and tag drift is reported.

use std::collections::HashMap;

use super::*;
use crate::api::{ApiConfig, ApiContext};
use crate::fakes::{FakeBalancers, FakeCloud, FakeExecutions, FakeStore};
use crate::ports::{ExecutionStatus, IngressRule, IngressSource, InstanceState, MetadataOptions};
use crate::record::{ApiBalancer, Node, NodeState, Role, UpdateKind, UpdateStatus};
use crate::resources;
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

/// An ACTIVE record of `cps`+`workers` Ready nodes, each an instance in `cloud`, and its security
/// group with exactly the rules its spec asks for.
async fn cluster(ctx: &Ctx, cloud: &FakeCloud, n: u32, cps: u32, workers: u32) -> ClusterRecord {
    let spec = ClusterRequest {
        control_planes: Some(cps),
        workers: Some(workers),
        ..serde_json::from_value(serde_json::json!({"name": format!("edge-{n}")})).unwrap()
    }
    .validate(&Policy::default())
    .unwrap();
    let id = format!("c-{n:016x}");
    let group = cloud.add_group(&id, Some(600));
    cloud.add_rules(&group, &crate::stages::security_group::desired_rules(&spec));
    let mut record = ClusterRecord::new(id.clone(), spec, Some(format!("arn:exec:{id}")));
    record.status = Status::Active;
    record.security_group_id = Some(group);
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
                zone: None,
                zone_type: None,
                carrier_ip: None,
                volume_type: None,
            });
        }
    }
    assert!(ctx.store.create(&record).await.unwrap());
    ctx.store.get(&id).await.unwrap().unwrap()
}

async fn reconcile(ctx: &Ctx, cloud: &FakeCloud, settings: &Settings, dry_run: bool) -> Report {
    reconcile_balanced(ctx, cloud, &FakeBalancers::default(), settings, dry_run).await
}

/// [`reconcile`] with `balancers` as every region's ELB.
async fn reconcile_balanced(
    ctx: &Ctx,
    cloud: &FakeCloud,
    balancers: &FakeBalancers,
    settings: &Settings,
    dry_run: bool,
) -> Report {
    let event = ReconcileEvent {
        dry_run,
        ..ReconcileEvent::default()
    };
    let (cloud, balancers) = (cloud.clone(), balancers.clone());
    let ports_in = move |_: &str| RegionPorts {
        ec2: Box::new(cloud.clone()),
        ssm: Box::new(cloud.clone()),
        balancers: Box::new(balancers.clone()),
    };
    let fleet = Fleet {
        ports_in: &ports_in,
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
    for name in resources::Deployment::default().cluster_parameters(&a.id) {
        ctx.parameters.put_secret(&name, "secret").await.unwrap();
        ctx.parameters.age_parameter(&name, 7200);
    }
    let calls = (cloud.mutating_calls(), ctx.parameters.mutating_calls());
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");
    assert_eq!(report.plan.findings, vec![], "{report:?}");
    assert_eq!(
        (cloud.mutating_calls(), ctx.parameters.mutating_calls()),
        calls,
        "no mutating call"
    );
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
        ..Observed::default()
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
        "RulesRestored",
        "NodeChecksSent",
        "ReconcileDuration",
    ] {
        assert!(metrics.iter().any(|m| m["Name"] == name), "{name}");
        assert!(line.get(name).is_some(), "{name}");
    }
    assert_eq!(line["ReconcileDuration"], 12);
}

// ---- node health (issue 13): status checks, agent pings, sampled Kubernetes Ready ----------

/// The replacements a report planned: (instance id, reason).
fn replacements(report: &Report) -> Vec<(String, String)> {
    report
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::ReplaceNode {
                instance_id,
                reason,
                ..
            } => Some((instance_id.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_impaired_status_check_counts_only_past_the_grace() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 2).await;
    let sick = node_of(&record, Role::Worker, 1);
    let now = crate::clock::now_epoch();
    let settings = Settings::default();

    // Impaired for 30 s of a 120 s grace: nothing planned, nothing written.
    cloud.set_impaired(&sick, &["system"], now - 30);
    let report = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");
    assert_eq!(report.plan.unhealthy_nodes, 0);
    assert!(ctx.executions.started().is_empty());
    assert_eq!(
        ctx.store.get(&record.id).await.unwrap().unwrap().version,
        record.version
    );

    // Impaired for 10 minutes: replaced, and the reason says which check.
    cloud.set_impaired(&sick, &["system", "instance"], now - 600);
    let report = reconcile(&ctx, &cloud, &settings, false).await;
    let replaced = replacements(&report);
    assert_eq!(replaced.len(), 1, "{report:?}");
    assert_eq!(replaced[0].0, sick);
    assert!(
        replaced[0]
            .1
            .starts_with("status check impaired (system, instance) since "),
        "{replaced:?}"
    );
    assert_eq!(report.repairs_started(), 1);
    let after = ctx.store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Updating);
    assert_eq!(
        after.updates.last().unwrap().params["node"]["instance_id"],
        sick.as_str()
    );
    let events = ctx.store.events(&record.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.stage == STAGE && e.detail.contains("status check impaired")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_agent_offline_past_the_grace_gets_one_replacement_however_many_runs_overlap() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 2).await;
    let lost = node_of(&record, Role::Worker, 0);
    let settings = Settings::default();

    // Offline just now: within the grace.
    cloud.set_online(&lost, false);
    let report = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");

    // Its last ping 5 minutes ago: two runs at once start one replacement.
    cloud.set_offline_since(&lost, Some(crate::clock::now_epoch() - 300));
    let (one, two) = tokio::join!(
        reconcile(&ctx, &cloud, &settings, false),
        reconcile(&ctx, &cloud, &settings, false)
    );
    assert_eq!(one.repairs_started() + two.repairs_started(), 1);
    assert_eq!(ctx.executions.started().len(), 1);
    let reason = replacements(&one)
        .into_iter()
        .chain(replacements(&two))
        .find(|(id, _)| *id == lost)
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("{one:?} {two:?}"));
    assert!(
        reason.starts_with("SSM agent ConnectionLost since "),
        "{reason}"
    );
    // No healthy instance touched.
    assert_eq!(cloud.live_instances().len(), 3);
}

#[tokio::test]
async fn sick_nodes_beyond_the_limit_are_reported_with_the_check_that_failed() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 3, 2).await;
    let ago = crate::clock::now_epoch() - 900;
    for index in 0..2 {
        cloud.set_offline_since(&node_of(&record, Role::Worker, index), Some(ago));
    }
    cloud.set_impaired(&node_of(&record, Role::ControlPlane, 2), &["instance"], ago);
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(ctx.executions.started().is_empty(), "{report:?}");
    assert_eq!(report.plan.unhealthy_nodes, 3);
    let degraded = ctx
        .store
        .get(&record.id)
        .await
        .unwrap()
        .unwrap()
        .degraded
        .unwrap();
    assert_eq!(degraded.nodes.len(), 3);
    let worker = node_of(&record, Role::Worker, 1);
    let cp = node_of(&record, Role::ControlPlane, 2);
    assert!(
        degraded.reason.contains(&format!(
            "worker 1 ({worker}): SSM agent ConnectionLost since"
        )),
        "{}",
        degraded.reason
    );
    assert!(
        degraded.reason.contains(&format!(
            "control-plane 2 ({cp}): status check impaired (instance) since"
        )),
        "{}",
        degraded.reason
    );
}

/// A verify answer listing the cluster's nodes, the one at `not_ready` NotReady since `since`.
fn nodes_answer(record: &ClusterRecord, not_ready: &str, since: &str) -> String {
    let mut out = String::new();
    for n in &record.nodes {
        let ip = n.private_ip.clone().unwrap();
        let (state, when) = if ip == not_ready {
            ("NotReady", since)
        } else {
            ("Ready", "2024-01-01T00:00:00Z")
        };
        out.push_str(&format!(
            "NODE ip-{} {state} {ip} {} {when}\n",
            ip.replace('.', "-"),
            n.role.as_str()
        ));
    }
    out.push_str("MECPLANE_RESULT nodes=4 ready=3\n");
    out
}

#[tokio::test]
async fn a_node_sampled_not_ready_is_replaced_on_the_next_run() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    // One control plane (10.0.1.0), three workers: worker 2 is 10.0.1.2, no other node's.
    let record = cluster(&ctx, &cloud, 1, 1, 3).await;
    let sick = node_of(&record, Role::Worker, 2);
    let answer = nodes_answer(&record, "10.0.1.2", "2024-05-01T00:00:00Z");
    cloud.respond_with(move |_, _| crate::ports::CommandStatus::Success {
        stdout: answer.clone(),
    });
    let settings = Settings {
        health_interval_seconds: 0,
        ..Settings::default()
    };

    // Run 1 sends the check to the control plane and remembers it; nothing else.
    let first = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(first.node_checks_sent(), 1, "{first:?}");
    assert_eq!(first.repairs_started(), 0);
    let sent = cloud.commands_of("verify");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].instance_id, node_of(&record, Role::ControlPlane, 0));
    assert!(
        sent[0].text.contains("EXPECTED_NODES='4'"),
        "{}",
        sent[0].text
    );
    let pending = ctx
        .store
        .get(&record.id)
        .await
        .unwrap()
        .unwrap()
        .node_check
        .pending
        .expect("remembered");
    assert_eq!(pending.command_id, sent[0].command_id);

    // Run 2 reads the answer: worker 2 replaced, the check closed at its sending.
    let second = reconcile(&ctx, &cloud, &settings, false).await;
    let replaced = replacements(&second);
    assert_eq!(replaced.len(), 1, "{second:?}");
    assert_eq!(replaced[0].0, sick);
    assert_eq!(
        replaced[0].1,
        "Kubernetes node ip-10-0-1-2 NotReady since 2024-05-01T00:00:00Z"
    );
    assert_eq!(second.repairs_started(), 1);
    assert!(
        second
            .outcomes
            .iter()
            .any(|o| matches!(o.action, Action::CloseNodeCheck { .. })
                && o.result.starts_with("done")),
        "{second:?}"
    );
    let after = ctx.store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Updating);
    assert_eq!(after.node_check.pending, None);
    assert_eq!(after.node_check.checked_at, Some(pending.sent_at));
    // The record round-trips through JSON with its check, and an old record reads without one.
    let json = serde_json::to_value(&after).unwrap();
    assert_eq!(json["node_check"]["checked_at"], pending.sent_at);
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("node_check");
    let read: ClusterRecord = serde_json::from_value(old).unwrap();
    assert!(read.node_check.is_empty());
}

#[tokio::test]
async fn a_node_sampled_not_ready_within_the_grace_is_asked_again() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 3).await;
    let answer = nodes_answer(&record, "10.0.1.2", &crate::clock::now_rfc3339());
    cloud.respond_with(move |_, _| crate::ports::CommandStatus::Success {
        stdout: answer.clone(),
    });
    let settings = Settings {
        health_interval_seconds: 60,
        ..Settings::default()
    };
    // Due: created long ago, never sampled.
    let mut r = ctx.store.get(&record.id).await.unwrap().unwrap();
    r.created_at = "2020-01-01T00:00:00Z".into();
    ctx.store.update(&r).await.unwrap();

    reconcile(&ctx, &cloud, &settings, false).await;
    let second = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(second.repairs_started(), 0, "{second:?}");
    let after = ctx.store.get(&record.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Active);
    assert_eq!(after.node_check, crate::record::NodeCheck::default());
    // Still due: the next run asks again (a 60 s interval would otherwise wait).
    let third = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(third.node_checks_sent(), 1, "{third:?}");
    assert_eq!(cloud.commands_of("verify").len(), 2);
}

#[tokio::test]
async fn node_checks_stay_within_the_budget_and_go_to_the_longest_unchecked() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    for n in 1..=20 {
        let record = cluster(&ctx, &cloud, n, 1, 1).await;
        let mut r = ctx.store.get(&record.id).await.unwrap().unwrap();
        r.created_at = format!("2020-01-01T00:00:{n:02}Z");
        ctx.store.update(&r).await.unwrap();
    }
    // 20 clusters × 300 s / 1800 s → 4, plus 2.
    let settings = Settings::default();
    assert_eq!(super::health::check_budget(20, &settings), 6);

    // A dry run plans them and sends nothing.
    let dry = reconcile(&ctx, &cloud, &settings, true).await;
    assert_eq!(
        dry.plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::CheckNodes { .. }))
            .count(),
        6
    );
    assert!(cloud.commands().is_empty());

    let first = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(first.node_checks_sent(), 6, "{first:?}");
    let checked: Vec<String> = first
        .outcomes
        .iter()
        .map(|o| o.action.cluster_id().to_string())
        .collect();
    // The oldest first: clusters 1..=6.
    let expected: Vec<String> = (1..=6).map(|n| format!("c-{n:016x}")).collect();
    assert_eq!(checked, expected);
    let second = reconcile(&ctx, &cloud, &settings, false).await;
    assert_eq!(second.node_checks_sent(), 6, "{second:?}");
    assert!(
        second
            .outcomes
            .iter()
            .filter(|o| matches!(o.action, Action::CheckNodes { .. }))
            .all(|o| !expected.contains(&o.action.cluster_id().to_string())),
        "the ones checked last run wait: {second:?}"
    );
    assert_eq!(cloud.commands_of("verify").len(), 12);
    // The answers read and closed: no replacement in a healthy fleet.
    assert_eq!(second.repairs_started(), 0);
    assert!(ctx.executions.started().is_empty());
}

#[tokio::test]
async fn a_healthy_fleet_is_probed_with_bounded_reads_only() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    for n in 1..=3 {
        cluster(&ctx, &cloud, n, 3, 2).await;
    }
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");
    // 15 running nodes in one region: one DescribeInstanceStatus, one DescribeInstanceInformation.
    assert_eq!(cloud.health_calls(), 2);
    assert!(
        cloud.commands().is_empty(),
        "no node check before one is due"
    );
}

// ---- housekeeping: orphan groups and parameters, group drift, instance drift (`hygiene`) ----

/// A run started by an EC2 event about `instance_id`: targeted at that instance's cluster.
async fn reconcile_targeted(ctx: &Ctx, cloud: &FakeCloud, instance_id: &str) -> Report {
    let event: ReconcileEvent = serde_json::from_value(serde_json::json!({
        "source": "aws.ec2",
        "region": "us-east-1",
        "detail": {"instance-id": instance_id, "state": "stopped"}
    }))
    .unwrap();
    let cloud = cloud.clone();
    let ports_in = move |_: &str| RegionPorts {
        ec2: Box::new(cloud.clone()),
        ssm: Box::new(cloud.clone()),
        balancers: Box::new(FakeBalancers::default()),
    };
    let settings = Settings::default();
    let fleet = Fleet {
        ports_in: &ports_in,
        allowed_regions: &["us-east-1".into()],
        settings: &settings,
    };
    run(ctx, &fleet, &event).await.unwrap()
}

/// Writes the cluster's parameters into the fake Parameter Store, last written `age` ago.
async fn parameters_of(ctx: &Ctx, cluster_id: &str, age: i64) -> Vec<String> {
    let names = resources::Deployment::default().cluster_parameters(cluster_id);
    for name in &names {
        ctx.parameters.put_secret(name, "secret").await.unwrap();
        ctx.parameters.age_parameter(name, age);
    }
    names
}

fn rule(protocol: &str, port: u16, source: IngressSource) -> IngressRule {
    IngressRule {
        protocol: protocol.into(),
        from_port: port,
        to_port: port,
        source,
        description: "out of band".into(),
    }
}

fn done(report: &Report, what: impl Fn(&Action) -> bool) -> Vec<Outcome> {
    report
        .outcomes
        .iter()
        .filter(|o| what(&o.action))
        .cloned()
        .collect()
}

#[tokio::test]
async fn orphan_groups_and_parameters_go_after_their_grace_and_not_before() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let live = cluster(&ctx, &cloud, 1, 1, 0).await;
    let live_params = parameters_of(&ctx, &live.id, 7200).await;
    let old_group = cloud.add_group("c-00000000000000ff", Some(7200));
    let old_params = parameters_of(&ctx, "c-00000000000000ff", 7200).await;
    let young_group = cloud.add_group("c-00000000000000fe", Some(60));
    let young_params = parameters_of(&ctx, "c-00000000000000fe", 60).await;
    // Made before groups carried their creation time: its age is unknown.
    let ageless = cloud.add_group("c-00000000000000fd", None);

    // Report-only: findings, nothing deleted.
    let report_only = Settings {
        orphans_report_only: true,
        ..Settings::default()
    };
    let report = reconcile(&ctx, &cloud, &report_only, false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");
    let findings: Vec<&str> = report
        .plan
        .findings
        .iter()
        .map(|f| f.what.as_str())
        .collect();
    assert!(
        findings
            .iter()
            .any(|f| f.contains(&old_group) && f.contains("report-only")),
        "{findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.contains(&old_params[0]) && f.contains("report-only")),
        "{findings:?}"
    );
    assert_eq!(cloud.groups().len(), 4);
    assert_eq!(ctx.parameters.parameters().len(), 9);

    // For real: the old orphans go, in one run.
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    let groups = done(&report, |a| matches!(a, Action::DeleteOrphanGroup { .. }));
    assert!(
        matches!(&groups[..], [Outcome { action: Action::DeleteOrphanGroup { group_id, .. }, result }] if *group_id == old_group && result.starts_with("done")),
        "{report:?}"
    );
    let params = done(&report, |a| {
        matches!(a, Action::DeleteOrphanParameters { .. })
    });
    assert!(
        matches!(&params[..], [Outcome { action: Action::DeleteOrphanParameters { names, .. }, result }] if *names == old_params && result.starts_with("done")),
        "{report:?}"
    );
    assert_eq!(report.orphans_removed(), 4, "a group and three parameters");
    let emf: serde_json::Value = serde_json::from_str(&report.emf(1, 1)).unwrap();
    assert_eq!(emf["OrphansRemoved"], 4);
    // The ageless group is reported, not removed.
    assert!(
        report
            .plan
            .findings
            .iter()
            .any(|f| f.what.contains(&ageless) && f.what.contains(resources::TAG_CREATED_AT)),
        "{report:?}"
    );
    let groups = cloud.groups();
    assert!(!groups.contains_key(&old_group));
    for kept in [
        &young_group,
        &ageless,
        live.security_group_id.as_ref().unwrap(),
    ] {
        assert!(groups.contains_key(kept), "{kept} kept");
    }
    let stored = ctx.parameters.parameters();
    assert!(old_params.iter().all(|p| !stored.contains_key(p)));
    assert!(
        young_params.iter().all(|p| stored.contains_key(p)),
        "younger than the grace"
    );
    assert!(
        live_params.iter().all(|p| stored.contains_key(p)),
        "a live cluster's"
    );

    // Deleting twice deletes once: nothing more is planned, and a removal repeated is harmless.
    let again = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(
        !again.plan.actions.iter().any(|a| matches!(
            a,
            Action::DeleteOrphanGroup { .. } | Action::DeleteOrphanParameters { .. }
        )),
        "{again:?}"
    );
    let ec2 = cloud.clone();
    assert!(hygiene::delete_orphan_group(
        &ctx,
        &ec2,
        "us-east-1",
        &old_group,
        "c-00000000000000ff"
    )
    .await
    .starts_with("done"));
    assert!(
        hygiene::delete_orphan_parameters(&ctx, "c-00000000000000ff", &old_params)
            .await
            .starts_with("done")
    );
    assert_eq!(cloud.groups().len(), 3);
}

#[tokio::test]
async fn an_orphan_group_goes_once_no_instance_is_in_it() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let orphan = cloud.add_tagged("c-00000000000000ff", Role::Worker, 0, 7200);
    let group = cloud.add_group("c-00000000000000ff", Some(7200));

    // The instance goes first; its group waits for a later run.
    let first = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(
        matches!(&first.plan.actions[..], [Action::TerminateOrphan { instance_id, .. }] if *instance_id == orphan),
        "{first:?}"
    );
    assert!(cloud.groups().contains_key(&group));

    // EC2 still refuses (an ENI lingers): skipped, kept, and the next run tries again.
    cloud.fail_next_group_delete(CloudError::DependencyViolation("in use".into()));
    let second = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert!(
        matches!(&second.outcomes[..], [Outcome { action: Action::DeleteOrphanGroup { .. }, result }] if result.starts_with("skipped: still in use")),
        "{second:?}"
    );
    assert_eq!(second.orphans_removed(), 0);
    assert!(cloud.groups().contains_key(&group));

    let third = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(third.orphans_removed(), 1, "{third:?}");
    assert!(cloud.groups().is_empty());
}

#[tokio::test]
async fn groups_and_parameters_of_live_clusters_are_never_touched() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    // FAILED and retained, CREATING, DELETING, DEGRADED: every one still owns its resources.
    let mut kept_groups = Vec::new();
    let mut kept_params = Vec::new();
    for (n, status) in [
        (1, Status::Failed),
        (2, Status::Creating),
        (3, Status::Deleting),
        (4, Status::Degraded),
    ] {
        let record = cluster(&ctx, &cloud, n, 1, 0).await;
        let mut r = record.clone();
        r.status = status;
        ctx.store.update(&r).await.unwrap();
        let extra = cloud.add_group(&record.id, Some(7200));
        kept_groups.extend([record.security_group_id.clone().unwrap(), extra]);
        kept_params.extend(parameters_of(&ctx, &record.id, 7200).await);
    }
    let eager = Settings {
        orphan_grace_seconds: 0,
        ..Settings::default()
    };
    let report = reconcile(&ctx, &cloud, &eager, false).await;
    assert!(
        !report.plan.actions.iter().any(|a| matches!(
            a,
            Action::DeleteOrphanGroup { .. } | Action::DeleteOrphanParameters { .. }
        )),
        "{report:?}"
    );
    let groups = cloud.groups();
    assert!(kept_groups.iter().all(|g| groups.contains_key(g)));
    let stored = ctx.parameters.parameters();
    assert!(kept_params.iter().all(|p| stored.contains_key(p)));
    // A removal planned earlier and acted on after the record appeared stands back.
    let ec2 = cloud.clone();
    let live = &kept_groups[0];
    assert_eq!(
        hygiene::delete_orphan_group(&ctx, &ec2, "us-east-1", live, "c-0000000000000001").await,
        "skipped: the cluster has a live record"
    );
    assert_eq!(
        hygiene::delete_orphan_parameters(&ctx, "c-0000000000000001", &kept_params[..3]).await,
        "skipped: the cluster has a live record"
    );
    assert!(cloud.groups().contains_key(live));
    assert_eq!(ctx.parameters.parameters().len(), kept_params.len());
}

#[tokio::test]
async fn a_drifted_group_gets_exactly_its_rules_back() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 1).await;
    let group = record.security_group_id.clone().unwrap();
    let desired = crate::stages::security_group::desired_rules(&record.spec);
    // Out of band: a cluster port revoked, SSH opened to the world.
    let lost = desired[0].clone();
    cloud.remove_rules(&group, std::slice::from_ref(&lost));
    let ssh = rule("tcp", 22, IngressSource::Cidr("0.0.0.0/0".into()));
    cloud.add_rules(&group, std::slice::from_ref(&ssh));

    let dry = reconcile(&ctx, &cloud, &Settings::default(), true).await;
    assert!(
        matches!(&dry.plan.actions[..], [Action::RestoreGroupRules { authorize, revoke, .. }] if authorize[..] == [lost.clone()] && revoke[..] == [ssh.clone()]),
        "{dry:?}"
    );
    assert!(
        cloud.groups()[&group].1.iter().any(|r| r.same_as(&ssh)),
        "a dry run changes nothing"
    );

    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(report.rules_restored(), 2, "{report:?}");
    let emf: serde_json::Value = serde_json::from_str(&report.emf(1, 1)).unwrap();
    assert_eq!(emf["RulesRestored"], 2);
    let rules = &cloud.groups()[&group].1;
    assert_eq!(rules.len(), desired.len(), "{rules:?}");
    assert!(desired.iter().all(|d| rules.iter().any(|r| r.same_as(d))));
    let events = ctx.store.events(&record.id).await.unwrap();
    assert!(
        events.iter().any(|e| e.stage == STAGE
            && e.detail.contains("tcp 22 from 0.0.0.0/0")
            && e.detail.contains(&group)),
        "{events:?}"
    );

    // Restored: the next run plans nothing and makes no mutating call.
    let calls = cloud.mutating_calls();
    let again = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(again.plan.actions, vec![], "{again:?}");
    assert_eq!(cloud.mutating_calls(), calls);
}

#[tokio::test]
async fn a_change_in_flight_is_not_undone_by_a_stale_restore() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 0).await;
    let group = record.security_group_id.clone().unwrap();
    let ssh = rule("tcp", 22, IngressSource::Cidr("0.0.0.0/0".into()));
    cloud.add_rules(&group, std::slice::from_ref(&ssh));
    // The record is UPDATING by the time the action runs.
    let mut r = record.clone();
    r.status = Status::Updating;
    ctx.store.update(&r).await.unwrap();
    let ec2 = cloud.clone();
    let result = hygiene::restore_rules(
        &ctx,
        &ec2,
        &record.id,
        &group,
        &[],
        std::slice::from_ref(&ssh),
    )
    .await;
    assert_eq!(result, "skipped: the cluster is UPDATING");
    assert!(cloud.groups()[&group].1.iter().any(|r| r.same_as(&ssh)));
    // Serving again, but with a spec that now wants what the run meant to revoke.
    let mut r = ctx.store.get(&record.id).await.unwrap().unwrap();
    r.status = Status::Active;
    ctx.store.update(&r).await.unwrap();
    let desired = crate::stages::security_group::desired_rules(&record.spec);
    let result = hygiene::restore_rules(&ctx, &ec2, &record.id, &group, &[], &desired[..1]).await;
    assert_eq!(
        result,
        "skipped: the cluster's spec changed since the run looked"
    );
    assert_eq!(cloud.groups()[&group].1.len(), desired.len() + 1);
}

#[tokio::test]
async fn instances_off_their_tags_or_imds_settings_are_reported_only() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 1).await;
    let (cp, worker) = (
        node_of(&record, Role::ControlPlane, 0),
        node_of(&record, Role::Worker, 0),
    );
    cloud.remove_tag(&cp, resources::TAG_ROLE);
    cloud.set_metadata(
        &worker,
        MetadataOptions {
            tokens_required: false,
            hop_limit: Some(2),
        },
    );
    let calls = cloud.mutating_calls();
    let report = reconcile(&ctx, &cloud, &Settings::default(), false).await;
    assert_eq!(report.plan.actions, vec![], "{report:?}");
    let findings: Vec<&str> = report
        .plan
        .findings
        .iter()
        .map(|f| f.what.as_str())
        .collect();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(findings
        .iter()
        .any(|f| f.contains(&cp) && f.contains(resources::TAG_ROLE)));
    assert!(findings
        .iter()
        .any(|f| f.contains(&worker) && f.contains("tokens optional, hop limit 2")));
    assert_eq!(cloud.mutating_calls(), calls, "reported, not acted on");
}

#[tokio::test]
async fn a_targeted_run_tidies_only_its_cluster() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let record = cluster(&ctx, &cloud, 1, 1, 0).await;
    let group = record.security_group_id.clone().unwrap();
    let ssh = rule("tcp", 22, IngressSource::Cidr("0.0.0.0/0".into()));
    cloud.add_rules(&group, std::slice::from_ref(&ssh));
    let orphan_group = cloud.add_group("c-00000000000000ff", Some(7200));
    let orphan_params = parameters_of(&ctx, "c-00000000000000ff", 7200).await;

    let report = reconcile_targeted(&ctx, &cloud, &record.nodes[0].instance_id).await;
    assert_eq!(report.only.as_deref(), Some(record.id.as_str()));
    assert!(
        report
            .plan
            .actions
            .iter()
            .all(|a| a.cluster_id() == record.id),
        "{report:?}"
    );
    assert_eq!(report.rules_restored(), 1);
    assert!(cloud.groups().contains_key(&orphan_group));
    assert_eq!(
        ctx.parameters.parameters().len(),
        orphan_params.len(),
        "another cluster's orphans wait for a full run"
    );
}

// ---- orphan API load balancers (`hygiene::orphan_balancing`) ----

/// The cluster's API load balancer as the create makes it (target group, balancer, listener,
/// named and tagged for it), created `age` seconds ago; with `lone`, its target group alone.
async fn balancer_of(balancers: &FakeBalancers, cluster_id: &str, age: i64, lone: bool) {
    let spec = serde_json::from_value::<ClusterRequest>(serde_json::json!({"name": "edge"}))
        .unwrap()
        .validate(&Policy::default())
        .unwrap();
    let request = crate::stages::load_balancer::request(
        &Deployment::default(),
        cluster_id,
        &spec,
        &["subnet-1".into()],
        "vpc-1",
        "sg-1",
    );
    let group = balancers.create_target_group(&request).await.unwrap();
    if !lone {
        let balancer = balancers.create_balancer(&request).await.unwrap();
        balancers
            .create_listener(&balancer.arn, &group, &request)
            .await
            .unwrap();
    }
    balancers.age(&request.name, age);
}

fn balancing_of(balancers: &FakeBalancers, cluster_id: &str) -> (usize, usize, usize) {
    let name = resources::Deployment::default().balancer_name(cluster_id);
    let lbs = balancers.balancers();
    let arns: Vec<&String> = lbs
        .iter()
        .filter(|b| b.name == name)
        .map(|b| &b.arn)
        .collect();
    (
        arns.len(),
        balancers
            .listeners()
            .iter()
            .filter(|l| arns.contains(&&l.balancer_arn))
            .count(),
        balancers
            .target_groups()
            .iter()
            .filter(|t| t.name == name)
            .count(),
    )
}

#[tokio::test]
async fn an_orphan_balancer_goes_after_its_grace_with_its_listener_and_target_group() {
    let (ctx, cloud, balancers) = (ctx(), FakeCloud::new(), FakeBalancers::default());
    let live = cluster(&ctx, &cloud, 1, 1, 0).await;
    balancer_of(&balancers, &live.id, 7200, false).await;
    let (old, young, lone) = (
        "c-00000000000000ff",
        "c-00000000000000fe",
        "c-00000000000000fd",
    );
    balancer_of(&balancers, old, 7200, false).await;
    balancer_of(&balancers, young, 60, false).await;
    balancer_of(&balancers, lone, 7200, true).await;
    let is_removal = |a: &Action| matches!(a, Action::DeleteOrphanBalancer { .. });

    // Report-only: findings naming them, nothing deleted.
    let report_only = Settings {
        orphans_report_only: true,
        ..Settings::default()
    };
    let report = reconcile_balanced(&ctx, &cloud, &balancers, &report_only, false).await;
    assert!(!report.plan.actions.iter().any(is_removal), "{report:?}");
    for (id, part) in [(old, "load balancer"), (lone, "target group")] {
        let name = resources::Deployment::default().balancer_name(id);
        assert!(
            report.plan.findings.iter().any(|f| f.cluster_id == id
                && f.what.contains(&format!("{part} {name}"))
                && f.what.contains("report-only")),
            "{report:?}"
        );
    }
    assert_eq!(balancing_of(&balancers, old), (1, 1, 1));
    assert_eq!(balancing_of(&balancers, lone), (0, 0, 1));

    // The target group's delete fails once: the balancer and its listener are gone, the group is
    // left and the outcome says so; the next run finds it alone and removes it.
    balancers.fail_next(
        "delete_target_group",
        CloudError::DependencyViolation("ResourceInUse".into()),
    );
    let report = reconcile_balanced(&ctx, &cloud, &balancers, &Settings::default(), false).await;
    let removals = done(&report, is_removal);
    assert_eq!(removals.len(), 2, "{report:?}");
    let outcome_of = |id: &str| {
        removals
            .iter()
            .find(|o| o.action.cluster_id() == id)
            .map(|o| o.result.clone())
            .unwrap()
    };
    // Planned by cluster id: `…fd` (lone) comes before `…ff`.
    assert!(outcome_of(lone).starts_with("failed: "), "{report:?}");
    assert!(
        outcome_of(old).starts_with("done: deleted load balancer"),
        "{report:?}"
    );
    assert!(outcome_of(old).contains("target group"), "{report:?}");
    assert_eq!(balancing_of(&balancers, lone), (0, 0, 1));
    assert_eq!(balancing_of(&balancers, old), (0, 0, 0));
    assert_eq!(
        balancing_of(&balancers, young),
        (1, 1, 1),
        "within the grace"
    );
    assert_eq!(
        balancing_of(&balancers, &live.id),
        (1, 1, 1),
        "a live cluster's"
    );
    assert_eq!(report.orphans_removed(), 1);

    let again = reconcile_balanced(&ctx, &cloud, &balancers, &Settings::default(), false).await;
    assert!(
        matches!(&done(&again, is_removal)[..], [Outcome { action: Action::DeleteOrphanBalancer { cluster_id, parts, .. }, result }]
            if cluster_id == lone && parts[..] == [format!("target group {}", resources::Deployment::default().balancer_name(lone))] && result.starts_with("done")),
        "{again:?}"
    );
    assert_eq!(balancing_of(&balancers, lone), (0, 0, 0));
    assert_eq!(again.orphans_removed(), 1);

    // Nothing more is planned; a removal repeated finds nothing.
    let third = reconcile_balanced(&ctx, &cloud, &balancers, &Settings::default(), false).await;
    assert!(!third.plan.actions.iter().any(is_removal), "{third:?}");
    assert_eq!(
        hygiene::delete_orphan_balancer(&ctx, &balancers, &Deployment::default(), "us-east-1", old)
            .await,
        "skipped: already gone"
    );
    assert_eq!(balancers.balancers().len(), 2);
}

#[tokio::test]
async fn a_balancer_is_an_orphan_only_when_its_record_lets_go_of_it() {
    let (ctx, cloud, balancers) = (ctx(), FakeCloud::new(), FakeBalancers::default());
    // Every status that still owns its balancer, then FAILED not retained and DELETED.
    let mut kept = Vec::new();
    for (n, status, retain) in [
        (1, Status::Active, false),
        (2, Status::Creating, false),
        (3, Status::Updating, false),
        (4, Status::Deleting, false),
        (5, Status::Degraded, false),
        (6, Status::Failed, true),
        (7, Status::Failed, false),
        (8, Status::Deleted, false),
    ] {
        let mut r = cluster(&ctx, &cloud, n, 1, 0).await;
        r.status = status;
        r.spec.retain_on_failure = retain;
        r.balancer = Some(ApiBalancer {
            dns_name: format!("{}.elb.example", r.id),
            load_balancer_arn: format!("arn:lb/{}", r.id),
            listener_arn: format!("arn:listener/{}", r.id),
            target_group_arn: format!("arn:tg/{}", r.id),
        });
        ctx.store.update(&r).await.unwrap();
        balancer_of(&balancers, &r.id, 7200, false).await;
        if n <= 6 {
            kept.push(r.id);
        }
    }
    let eager = Settings {
        orphan_grace_seconds: 0,
        ..Settings::default()
    };
    let report = reconcile_balanced(&ctx, &cloud, &balancers, &eager, false).await;
    let removed: Vec<String> = done(&report, |a| {
        matches!(a, Action::DeleteOrphanBalancer { .. })
    })
    .iter()
    .filter(|o| o.result.starts_with("done"))
    .map(|o| o.action.cluster_id().to_string())
    .collect();
    assert_eq!(
        removed,
        ["c-0000000000000007", "c-0000000000000008"],
        "{report:?}"
    );
    for id in &kept {
        assert_eq!(balancing_of(&balancers, id), (1, 1, 1), "{id} kept");
        let record = ctx.store.get(id).await.unwrap().unwrap();
        assert!(record.balancer.is_some(), "{id} keeps its balancer");
    }
    for id in ["c-0000000000000007", "c-0000000000000008"] {
        assert_eq!(balancing_of(&balancers, id), (0, 0, 0), "{id} removed");
        // A FAILED record no longer names what is gone; a DELETED one is left as its delete left it.
        let record = ctx.store.get(id).await.unwrap().unwrap();
        assert_eq!(
            record.balancer.is_none(),
            record.status == Status::Failed,
            "{id}"
        );
        let events = ctx.store.events(id).await.unwrap();
        assert!(
            events.iter().any(|e| e.stage == STAGE
                && e.detail.contains("orphan load balancer")
                && e.detail.contains("deleted")),
            "{events:?}"
        );
    }
    // A removal planned earlier and acted on after the record took the balancer back stands back.
    assert_eq!(
        hygiene::delete_orphan_balancer(
            &ctx,
            &balancers,
            &Deployment::default(),
            "us-east-1",
            &kept[5]
        )
        .await,
        "skipped: the cluster has a live record"
    );
    assert_eq!(balancing_of(&balancers, &kept[5]), (1, 1, 1));
}

#[test]
fn a_balancer_without_a_known_age_is_only_reported() {
    let observed = Observed {
        now: 10_000,
        balancing: vec![crate::ports::TaggedBalancing {
            region: "us-east-1".into(),
            part: crate::ports::BalancingPart::TargetGroup,
            arn: "arn:tg".into(),
            name: "mecplane-c-00000000000000ff".into(),
            cluster_id: "c-00000000000000ff".into(),
            created_at: None,
        }],
        ..Observed::default()
    };
    let plan = plan::plan(&observed, &Settings::default(), None);
    assert_eq!(plan.actions, vec![]);
    assert!(
        matches!(&plan.findings[..], [f] if f.what.contains("its age is unknown") && f.what.contains("target group mecplane-c-00000000000000ff")),
        "{plan:?}"
    );
    // A targeted run at another cluster does not look at it.
    let plan = plan::plan(&observed, &Settings::default(), Some("c-0000000000000001"));
    assert!(plan.findings.is_empty(), "{plan:?}");
}

/// What a deployment has in the account, to compare before and after the other one's runs.
fn account_of(cloud: &FakeCloud, params: &FakeCloud, balancers: &FakeBalancers) -> String {
    let live: Vec<String> = cloud
        .live_instances()
        .into_iter()
        .map(|i| i.instance.instance_id)
        .collect();
    let groups: Vec<String> = cloud.groups().into_keys().collect();
    let parameters: Vec<String> = params.parameters().into_keys().collect();
    let lbs: Vec<String> = balancers.balancers().into_iter().map(|b| b.name).collect();
    let tgs: Vec<String> = balancers
        .target_groups()
        .into_iter()
        .map(|t| t.name)
        .collect();
    format!("{live:?} {groups:?} {parameters:?} {lbs:?} {tgs:?}")
}

#[tokio::test]
async fn two_deployments_in_one_account_never_touch_each_other() {
    // GIVEN two deployments sharing one account and region: `mecplane` (the default) and `beta`,
    // each with a cluster, its nodes, group, parameters and API load balancer, all old enough to
    // be orphans to anyone who took them for its own
    let beta = resources::Deployment::new("beta", "beta-node").unwrap();
    let (ctx_a, cloud_a) = (ctx(), FakeCloud::new());
    let cloud_b = cloud_a.as_deployment(beta.clone());
    let ctx_b = ApiContext {
        store: FakeStore::default(),
        parameters: ctx_a.parameters.as_deployment(beta.clone()),
        ..ctx()
    };
    let (lbs_a, lbs_b) = {
        let a = FakeBalancers::default();
        let b = a.as_deployment(beta.clone());
        (a, b)
    };
    let a = cluster(&ctx_a, &cloud_a, 1, 1, 1).await;
    let b = cluster(&ctx_b, &cloud_b, 2, 1, 1).await;
    for (deployment, id) in [
        (resources::Deployment::default(), &a.id),
        (beta.clone(), &b.id),
    ] {
        for name in deployment.cluster_parameters(id) {
            ctx_a.parameters.put_secret(&name, "secret").await.unwrap();
            ctx_a.parameters.age_parameter(&name, 7200);
        }
    }
    balancer_of(&lbs_a, &a.id, 7200, false).await;
    let spec = b.spec.clone();
    let request =
        crate::stages::load_balancer::request(&beta, &b.id, &spec, &["s".into()], "v", "sg");
    lbs_b.create_target_group(&request).await.unwrap();
    lbs_b.create_balancer(&request).await.unwrap();
    lbs_b.age(&request.name, 7200);
    // … and instances made outside either, tagged to look like nodes: of a made-up cluster with
    // the deployment's tag but another profile, of `a`'s own cluster without the deployment tag.
    let made_up = "c-00000000000000ff";
    cloud_a.add_look_alike(made_up, Role::Worker, 0, Some("mecplane"), Some("prod-app"));
    cloud_a.add_look_alike(&a.id, Role::Worker, 5, None, Some("mecplane-node"));
    let before = account_of(&cloud_a, &ctx_a.parameters, &lbs_a);

    // WHEN each runs a non-dry reconcile with an orphan grace of 0, twice
    for _ in 0..2 {
        for (ctx, cloud, lbs, deployment) in [
            (&ctx_a, &cloud_a, &lbs_a, resources::Deployment::default()),
            (&ctx_b, &cloud_b, &lbs_b, beta.clone()),
        ] {
            let settings = Settings {
                orphan_grace_seconds: 0,
                deployment,
                ..Settings::default()
            };
            let report = reconcile_balanced(ctx, cloud, lbs, &settings, false).await;
            // THEN neither plans anything, nor reports the other's resources as its own
            assert_eq!(report.plan.actions, vec![], "{report:?}");
            assert_eq!(report.plan.findings, vec![], "{report:?}");
            assert_eq!(report.instances, 2, "its own two nodes only: {report:?}");
        }
    }
    assert_eq!(account_of(&cloud_a, &ctx_a.parameters, &lbs_a), before);
    assert!(ctx_a.executions.started().is_empty() && ctx_b.executions.started().is_empty());
}

#[tokio::test]
async fn a_look_alike_of_a_deleted_cluster_is_no_orphan_of_ours() {
    // GIVEN a cluster whose nodes are gone, and an instance someone tagged with its id (and
    // even the deployment tag) under another instance profile
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let foreign = cloud.add_look_alike(
        "c-00000000000000aa",
        Role::Worker,
        0,
        Some("mecplane"),
        Some("prod-app"),
    );
    // … while our own orphan (our tag and profile, no record) is old
    let orphan = cloud.add_tagged("c-00000000000000bb", Role::Worker, 0, 7200);
    let settings = Settings {
        orphan_grace_seconds: 0,
        ..Settings::default()
    };
    // WHEN a non-dry reconcile runs
    let report = reconcile(&ctx, &cloud, &settings, false).await;
    // THEN only our orphan is terminated; the look-alike is not even seen
    let live: Vec<String> = cloud
        .live_instances()
        .into_iter()
        .map(|i| i.instance.instance_id)
        .collect();
    assert_eq!(live, vec![foreign.clone()], "{report:?}");
    assert!(!format!("{report:?}").contains(&foreign), "{report:?}");
    assert!(format!("{report:?}").contains(&orphan));
}

#[tokio::test]
async fn a_stuck_create_that_retains_its_resources_loses_its_transport_key() {
    let (ctx, cloud) = (ctx(), FakeCloud::new());
    let mut r = cluster(&ctx, &cloud, 1, 1, 0).await;
    r.status = Status::Creating;
    r.spec.retain_on_failure = true;
    r.updated_at = "2020-01-01T00:00:00Z".into();
    // Its create execution was stopped from the console.
    let arn = ctx
        .executions
        .start("arn:create", &r.id, "{}")
        .await
        .unwrap();
    ctx.executions.set_status(&arn, ExecutionStatus::Aborted);
    r.execution_arn = Some(arn);
    ctx.store.update(&r).await.unwrap();
    let (key, token) = (
        resources::Deployment::default().transport_key_parameter(&r.id),
        resources::Deployment::default().join_token_parameter(&r.id),
    );
    ctx.parameters
        .put_secret(&key, "private half")
        .await
        .unwrap();
    ctx.parameters.put_secret(&token, "token").await.unwrap();
    let settled = Settings {
        grace_seconds: 0,
        ..Settings::default()
    };
    let report = reconcile(&ctx, &cloud, &settled, false).await;
    assert!(
        report.outcomes.iter().any(|o| matches!(
            o.action,
            Action::FailStuckCreate {
                teardown: false,
                ..
            }
        ) && o.result.contains("transport key deleted")),
        "{report:?}"
    );
    let after = ctx.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Failed);
    assert_eq!(ctx.parameters.get_secret(&key).await.unwrap(), None);
    assert_eq!(
        ctx.parameters.get_secret(&token).await.unwrap().as_deref(),
        Some("token"),
        "the rest is retained"
    );
}
