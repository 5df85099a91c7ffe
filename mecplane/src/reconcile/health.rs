//! Sick nodes, not only gone ones: what the reconcile observes of a serving (ACTIVE/DEGRADED)
//! cluster's running nodes beyond their EC2 state, and how the plan reads it (issue 13).
//!
//! Three checks, each asked only about the running instances of serving records:
//! - **EC2 status checks** (`DescribeInstanceStatus` over the region's running instances, pages of
//!   1,000, kept to the nodes): a system or instance check `impaired`.
//! - **SSM agent ping** (`DescribeInstanceInformation` filtered to the agents not `Online`: its
//!   calls grow with the lost agents, not the fleet): an agent `ConnectionLost` or `Inactive`. An
//!   instance SSM never knew is not seen here (the create waits for every agent online).
//! - **Kubernetes Ready, sampled**: one run sends the verify script to one member control plane
//!   of a cluster due for a check ([`Action::CheckNodes`]: one `SendCommand`, read-only on the
//!   node) and remembers the command in the record ([`crate::record::NodeCheck`]); the next run
//!   reads its answer (one `GetCommandInvocation`) and closes the check ([`Action::CloseNodeCheck`]).
//!   A cluster is due `health_interval_seconds` after its last check (never sampled: after its
//!   creation, whose verify checked every node); each run samples at most
//!   `ceil(serving clusters × schedule / interval) + 2` clusters, the longest unchecked first, so
//!   the command volume stays flat as the fleet grows.
//!
//! "Past the grace" is measured from the time each source reports, never from a clock the
//! reconcile keeps: EC2's `ImpairedSince`, the agent's `LastPingDateTime` (its instance's launch
//! when SSM gives none), the Ready condition's `lastTransitionTime` (the command's sending
//! when Kubernetes did not say). A source that gives no time never makes a node dead. A node
//! NotReady within the grace leaves its cluster due again, so the next run asks once more.
//!
//! The plan stays pure: [`observe`] gathers [`HealthSeen`]; [`sick_reason`] and [`plan_checks`]
//! decide.

use std::collections::{HashMap, HashSet};

use crate::error::CloudError;
use crate::ports::ClusterStore;
use crate::ports::{AgentPing, CommandStatus, InstanceState, StatusCheck, TaggedInstance};
use crate::record::{ClusterRecord, Node, NodeState, PendingCheck, Role};
use crate::scripts::{self, NodeReport, Script};
use crate::stages::records;

use super::plan::{Action, Finding, Observed, Plan, Settings};
use super::PortsIn;

/// How long a sampled check may stay unanswered before a run gives up on it (SSM's delivery
/// timeout, 600 s, plus the script's own 120 s, plus slack).
pub const CHECK_ANSWER_SECONDS: i64 = 900;
/// The script's execution timeout.
pub const CHECK_TIMEOUT_SECONDS: u32 = 120;
/// Clusters sampled per run beyond the fleet's share (a check that failed, a NotReady node
/// within the grace).
pub const EXTRA_CHECKS_PER_RUN: usize = 2;

/// What one run saw of the nodes' health.
#[derive(Debug, Clone, Default)]
pub struct HealthSeen {
    /// Impaired status checks, by instance id (instances not here passed or were not asked).
    pub impaired: HashMap<String, StatusCheck>,
    /// The agents that are not `Online`, by instance id (the others are online, or unknown to
    /// SSM: a node never registered is caught by the create, not here).
    pub lost_agents: HashMap<String, AgentPing>,
    /// The answer of each record's pending node check, by cluster id.
    pub answers: HashMap<String, CommandStatus>,
    /// Calls that failed (that check is skipped this run; reported).
    pub unavailable: Vec<String>,
}

/// Whether a record's nodes are checked at all: it is serving.
fn serving(record: &ClusterRecord) -> bool {
    record.status.is_serving()
}

