//! The reconcile's decision, pure: from what one run observed (the live records, the project's
//! instances in each region, how the executions the records point at ended) and the settings, the
//! actions to take and what to report instead. No clock, no I/O: tests and the benchmark feed it
//! observations directly.
//!
//! Safety, as Cluster API's MachineHealthCheck does it: a cluster where more than
//! `max_unhealthy_percent` of the nodes look dead at once is reported, never remediated (an AZ
//! outage must not trigger mass replacement); at most `max_repairs_per_run` replacements start per
//! run, fleet-wide; one change at a time per cluster. A healthy node is never acted on.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::ports::{
    ExecutionStatus, IngressRule, InstanceState, ParameterInfo, TaggedBalancing, TaggedGroup,
    TaggedInstance,
};
use crate::record::{ClusterRecord, NodeState, Role, Status};
use crate::resources::Deployment;

use super::health::{self, HealthSeen};

/// What a deployment allows a reconcile to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A record stuck in CREATING/UPDATING/DELETING is acted on once its execution has ended and
    /// the record has not changed for this long.
    pub grace_seconds: i64,
    /// An instance, security group, parameter or API load balancer of the project whose cluster
    /// has no live record is removed once this old.
    pub orphan_grace_seconds: i64,
    /// No remediation in a cluster where more than this share of the nodes look dead.
    pub max_unhealthy_percent: u32,
    /// At most this many node replacements start per run, fleet-wide.
    pub max_repairs_per_run: usize,
    /// Orphans are reported, not removed.
    pub orphans_report_only: bool,
    /// A serving cluster's Kubernetes nodes are sampled (one command to a control plane) at most
    /// this often.
    pub health_interval_seconds: i64,
    /// How often the schedule starts a run (sizes the node checks of one run).
    pub schedule_seconds: i64,
    /// Whose resources the run may look at and remove: only what this deployment owns
    /// ([`Deployment`]) is ever observed, so another deployment's are never orphans here.
    pub deployment: Deployment,
}

impl Settings {
    /// `MECPLANE_RECONCILE_GRACE_SECONDS`, `MECPLANE_ORPHAN_GRACE_SECONDS`,
    /// `MECPLANE_MAX_UNHEALTHY_PERCENT`, `MECPLANE_MAX_REPAIRS_PER_RUN`,
    /// `MECPLANE_ORPHANS_REPORT_ONLY` (`true`/`false`), `MECPLANE_HEALTH_INTERVAL_SECONDS`,
    /// `MECPLANE_RECONCILE_RATE_MINUTES` (the schedule's); each falls back to its default (with a
    /// warning when it is set but unreadable); `deployment` is the function's own (read, and
    /// refused when invalid, with its [`StageConfig`](crate::config::StageConfig)).
    pub fn from_env(deployment: Deployment) -> Self {
        fn read<T: std::str::FromStr + Copy + std::fmt::Display>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
                    tracing::warn!(var = name, value = %v, %default, "unreadable; using the default");
                    default
                }),
                _ => default,
            }
        }
        let d = Settings::default();
        Settings {
            grace_seconds: read("MECPLANE_RECONCILE_GRACE_SECONDS", d.grace_seconds),
            orphan_grace_seconds: read("MECPLANE_ORPHAN_GRACE_SECONDS", d.orphan_grace_seconds),
            max_unhealthy_percent: read("MECPLANE_MAX_UNHEALTHY_PERCENT", d.max_unhealthy_percent),
            max_repairs_per_run: read("MECPLANE_MAX_REPAIRS_PER_RUN", d.max_repairs_per_run),
            orphans_report_only: read("MECPLANE_ORPHANS_REPORT_ONLY", d.orphans_report_only),
            health_interval_seconds: read(
                "MECPLANE_HEALTH_INTERVAL_SECONDS",
                d.health_interval_seconds,
            ),
            schedule_seconds: read("MECPLANE_RECONCILE_RATE_MINUTES", d.schedule_seconds / 60) * 60,
            deployment,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace_seconds: 120,
            orphan_grace_seconds: 3600,
            max_unhealthy_percent: 40,
            max_repairs_per_run: 5,
            orphans_report_only: false,
            health_interval_seconds: 1800,
            schedule_seconds: 300,
            deployment: Deployment::default(),
        }
    }
}

