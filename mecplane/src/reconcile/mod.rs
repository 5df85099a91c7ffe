//! Fleet reconciliation: one run observes the fleet with bounded calls, plans ([`plan`], pure),
//! then acts — or, in a dry run, only reports. Started by an EventBridge schedule, by EC2
//! instance state-change events (a run targeted at that instance's cluster), and on demand
//! (`POST /reconcile`, `mecctl reconcile`).
//!
//! Observed: the records not `DELETED` (DynamoDB pages of the status index), every instance with
//! the project's cluster tag in each region a record lives in or the deployment allows
//! (DescribeInstances pages of 1,000), and the executions of records that look stuck; for the
//! housekeeping ([`hygiene`]), the project's security groups, API load balancers and target
//! groups per region and its parameters' metadata.
//!
//! Overlapping runs are harmless because every action is conditional or idempotent: a
//! replacement is a conditional write of the record to `UPDATING` (a second run finds it
//! `UPDATING` and skips it: one replacement per dead node), marking `DEGRADED` is a conditional
//! write, failing a stuck create or update re-checks the execution, a delete resumes with a
//! deterministic execution name, and terminating an orphan (or deleting an orphan group,
//! parameter or load balancer) twice removes it once.

pub mod health;
pub mod hygiene;
pub mod plan;

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::api::updates::{self, Who};
use crate::api::{clusters, ApiContext};
use crate::error::CloudError;
use crate::ports::{
    ClusterStore, Executions, Instances, ListFilter, LoadBalancers, NodeCommands, Parameters,
    SecurityGroups, StatusChecks, Zones,
};
use crate::record::{ClusterRecord, Degradation, Event, Phase, Status};
use crate::resources::Deployment;

pub use plan::{Action, Finding, Observed, Plan, Settings};

/// The caller recorded on the updates the reconcile starts.
pub const CALLER: &str = "mecplane:reconcile";
/// The stage name of the reconcile's events.
pub const STAGE: &str = "reconcile";

/// What starts a run: the schedule's payload, an EC2 state-change event, or an on-demand request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ReconcileEvent {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default, rename = "detail-type")]
    pub detail_type: Option<String>,
    #[serde(default)]
    pub detail: Option<Ec2Detail>,
    /// Plan and report only.
    #[serde(default)]
    pub dry_run: bool,
}

/// The `detail` of an EC2 Instance State-change Notification.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ec2Detail {
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    #[serde(default)]
    pub state: Option<String>,
}

impl ReconcileEvent {
    /// What started the run, for the report.
    pub fn trigger(&self) -> String {
        match (&self.source, &self.detail) {
            (Some(s), Some(d)) if s == "aws.ec2" => format!(
                "ec2: {} {}",
                d.instance_id,
                d.state.as_deref().unwrap_or("changed state")
            ),
            (Some(s), _) => s.clone(),
            (None, _) => "on demand".into(),
        }
    }
}

/// The body of `POST /reconcile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// Plan and report only (default: act).
    #[serde(default)]
    pub dry_run: bool,
}

/// EC2 in one region as a run uses it: the instances, their status checks, the security groups;
/// and, for `POST /clusters` in the same function, the subnets' zones and offerings
/// ([`crate::placement`]).
pub trait FleetEc2: Instances + StatusChecks + SecurityGroups + Zones {}
impl<T: Instances + StatusChecks + SecurityGroups + Zones> FleetEc2 for T {}

/// The adapters of one region a run reaches (the functions' regional clients; the tests' fakes).
/// The cluster's parameters are not here: they live in the control plane's region
/// ([`ApiContext::parameters`]).
pub struct RegionPorts {
    /// EC2: instances, status checks, security groups.
    pub ec2: Box<dyn FleetEc2>,
    /// SSM Run Command: the nodes' agents.
    pub ssm: Box<dyn NodeCommands>,
    /// Elastic Load Balancing: the clusters' API load balancers (orphans found and removed).
    pub balancers: Box<dyn LoadBalancers>,
}

/// The adapters of a region, by its name.
pub type PortsIn<'a> = dyn Fn(&str) -> RegionPorts + Send + Sync + 'a;

/// What a run may reach beyond the API's context: the regional adapters, the regions the
/// deployment allows, the settings.
pub struct Fleet<'a> {
    pub ports_in: &'a PortsIn<'a>,
    pub allowed_regions: &'a [String],
    pub settings: &'a Settings,
}

/// What happened to one planned action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub action: Action,
    /// `done: …`, `skipped: …` (another run or change got there first) or `failed: …`.
    pub result: String,
}