/// The recorded nodes (not terminated) of a serving record whose instances run, by region.
fn running_nodes<'a>(
    records: &'a [ClusterRecord],
    by_id: &HashMap<&str, &TaggedInstance>,
) -> Vec<(&'a str, &'a Node)> {
    records
        .iter()
        .filter(|r| serving(r))
        .flat_map(|r| r.nodes.iter().map(move |n| (r.spec.region.as_str(), n)))
        .filter(|(_, n)| n.state != NodeState::Terminated)
        .filter(|(_, n)| {
            by_id
                .get(n.instance_id.as_str())
                .is_some_and(|t| t.instance.state == InstanceState::Running)
        })
        .collect()
}

/// Observes the status checks and agents of the running nodes of serving records, region by
/// region, and the answers of the pending node checks. A failing call is reported, not fatal.
pub async fn observe(
    ports_in: &PortsIn<'_>,
    records: &[ClusterRecord],
    instances: &[TaggedInstance],
) -> HealthSeen {
    let mut seen = HealthSeen::default();
    let by_id: HashMap<&str, &TaggedInstance> = instances
        .iter()
        .map(|t| (t.instance.instance_id.as_str(), t))
        .collect();
    let mut by_region: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (region, node) in running_nodes(records, &by_id) {
        by_region
            .entry(region)
            .or_default()
            .push(node.instance_id.clone());
    }
    for (region, ids) in &by_region {
        let ports = ports_in(region);
        match ports.ec2.impaired(ids).await {
            Ok(found) => seen
                .impaired
                .extend(found.into_iter().map(|c| (c.instance_id.clone(), c))),
            Err(e) => seen
                .unavailable
                .push(format!("EC2 status checks in {region}: {e}")),
        }
        match ports.ssm.lost_agents(ids).await {
            Ok(found) => seen
                .lost_agents
                .extend(found.into_iter().map(|p| (p.instance_id.clone(), p))),
            Err(e) => seen
                .unavailable
                .push(format!("SSM agent pings in {region}: {e}")),
        }
    }
    for record in records {
        let Some(pending) = &record.node_check.pending else {
            continue;
        };
        match ports_in(&record.spec.region)
            .ssm
            .status(&pending.command_id, &pending.instance_id)
            .await
        {
            Ok(status) => {
                seen.answers.insert(record.id.clone(), status);
            }
            // Unknown to SSM (expired, or never delivered): the plan closes the check.
            Err(CloudError::NotFound(_)) => {}
            Err(e) => seen.unavailable.push(format!(
                "the node check of {} ({}): {e}",
                record.id, pending.command_id
            )),
        }
    }
    seen
}

/// RFC 3339 of epoch seconds, for reasons a person reads.
fn when(epoch: i64) -> String {
    crate::clock::rfc3339_of(epoch)
}

/// Why a running node of a serving record counts as dead from its health, if it does: an
/// impaired status check, a lost agent, or NotReady in the node check read this run, each past
/// the grace measured from the time its source reports.
pub fn sick_reason(
    observed: &Observed,
    settings: &Settings,
    record: &ClusterRecord,
    node: &Node,
    instance: &TaggedInstance,
) -> Option<String> {
    let (now, grace) = (observed.now, settings.grace_seconds);
    let past = |since: i64| now - since >= grace;
    let health = &observed.health;
    if let Some(check) = health.impaired.get(&node.instance_id) {
        if let Some(since) = check.impaired_since.filter(|s| past(*s)) {
            return Some(format!(
                "status check impaired ({}) since {}",
                check.impaired.join(", "),
                when(since)
            ));
        }
    }
    if let Some(p) = health.lost_agents.get(&node.instance_id) {
        // SSM gives no last ping: count from the launch.
        if let Some(since) = p.last_ping.or(instance.launched_at).filter(|s| past(*s)) {
            return Some(format!(
                "SSM agent {} since {} (its last ping)",
                p.status,
                when(since)
            ));
        }
    }
    let (sent_at, report) = not_ready(record, node, health)?;
    let since = report.since.unwrap_or(sent_at);
    past(since).then(|| {
        format!(
            "Kubernetes node {} NotReady since {}",
            report.hostname,
            when(since)
        )
    })
}