/// What one run saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Epoch seconds.
    pub now: i64,
    /// Every record not `DELETED` (`FAILED` ones included: their instances are not orphans).
    pub records: Vec<ClusterRecord>,
    /// Every instance carrying the project's cluster tag, in every region looked at.
    pub instances: Vec<TaggedInstance>,
    /// How the executions the stuck-looking records point at stand (absent: unknown to Step
    /// Functions).
    pub executions: HashMap<String, ExecutionStatus>,
    /// The running nodes' status checks and agents, and the node checks answered.
    pub health: HealthSeen,
    /// Every security group carrying the project's cluster tag, in every region looked at.
    pub groups: Vec<TaggedGroup>,
    /// Every parameter under the project's parameter root (metadata only, never a value).
    pub parameters: Vec<ParameterInfo>,
    /// Every load balancer and target group named like a cluster's and carrying the project's
    /// cluster tag, in every region looked at.
    pub balancing: Vec<TaggedBalancing>,
}

/// One thing the run does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Start a node replacement (the cluster becomes `UPDATING`).
    ReplaceNode {
        cluster_id: String,
        instance_id: String,
        role: Role,
        index: u32,
        reason: String,
    },
    /// Record the cluster `DEGRADED` with the nodes and why (no replacement this run).
    MarkDegraded {
        cluster_id: String,
        nodes: Vec<String>,
        reason: String,
    },
    /// A create whose execution ended without a result: `FAILED`, then (`teardown`, unless
    /// `retain_on_failure`) torn down by the delete machine, the record staying `FAILED`.
    FailStuckCreate { cluster_id: String, teardown: bool },
    /// An update whose execution ended without a result: the update `Failed`.
    FailStuckUpdate { cluster_id: String },
    /// A delete whose execution ended without finishing: resumed.
    ResumeDelete { cluster_id: String },
    /// An instance of no live cluster, older than the grace: terminated.
    TerminateOrphan {
        region: String,
        instance_id: String,
        cluster_id: String,
    },
    /// A security group of no live cluster, older than the grace, no instance in it: deleted.
    DeleteOrphanGroup {
        region: String,
        group_id: String,
        cluster_id: String,
    },
    /// The API load balancer (its listener, the balancer, its target group) of a cluster with no
    /// record, a `DELETED` one or a `FAILED` one not retained, older than the grace: deleted by
    /// name, as the delete does. `parts`: what the run found (`load balancer mecplane-c-…`).
    DeleteOrphanBalancer {
        region: String,
        cluster_id: String,
        parts: Vec<String>,
    },
    /// Parameters of no live cluster, last written before the grace: deleted.
    DeleteOrphanParameters {
        cluster_id: String,
        names: Vec<String>,
    },
    /// A serving cluster's group drifted: the missing rules authorized again, the rules nobody
    /// asked for revoked.
    RestoreGroupRules {
        cluster_id: String,
        region: String,
        group_id: String,
        authorize: Vec<IngressRule>,
        revoke: Vec<IngressRule>,
    },
    /// Sample the cluster's Kubernetes nodes: the verify script sent to a control plane (read-only
    /// on the node), remembered in the record for the next run to read.
    CheckNodes {
        cluster_id: String,
        region: String,
        instance_id: String,
        expected_nodes: u32,
    },
    /// Forget a node check read (or unanswered too long); `checked_at` becomes the last check
    /// (`None`: the cluster stays due).
    CloseNodeCheck {
        cluster_id: String,
        command_id: String,
        checked_at: Option<i64>,
        answer: String,
    },
}

impl Action {
    /// The cluster it is about.
    pub fn cluster_id(&self) -> &str {
        match self {
            Action::ReplaceNode { cluster_id, .. }
            | Action::MarkDegraded { cluster_id, .. }
            | Action::FailStuckCreate { cluster_id, .. }
            | Action::FailStuckUpdate { cluster_id }
            | Action::ResumeDelete { cluster_id }
            | Action::TerminateOrphan { cluster_id, .. }
            | Action::DeleteOrphanGroup { cluster_id, .. }
            | Action::DeleteOrphanBalancer { cluster_id, .. }
            | Action::DeleteOrphanParameters { cluster_id, .. }
            | Action::RestoreGroupRules { cluster_id, .. }
            | Action::CheckNodes { cluster_id, .. }
            | Action::CloseNodeCheck { cluster_id, .. } => cluster_id,
        }
    }
}