/// What one run saw, planned and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub trigger: String,
    pub dry_run: bool,
    /// The cluster a targeted run was limited to.
    pub only: Option<String>,
    pub regions: Vec<String>,
    pub records: usize,
    pub instances: usize,
    pub plan: Plan,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Replacements started this run.
    pub fn repairs_started(&self) -> usize {
        self.count(|a| matches!(a, Action::ReplaceNode { .. }))
    }

    /// Orphans removed this run: instances terminated, security groups, parameters and load
    /// balancers (each with its listener and target group) deleted.
    pub fn orphans_removed(&self) -> usize {
        self.sum(|a| match a {
            Action::TerminateOrphan { .. }
            | Action::DeleteOrphanGroup { .. }
            | Action::DeleteOrphanBalancer { .. } => 1,
            Action::DeleteOrphanParameters { names, .. } => names.len(),
            _ => 0,
        })
    }

    /// Security-group rules restored this run (missing ones authorized, undesired ones revoked).
    pub fn rules_restored(&self) -> usize {
        self.sum(|a| match a {
            Action::RestoreGroupRules {
                authorize, revoke, ..
            } => authorize.len() + revoke.len(),
            _ => 0,
        })
    }

    /// What `weight` counts over the actions done this run.
    fn sum(&self, weight: impl Fn(&Action) -> usize) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.result.starts_with("done"))
            .map(|o| weight(&o.action))
            .sum()
    }

    /// Node checks sent this run (one read-only command on one control plane each; the record
    /// remembers it: one conditional write, and one more when a later run reads the answer).
    pub fn node_checks_sent(&self) -> usize {
        self.count(|a| matches!(a, Action::CheckNodes { .. }))
    }

    fn count(&self, what: impl Fn(&Action) -> bool) -> usize {
        self.outcomes
            .iter()
            .filter(|o| what(&o.action) && o.result.starts_with("done"))
            .count()
    }

    /// The run as a CloudWatch embedded-metric-format log line (namespace `mecplane`): clusters
    /// by status, unhealthy nodes, repairs started, orphans removed (of every kind), security-group
    /// rules restored, the run's duration.
    pub fn emf(&self, duration_ms: u128, now_ms: u128) -> String {
        let mut values = serde_json::Map::new();
        let mut names = Vec::new();
        let mut put = |name: String, value: serde_json::Value, unit: &str| {
            names.push(serde_json::json!({"Name": name, "Unit": unit}));
            values.insert(name, value);
        };
        for status in Status::ALL {
            let n = self
                .plan
                .clusters_by_status
                .get(status.as_str())
                .copied()
                .unwrap_or(0);
            put(format!("Clusters{}", status.as_str()), n.into(), "Count");
        }
        put(
            "UnhealthyNodes".into(),
            self.plan.unhealthy_nodes.into(),
            "Count",
        );
        put(
            "RepairsStarted".into(),
            self.repairs_started().into(),
            "Count",
        );
        put(
            "OrphansRemoved".into(),
            self.orphans_removed().into(),
            "Count",
        );
        put(
            "RulesRestored".into(),
            self.rules_restored().into(),
            "Count",
        );
        put(
            "NodeChecksSent".into(),
            self.node_checks_sent().into(),
            "Count",
        );
        put(
            "ReconcileDuration".into(),
            (duration_ms as u64).into(),
            "Milliseconds",
        );
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": now_ms as u64,
                "CloudWatchMetrics": [{"Namespace": "mecplane", "Dimensions": [[]], "Metrics": names}],
            },
        });
        if let Some(obj) = line.as_object_mut() {
            obj.extend(values);
        }
        line.to_string()
    }
}

/// How many records one listing call asks for.
const PAGE: u32 = 100;