/// The node's NotReady report in the record's node check answered this run, with when the check
/// was sent.
fn not_ready(
    record: &ClusterRecord,
    node: &Node,
    health: &HealthSeen,
) -> Option<(i64, NodeReport)> {
    let pending = record.node_check.pending.as_ref()?;
    let CommandStatus::Success { stdout } = health.answers.get(&record.id)? else {
        return None;
    };
    let ip = node.private_ip.as_deref()?;
    scripts::nodes_of(stdout)
        .into_iter()
        .find(|r| r.internal_ip == ip && !r.ready)
        .map(|r| (pending.sent_at, r))
}

/// The node checks of one run: pending ones answered (or given up on) are closed; clusters due
/// are sampled, the longest unchecked first, within the run's budget. `dead` holds the clusters
/// the run already found a dead node in (not sampled: they are being dealt with).
pub fn plan_checks(
    observed: &Observed,
    settings: &Settings,
    only: Option<&str>,
    dead: &HashSet<String>,
    out: &mut Plan,
) {
    let now = observed.now;
    let by_id: HashMap<&str, &TaggedInstance> = observed
        .instances
        .iter()
        .map(|t| (t.instance.instance_id.as_str(), t))
        .collect();
    let serving_count = observed.records.iter().filter(|r| serving(r)).count();
    let mut due: Vec<(i64, &ClusterRecord)> = Vec::new();
    for record in &observed.records {
        if only.is_some_and(|id| id != record.id) {
            continue;
        }
        if let Some(pending) = &record.node_check.pending {
            if let Some(close) = plan_close(observed, settings, record, pending) {
                out.actions.push(close);
            }
            continue;
        }
        if !serving(record) || dead.contains(&record.id) {
            continue;
        }
        let last = record
            .node_check
            .checked_at
            .or_else(|| crate::clock::epoch_of(&record.created_at))
            .unwrap_or(0);
        if now - last >= settings.health_interval_seconds {
            due.push((last, record));
        }
    }
    due.sort_by(|(a, x), (b, y)| (a, &x.id).cmp(&(b, &y.id)));
    let budget = check_budget(serving_count, settings);
    let mut sent = 0;
    for (_, record) in due {
        if sent >= budget {
            break;
        }
        let Some(anchor) = anchor(record, &by_id, &observed.health) else {
            out.findings.push(Finding {
                cluster_id: record.id.clone(),
                what: "node check due, but no control plane is running with its agent online"
                    .into(),
            });
            continue;
        };
        sent += 1;
        out.actions.push(Action::CheckNodes {
            cluster_id: record.id.clone(),
            region: record.spec.region.clone(),
            instance_id: anchor.instance_id.clone(),
            expected_nodes: record.spec.control_planes + record.spec.workers,
        });
    }
}

/// At most this many clusters are sampled in one run: the fleet's share of the interval, plus a
/// small constant.
pub fn check_budget(serving: usize, settings: &Settings) -> usize {
    let interval = settings.health_interval_seconds.max(1) as u128;
    let schedule = settings.schedule_seconds.max(0) as u128;
    ((serving as u128 * schedule).div_ceil(interval)) as usize + EXTRA_CHECKS_PER_RUN
}

/// The control plane a node check asks: the running member control plane with the lowest index
/// whose agent is online (as the update stages' anchor: a member, lowest index).
fn anchor<'a>(
    record: &'a ClusterRecord,
    by_id: &HashMap<&str, &TaggedInstance>,
    health: &HealthSeen,
) -> Option<&'a Node> {
    record
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane && n.state != NodeState::Terminated)
        .filter(|n| {
            by_id
                .get(n.instance_id.as_str())
                .is_some_and(|t| t.instance.state == InstanceState::Running)
        })
        .filter(|n| !health.lost_agents.contains_key(&n.instance_id))
        .min_by_key(|n| n.index)
}