/// Something seen and deliberately not acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub cluster_id: String,
    pub what: String,
}

/// The plan of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub findings: Vec<Finding>,
    /// Records by status (for metrics and the report).
    pub clusters_by_status: BTreeMap<String, usize>,
    /// Nodes that look dead, fleet-wide.
    pub unhealthy_nodes: usize,
}

/// Why a recorded node looks dead from its instance, if it does: gone, stopped or stopping (its
/// health, when the instance runs: [`health::sick_reason`]).
fn dead_reason(instance: Option<&TaggedInstance>) -> Option<String> {
    match instance.map(|t| t.instance.state) {
        None => Some("its instance no longer exists".into()),
        Some(InstanceState::Running | InstanceState::Pending) => None,
        Some(state) => Some(format!("its instance is {}", state.as_str())),
    }
}

/// Whether a record has sat still for the grace period (its last write is older).
pub(crate) fn settled(record: &ClusterRecord, now: i64, grace: i64) -> bool {
    crate::clock::epoch_of(&record.updated_at).is_none_or(|t| now - t >= grace)
}

/// Plans one run; `only` restricts it to one cluster (a targeted run, after an EC2 event).
pub fn plan(observed: &Observed, settings: &Settings, only: Option<&str>) -> Plan {
    let mut out = Plan::default();
    let by_id: HashMap<&str, &TaggedInstance> = observed
        .instances
        .iter()
        .map(|t| (t.instance.instance_id.as_str(), t))
        .collect();
    let mut repairs = 0usize;
    for record in &observed.records {
        *out.clusters_by_status
            .entry(record.status.as_str().to_string())
            .or_default() += 1;
        if only.is_some_and(|id| id != record.id) {
            continue;
        }
        match record.status {
            Status::Active | Status::Degraded => {
                plan_health(record, observed, &by_id, settings, &mut repairs, &mut out)
            }
            Status::Creating | Status::Updating | Status::Deleting => {
                plan_stuck(record, observed, settings, &mut out)
            }
            Status::Failed | Status::Deleted => {}
        }
    }
    plan_orphans(observed, settings, only, &mut out);
    super::hygiene::plan(observed, settings, only, &mut out);
    let dead: HashSet<String> = out
        .actions
        .iter()
        .filter(|a| matches!(a, Action::ReplaceNode { .. } | Action::MarkDegraded { .. }))
        .map(|a| a.cluster_id().to_string())
        .collect();
    health::plan_checks(observed, settings, only, &dead, &mut out);
    for what in &observed.health.unavailable {
        out.findings.push(Finding {
            cluster_id: String::new(),
            what: format!("not observed this run: {what}"),
        });
    }
    out
}