/// Reads every record not `DELETED`, page by page.
async fn observe_records<S: ClusterStore>(store: &S) -> Result<Vec<ClusterRecord>, CloudError> {
    let mut records = Vec::new();
    // Every status but DELETED.
    for status in Status::ALL.into_iter().filter(|s| s.is_live()) {
        let filter = ListFilter {
            status: Some(status),
            region: None,
        };
        let mut token: Option<String> = None;
        loop {
            let page = store.list(&filter, token.as_deref(), PAGE).await?;
            records.extend(page.records);
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    Ok(records)
}

/// One run. The fleet's allowed regions are looked at even where no record lives (orphans).
pub async fn run<S, E, P>(
    ctx: &ApiContext<S, E, P>,
    fleet: &Fleet<'_>,
    event: &ReconcileEvent,
) -> Result<Report, CloudError>
where
    S: ClusterStore,
    E: Executions,
    P: Parameters,
{
    let (ports_in, allowed_regions, settings) =
        (fleet.ports_in, fleet.allowed_regions, fleet.settings);
    let now = crate::clock::now_epoch();
    let records = observe_records(&ctx.store).await?;
    let regions: BTreeSet<String> = records
        .iter()
        .map(|r| r.spec.region.clone())
        .chain(allowed_regions.iter().cloned())
        .chain(event.region.clone())
        .collect();
    let mut instances = Vec::new();
    for region in &regions {
        instances.extend(ports_in(region).ec2.find_tagged(region).await?);
    }
    // Executions of the records that look stuck: only those that have sat still for the grace
    // (the plan does not look at the others).
    let mut executions = HashMap::new();
    for record in records
        .iter()
        .filter(|r| plan::settled(r, now, settings.grace_seconds))
    {
        let arn = match record.status {
            Status::Creating => record.execution_arn.clone(),
            Status::Updating => record
                .updates
                .iter()
                .rev()
                .find(|u| u.status == crate::record::UpdateStatus::InProgress)
                .and_then(|u| u.execution_arn.clone()),
            Status::Deleting => record.delete_execution_arn.clone(),
            _ => None,
        };
        let Some(arn) = arn else { continue };
        match ctx.executions.status(&arn).await {
            Ok(status) => {
                executions.insert(arn, status);
            }
            Err(CloudError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let only = event
        .detail
        .as_ref()
        .and_then(|d| {
            instances
                .iter()
                .find(|t| t.instance.instance_id == d.instance_id)
        })
        .map(|t| t.cluster_id.clone());
    let health = health::observe(ports_in, &records, &instances).await;
    let seen = hygiene::observe(ctx, ports_in, &regions, &settings.deployment).await?;
    let observed = Observed {
        now,
        records,
        instances,
        executions,
        health,
        groups: seen.groups,
        parameters: seen.parameters,
        balancing: seen.balancing,
    };
    let plan = plan::plan(&observed, settings, only.as_deref());
    let mut outcomes = Vec::new();
    if !event.dry_run {
        for action in &plan.actions {
            let result = act(ctx, ports_in, &settings.deployment, action).await;
            tracing::info!(cluster_id = action.cluster_id(), ?action, %result, "reconcile");
            outcomes.push(Outcome {
                action: action.clone(),
                result,
            });
        }
    }
    Ok(Report {
        trigger: event.trigger(),
        dry_run: event.dry_run,
        only,
        regions: regions.into_iter().collect(),
        records: observed.records.len(),
        instances: observed.instances.len(),
        plan,
        outcomes,
    })
}

/// Carries out one action; the answer says how it went (never an error: one failed action does
/// not stop the others).
async fn act<S, E, P>(
    ctx: &ApiContext<S, E, P>,
    ports_in: &PortsIn<'_>,
    deployment: &Deployment,
    action: &Action,
) -> String
where
    S: ClusterStore,
    E: Executions,
    P: Parameters,
{
    let who = Who {
        caller: Some(CALLER.into()),
        if_match: None,
    };
    let note = |id: &str, phase: Phase, detail: String| {
        let event = Event::now(id, STAGE, phase, detail);
        async move {
            if let Err(e) = ctx.store.append_event(&event).await {
                tracing::warn!(error = %e, "could not record the reconcile event");
            }
        }
    };
    match action {
        Action::ReplaceNode {
            cluster_id,
            instance_id,
            role,
            index,
            reason,
        } => match updates::replace(ctx, &who, cluster_id, instance_id).await {
            Ok(answer) if answer.status == 202 => {
                let location = answer
                    .headers
                    .iter()
                    .find(|(k, _)| k == "location")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                note(
                    cluster_id,
                    Phase::Progress,
                    format!(
                        "{} {index} ({instance_id}) is dead: {reason}; replacing it ({location})",
                        role.as_str()
                    ),
                )
                .await;
                format!("done: replacement started ({location})")
            }
            Ok(answer) => format!("skipped: answered {}", answer.status),
            Err(e) if e.status == 409 || e.status == 412 => format!("skipped: {}", e.message),
            Err(e) => format!("failed: {}", e.message),
        },
        Action::MarkDegraded {
            cluster_id,
            nodes,
            reason,
        } => match mark_degraded(&ctx.store, cluster_id, nodes, reason).await {
            Ok(true) => {
                note(cluster_id, Phase::Progress, format!("DEGRADED: {reason}")).await;
                "done: DEGRADED".into()
            }
            Ok(false) => "skipped: already recorded".into(),
            Err(e) => format!("failed: {e}"),
        },
        Action::FailStuckCreate {
            cluster_id,
            teardown,
        } => {
            let record = match clusters::find(&ctx.store, cluster_id).await {
                Ok(r) => r,
                Err(e) => return format!("failed: {}", e.message),
            };
            match clusters::fail_interrupted_create(ctx, record).await {
                Ok(r) if r.status == Status::Failed && *teardown => {
                    match clusters::teardown_failed(ctx, &r).await {
                        Ok(_) => "done: FAILED, teardown started".into(),
                        Err(e) => format!("failed: FAILED, but the teardown: {}", e.message),
                    }
                }
                // retain_on_failure keeps the rest for inspection, not the private half of the
                // kubeconfig's one-time transport key (as the create machine's Retain? branch).
                Ok(r) if r.status == Status::Failed => {
                    let key = deployment.transport_key_parameter(&r.id);
                    match ctx.parameters.delete(std::slice::from_ref(&key)).await {
                        Ok(()) => "done: FAILED (retained; its transport key deleted)".into(),
                        Err(e) => format!("failed: FAILED (retained), but its transport key: {e}"),
                    }
                }
                Ok(r) => format!("skipped: {}", r.status),
                Err(e) => format!("failed: {}", e.message),
            }
        }
        Action::FailStuckUpdate { cluster_id } => {
            let record = match clusters::find(&ctx.store, cluster_id).await {
                Ok(r) => r,
                Err(e) => return format!("failed: {}", e.message),
            };
            match updates::fail_interrupted_update(ctx, record).await {
                Ok(r) if r.status != Status::Updating => {
                    format!("done: update failed, {}", r.status)
                }
                Ok(_) => "skipped: the update runs".into(),
                Err(e) => format!("failed: {}", e.message),
            }
        }
        Action::ResumeDelete { cluster_id } => match clusters::delete(ctx, cluster_id).await {
            Ok(_) => "done: delete resumed".into(),
            Err(e) => format!("failed: {}", e.message),
        },
        Action::DeleteOrphanGroup {
            region,
            group_id,
            cluster_id,
        } => {
            let ec2 = ports_in(region).ec2;
            hygiene::delete_orphan_group(ctx, &*ec2, region, group_id, cluster_id).await
        }
        Action::DeleteOrphanBalancer {
            region, cluster_id, ..
        } => {
            let balancers = ports_in(region).balancers;
            hygiene::delete_orphan_balancer(ctx, &*balancers, deployment, region, cluster_id).await
        }
        Action::DeleteOrphanParameters { cluster_id, names } => {
            hygiene::delete_orphan_parameters(ctx, cluster_id, names).await
        }
        Action::RestoreGroupRules {
            cluster_id,
            region,
            group_id,
            authorize,
            revoke,
        } => {
            let group = ports_in(region).ec2;
            hygiene::restore_rules(ctx, &*group, cluster_id, group_id, authorize, revoke).await
        }
        Action::TerminateOrphan {
            region,
            instance_id,
            cluster_id,
        } => match ports_in(region)
            .ec2
            .terminate(std::slice::from_ref(instance_id))
            .await
        {
            Ok(()) => {
                tracing::warn!(
                    cluster_id,
                    instance_id,
                    region,
                    "orphan instance terminated"
                );
                format!("done: terminated {instance_id} in {region}")
            }
            Err(e) => format!("failed: {e}"),
        },
        Action::CheckNodes {
            cluster_id,
            region,
            instance_id,
            expected_nodes,
        } => {
            health::send_check(
                &ctx.store,
                ports_in,
                cluster_id,
                region,
                instance_id,
                *expected_nodes,
            )
            .await
        }
        Action::CloseNodeCheck {
            cluster_id,
            command_id,
            checked_at,
            ..
        } => health::close_check(&ctx.store, cluster_id, command_id, *checked_at).await,
    }
}

/// Records the cluster `DEGRADED` with the nodes and why, if it is `ACTIVE` or `DEGRADED` for
/// other nodes (a conditional write). Whether it changed the record.
async fn mark_degraded<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
    nodes: &[String],
    reason: &str,
) -> Result<bool, CloudError> {
    for _ in 0..3 {
        let Some(mut record) = store.get(cluster_id).await? else {
            return Ok(false);
        };
        if !record.status.is_serving() || record.degraded.as_ref().is_some_and(|d| d.nodes == nodes)
        {
            return Ok(false);
        }
        record.status = Status::Degraded;
        record.degraded = Some(Degradation {
            nodes: nodes.to_vec(),
            reason: reason.to_string(),
            since: crate::clock::now_rfc3339(),
        });
        match store.update(&record).await {
            Ok(_) => return Ok(true),
            Err(CloudError::ConditionFailed) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests;