/// Whether and how a pending node check is closed this run: answered (its time becomes the last
/// check, unless a node was NotReady within the grace or the command failed: then the cluster
/// stays due), or unanswered for too long.
fn plan_close(
    observed: &Observed,
    settings: &Settings,
    record: &ClusterRecord,
    pending: &PendingCheck,
) -> Option<Action> {
    let close = |checked_at: Option<i64>, answer: String| Action::CloseNodeCheck {
        cluster_id: record.id.clone(),
        command_id: pending.command_id.clone(),
        checked_at,
        answer,
    };
    let expired = observed.now - pending.sent_at >= CHECK_ANSWER_SECONDS;
    match observed.health.answers.get(&record.id) {
        // Not finished, not visible to SSM yet, or its read failed: a later run, unless too late.
        None | Some(CommandStatus::Running) => {
            expired.then(|| close(None, format!("no answer after {CHECK_ANSWER_SECONDS}s")))
        }
        Some(CommandStatus::Success { stdout }) => {
            let reports = scripts::nodes_of(stdout);
            let not_ready: Vec<&NodeReport> = reports.iter().filter(|r| !r.ready).collect();
            let within_grace = not_ready.iter().any(|r| {
                observed.now - r.since.unwrap_or(pending.sent_at) < settings.grace_seconds
            });
            let answer = format!(
                "{} of {} node(s) Ready",
                reports.len() - not_ready.len(),
                reports.len()
            );
            Some(close((!within_grace).then_some(pending.sent_at), answer))
        }
        Some(CommandStatus::Failed { status, stderr, .. }) => Some(close(
            None,
            format!("failed ({status}): {}", scripts::tail(stderr, 2)),
        )),
        Some(CommandStatus::TimedOut) => Some(close(None, "timed out".into())),
    }
}

/// Sends a node check to `instance_id` and remembers it in the record, unless the record
/// already has one pending (an overlapping run's: this command, read-only, is then left unread)
/// or stopped serving. Never an error: the answer says how it went.
pub(crate) async fn send_check<S: ClusterStore>(
    store: &S,
    ports_in: &PortsIn<'_>,
    cluster_id: &str,
    region: &str,
    instance_id: &str,
    expected_nodes: u32,
) -> String {
    let now = crate::clock::now_epoch();
    let script = Script::Verify.render(&[("EXPECTED_NODES", &expected_nodes.to_string())]);
    let comment = crate::resources::command_key(cluster_id, "node-check", now);
    let command_id = match ports_in(region)
        .ssm
        .send(instance_id, &script, &comment, CHECK_TIMEOUT_SECONDS)
        .await
    {
        Ok(id) => id,
        Err(e) => return format!("failed: {e}"),
    };
    let pending = PendingCheck {
        command_id: command_id.clone(),
        instance_id: instance_id.to_string(),
        sent_at: now,
    };
    let remembered = records::modify(store, cluster_id, |r| {
        let free = r.status.is_serving() && r.node_check.pending.is_none();
        if free {
            r.node_check.pending = Some(pending.clone());
        }
        Ok(free)
    })
    .await;
    match remembered {
        Ok(r) if r.node_check.pending.as_ref() == Some(&pending) => {
            format!("done: node check {command_id} sent to {instance_id}")
        }
        Ok(_) => format!("skipped: another check is pending ({command_id} left unread)"),
        Err(e) => format!("failed: {command_id} sent, not recorded: {e}"),
    }
}

/// Forgets the record's pending node check `command_id` (if it is still the pending one) and
/// records when the cluster was last checked.
pub(crate) async fn close_check<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
    command_id: &str,
    checked_at: Option<i64>,
) -> String {
    let mut closed = false;
    let written = records::modify(store, cluster_id, |r| {
        closed = r
            .node_check
            .pending
            .as_ref()
            .is_some_and(|p| p.command_id == command_id);
        if closed {
            r.node_check.pending = None;
            if checked_at.is_some() {
                r.node_check.checked_at = checked_at;
            }
        }
        Ok(closed)
    })
    .await;
    match written {
        Ok(_) if closed => "done: node check closed".into(),
        Ok(_) => "skipped: already closed".into(),
        Err(e) => format!("failed: {e}"),
    }
}