/// Dead nodes of a serving cluster: one replacement at a time, within the safety limits.
fn plan_health(
    record: &ClusterRecord,
    observed: &Observed,
    instances: &HashMap<&str, &TaggedInstance>,
    settings: &Settings,
    repairs: &mut usize,
    out: &mut Plan,
) {
    let nodes: Vec<_> = record
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Terminated)
        .collect();
    let dead: Vec<(&crate::record::Node, String)> = nodes
        .iter()
        .filter_map(|n| {
            let instance = instances.get(n.instance_id.as_str()).copied();
            dead_reason(instance)
                .or_else(|| health::sick_reason(observed, settings, record, n, instance?))
                .map(|r| (*n, r))
        })
        .collect();
    if dead.is_empty() {
        return;
    }
    out.unhealthy_nodes += dead.len();
    let ids: Vec<String> = dead.iter().map(|(n, _)| n.instance_id.clone()).collect();
    let why = dead
        .iter()
        .map(|(n, r)| format!("{} {} ({}): {r}", n.role.as_str(), n.index, n.instance_id))
        .collect::<Vec<_>>()
        .join("; ");
    let share = dead.len() * 100 / nodes.len().max(1);
    let degrade = |reason: String, out: &mut Plan| {
        out.actions.push(Action::MarkDegraded {
            cluster_id: record.id.clone(),
            nodes: ids.clone(),
            reason,
        })
    };
    if share > settings.max_unhealthy_percent as usize {
        let what = format!(
            "{} of {} node(s) look dead ({share}% > {}%): not remediated, reported: {why}",
            dead.len(),
            nodes.len(),
            settings.max_unhealthy_percent
        );
        out.findings.push(Finding {
            cluster_id: record.id.clone(),
            what: what.clone(),
        });
        degrade(what, out);
        return;
    }
    // Control planes first: a cluster without quorum helps no worker.
    let (node, reason) = dead
        .iter()
        .min_by_key(|(n, _)| (n.role, n.index))
        .expect("not empty");
    if node.role == Role::ControlPlane && record.spec.control_planes < 3 {
        let what = format!(
            "the only control plane is dead ({reason}): its datastore went with it; restore or recreate the cluster"
        );
        out.findings.push(Finding {
            cluster_id: record.id.clone(),
            what: what.clone(),
        });
        degrade(what, out);
        return;
    }
    if *repairs >= settings.max_repairs_per_run {
        let what = format!(
            "{why}; not replaced this run: the fleet-wide limit of {} replacement(s) per run is reached",
            settings.max_repairs_per_run
        );
        out.findings.push(Finding {
            cluster_id: record.id.clone(),
            what: what.clone(),
        });
        degrade(what, out);
        return;
    }
    *repairs += 1;
    out.actions.push(Action::ReplaceNode {
        cluster_id: record.id.clone(),
        instance_id: node.instance_id.clone(),
        role: node.role,
        index: node.index,
        reason: reason.clone(),
    });
}

/// A record in a running status whose execution has ended without moving it on.
fn plan_stuck(record: &ClusterRecord, observed: &Observed, settings: &Settings, out: &mut Plan) {
    if !settled(record, observed.now, settings.grace_seconds) {
        return;
    }
    let ended = |arn: Option<&String>| match arn {
        Some(arn) => observed
            .executions
            .get(arn)
            .is_none_or(|s| *s != ExecutionStatus::Running),
        None => true,
    };
    let action = match record.status {
        Status::Creating if ended(record.execution_arn.as_ref()) => Action::FailStuckCreate {
            cluster_id: record.id.clone(),
            teardown: !record.spec.retain_on_failure,
        },
        Status::Updating => {
            let running = record
                .updates
                .iter()
                .rev()
                .find(|u| u.status == crate::record::UpdateStatus::InProgress);
            if !ended(running.and_then(|u| u.execution_arn.as_ref())) {
                return;
            }
            Action::FailStuckUpdate {
                cluster_id: record.id.clone(),
            }
        }
        Status::Deleting if ended(record.delete_execution_arn.as_ref()) => Action::ResumeDelete {
            cluster_id: record.id.clone(),
        },
        _ => return,
    };
    out.actions.push(action);
}

/// Instances of no live record, older than the grace.
fn plan_orphans(observed: &Observed, settings: &Settings, only: Option<&str>, out: &mut Plan) {
    let live: HashSet<&str> = observed.records.iter().map(|r| r.id.as_str()).collect();
    for t in &observed.instances {
        if live.contains(t.cluster_id.as_str())
            || t.instance.state.is_gone()
            || only.is_some_and(|id| id != t.cluster_id)
        {
            continue;
        }
        let age = t.launched_at.map(|l| observed.now - l);
        if age.is_none_or(|a| a < settings.orphan_grace_seconds) {
            continue;
        }
        if settings.orphans_report_only {
            out.findings.push(Finding {
                cluster_id: t.cluster_id.clone(),
                what: format!(
                    "orphan instance {} in {} (no live cluster record); report-only",
                    t.instance.instance_id, t.region
                ),
            });
            continue;
        }
        out.actions.push(Action::TerminateOrphan {
            region: t.region.clone(),
            instance_id: t.instance.instance_id.clone(),
            cluster_id: t.cluster_id.clone(),
        });
    }
}
