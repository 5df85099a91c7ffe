//! The reconcile's housekeeping, pure: what the project left behind and what drifted from what it
//! set. From one run's observations:
//!
//! - security groups with the project's cluster tag whose cluster has no live record, older than
//!   the orphan grace (by their `mecplane:created-at` tag: EC2 keeps no creation time for a group,
//!   so a group without the tag is only reported) and with no instance still in them: deleted;
//! - parameters under the project's root whose cluster has no live record, last written before the
//!   orphan grace: deleted;
//! - API load balancers and target groups (`api_endpoint: "nlb"`) with the project's cluster tag
//!   whose cluster has no record, a `DELETED` one or a `FAILED` one not retained, older than the
//!   orphan grace (a balancer by its `CreatedTime`, a lone target group by its
//!   `mecplane:created-at` tag; without one it is only reported): deleted by name, listener,
//!   balancer and target group, as the delete's stage does ([`delete_load_balancer::remove`]);
//! - the ingress rules of a serving cluster's group against
//!   [`desired_rules`](crate::stages::security_group::desired_rules): the missing ones authorized
//!   again, the ones nobody asked for revoked;
//! - the instances of a serving cluster missing the project's tags, or whose metadata service is
//!   not IMDSv2-only with hop limit 1: reported, never acted on.
//!
//! `orphans_report_only` turns every removal into a finding; a targeted run (`only`) looks at its
//! cluster alone. A fleet without drift plans nothing, so a run over it makes no mutating call.
//!
//! Beside the plan, its thin effects: the observation (one paged `DescribeSecurityGroups` per
//! region, paged `DescribeParameters` under the root: metadata, never values; per region the paged
//! `DescribeLoadBalancers` and `DescribeTargetGroups` and, for those named like a cluster's, one
//! `DescribeTags` per 20) and the actions,
//! each re-checking the record first and idempotent (a group or parameter already gone is not an
//! error; a group still in use is left for a later run).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::api::ApiContext;
use crate::error::CloudError;
use crate::ports::{
    BalancingPart, ClusterStore, IngressRule, LoadBalancers, MetadataOptions, ParameterInfo,
    Parameters, TaggedBalancing, TaggedGroup, TaggedInstance,
};
use crate::record::{ClusterRecord, Event, Phase, Status};
use crate::resources::{self, Deployment};
use crate::stages::security_group::{desired_rules, extra_rules, missing_rules};
use crate::stages::{delete_load_balancer, records};

use super::plan::{Action, Finding, Observed, Plan, Settings};
use super::{FleetEc2, PortsIn, STAGE};

/// The project's tags every node carries besides the cluster tag (the one it is found by).
const NODE_TAGS: [&str; 3] = [
    resources::TAG_CLUSTER_NAME,
    resources::TAG_ROLE,
    resources::TAG_INDEX,
];

/// Plans the housekeeping of one run into `out`.
pub fn plan(observed: &Observed, settings: &Settings, only: Option<&str>, out: &mut Plan) {
    let live: HashSet<&str> = observed.records.iter().map(|r| r.id.as_str()).collect();
    let wanted = |cluster_id: &str| only.is_none_or(|id| id == cluster_id);
    orphan_groups(observed, settings, &live, &wanted, out);
    orphan_parameters(observed, settings, &live, &wanted, out);
    orphan_balancing(observed, settings, &wanted, out);
    // By cluster, once: each record then looks at its own (linear in the fleet, not quadratic).
    let mut groups: HashMap<&str, Vec<&TaggedGroup>> = HashMap::new();
    for g in &observed.groups {
        groups.entry(g.cluster_id.as_str()).or_default().push(g);
    }
    let mut instances: HashMap<&str, Vec<&TaggedInstance>> = HashMap::new();
    for t in &observed.instances {
        instances.entry(t.cluster_id.as_str()).or_default().push(t);
    }
    for record in observed
        .records
        .iter()
        .filter(|r| r.status.is_serving() && wanted(&r.id))
    {
        let id = record.id.as_str();
        group_drift(record, groups.get(id).map_or(&[], Vec::as_slice), out);
        instance_drift(record, instances.get(id).map_or(&[], Vec::as_slice), out);
    }
}

/// A removal, or its finding when orphans are report-only.
fn remove(settings: &Settings, action: Action, what: String, out: &mut Plan) {
    if settings.orphans_report_only {
        out.findings.push(Finding {
            cluster_id: action.cluster_id().to_string(),
            what: format!("{what}; report-only"),
        });
    } else {
        out.actions.push(action);
    }
}

fn orphan_groups(
    observed: &Observed,
    settings: &Settings,
    live: &HashSet<&str>,
    wanted: &dyn Fn(&str) -> bool,
    out: &mut Plan,
) {
    for g in &observed.groups {
        if live.contains(g.cluster_id.as_str()) || !wanted(&g.cluster_id) {
            continue;
        }
        let Some(created_at) = g.created_at else {
            out.findings.push(Finding {
                cluster_id: g.cluster_id.clone(),
                what: format!(
                    "orphan security group {} in {} (no live cluster record) carries no {} tag: its age is unknown, so it is not removed",
                    g.group_id,
                    g.region,
                    resources::TAG_CREATED_AT
                ),
            });
            continue;
        };
        if observed.now - created_at < settings.orphan_grace_seconds {
            continue;
        }
        // An instance still in it (its cluster's orphan instance goes first, the group on a later
        // run); EC2 would refuse the delete anyway.
        let in_use = observed.instances.iter().any(|t| {
            !t.instance.state.is_gone()
                && t.region == g.region
                && (t.cluster_id == g.cluster_id || t.security_groups.contains(&g.group_id))
        });
        if in_use {
            continue;
        }
        remove(
            settings,
            Action::DeleteOrphanGroup {
                region: g.region.clone(),
                group_id: g.group_id.clone(),
                cluster_id: g.cluster_id.clone(),
            },
            format!(
                "orphan security group {} in {} (no live cluster record)",
                g.group_id, g.region
            ),
            out,
        );
    }
}

fn orphan_parameters(
    observed: &Observed,
    settings: &Settings,
    live: &HashSet<&str>,
    wanted: &dyn Fn(&str) -> bool,
    out: &mut Plan,
) {
    let mut by_cluster: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &observed.parameters {
        let Some(cluster_id) = settings.deployment.cluster_of_parameter(&p.name) else {
            continue;
        };
        if live.contains(cluster_id) || !wanted(cluster_id) {
            continue;
        }
        // Without a last write the age is unknown: left alone.
        if p.last_modified
            .is_none_or(|t| observed.now - t < settings.orphan_grace_seconds)
        {
            continue;
        }
        by_cluster
            .entry(cluster_id)
            .or_default()
            .push(p.name.clone());
    }
    for (cluster_id, names) in by_cluster {
        let what = format!(
            "orphan parameter(s) {} (no live cluster record)",
            names.join(", ")
        );
        remove(
            settings,
            Action::DeleteOrphanParameters {
                cluster_id: cluster_id.to_string(),
                names,
            },
            what,
            out,
        );
    }
}

/// Whether a cluster's API load balancer is an orphan given its record now: no record, a `DELETED`
/// one, or a `FAILED` one not retained (its teardown was to remove it).
pub fn balancer_orphaned(record: Option<&ClusterRecord>) -> bool {
    record.is_none_or(|r| {
        !r.status.is_live() || (r.status == Status::Failed && !r.spec.retain_on_failure)
    })
}

fn orphan_balancing(
    observed: &Observed,
    settings: &Settings,
    wanted: &dyn Fn(&str) -> bool,
    out: &mut Plan,
) {
    let records: HashMap<&str, &ClusterRecord> = observed
        .records
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    // By region and cluster: one removal each (the delete finds its parts by name).
    let mut by_cluster: BTreeMap<(&str, &str), Vec<&TaggedBalancing>> = BTreeMap::new();
    for b in &observed.balancing {
        if wanted(&b.cluster_id) && balancer_orphaned(records.get(b.cluster_id.as_str()).copied()) {
            by_cluster
                .entry((b.region.as_str(), b.cluster_id.as_str()))
                .or_default()
                .push(b);
        }
    }
    for ((region, cluster_id), mut parts) in by_cluster {
        parts.sort_by_key(|b| (b.part, b.arn.as_str()));
        let names: Vec<String> = parts
            .iter()
            .map(|b| format!("{} {}", b.part.as_str(), b.name))
            .collect();
        let what = format!(
            "orphan {} in {region} (no live cluster record)",
            names.join(" and ")
        );
        // The balancer's age when there is one (its target group is as old or older), else the
        // lone target group's.
        let age_of = parts
            .iter()
            .find(|b| b.part == BalancingPart::LoadBalancer)
            .unwrap_or(&parts[0]);
        let Some(created_at) = age_of.created_at else {
            out.findings.push(Finding {
                cluster_id: cluster_id.to_string(),
                what: format!(
                    "{what} carries no creation time ({} tag): its age is unknown, so it is not removed",
                    resources::TAG_CREATED_AT
                ),
            });
            continue;
        };
        if observed.now - created_at < settings.orphan_grace_seconds {
            continue;
        }
        remove(
            settings,
            Action::DeleteOrphanBalancer {
                region: region.to_string(),
                cluster_id: cluster_id.to_string(),
                parts: names,
            },
            what,
            out,
        );
    }
}

/// The serving cluster's group: the one its record names, else the one tagged for it, in its
/// region.
fn group_of<'a>(record: &ClusterRecord, groups: &[&'a TaggedGroup]) -> Option<&'a TaggedGroup> {
    let mine = || {
        groups
            .iter()
            .copied()
            .filter(|g| g.cluster_id == record.id && g.region == record.spec.region)
    };
    match &record.security_group_id {
        Some(id) => mine().find(|g| &g.group_id == id),
        None => mine().min_by(|a, b| a.group_id.cmp(&b.group_id)),
    }
}

/// `groups`: the cluster's own (by its tag).
fn group_drift(record: &ClusterRecord, groups: &[&TaggedGroup], out: &mut Plan) {
    let Some(group) = group_of(record, groups) else {
        out.findings.push(Finding {
            cluster_id: record.id.clone(),
            what: format!(
                "the cluster's security group {}is not found in {} with the cluster's tag",
                record
                    .security_group_id
                    .as_ref()
                    .map(|g| format!("{g} "))
                    .unwrap_or_default(),
                record.spec.region
            ),
        });
        return;
    };
    let desired = desired_rules(&record.spec);
    let (authorize, revoke) = (
        missing_rules(&desired, &group.ingress),
        extra_rules(&desired, &group.ingress),
    );
    if authorize.is_empty() && revoke.is_empty() {
        return;
    }
    out.actions.push(Action::RestoreGroupRules {
        cluster_id: record.id.clone(),
        region: group.region.clone(),
        group_id: group.group_id.clone(),
        authorize,
        revoke,
    });
}

/// `instances`: the cluster's own (by its tag).
fn instance_drift(record: &ClusterRecord, instances: &[&TaggedInstance], out: &mut Plan) {
    debug_assert!(matches!(record.status, Status::Active | Status::Degraded));
    for t in instances
        .iter()
        .filter(|t| t.cluster_id == record.id && !t.instance.state.is_gone())
    {
        let id = &t.instance.instance_id;
        let missing: Vec<&str> = NODE_TAGS
            .into_iter()
            .filter(|k| !t.tags.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            out.findings.push(Finding {
                cluster_id: record.id.clone(),
                what: format!(
                    "instance {id} lacks the tag(s) {}; reported, not changed",
                    missing.join(", ")
                ),
            });
        }
        if let Some(m) = t.metadata.filter(|m| *m != MetadataOptions::LAUNCH) {
            out.findings.push(Finding {
                cluster_id: record.id.clone(),
                what: format!(
                    "instance {id} metadata service: tokens {}, hop limit {} (launched IMDSv2-only with hop limit {}); reported, not changed",
                    if m.tokens_required { "required" } else { "optional" },
                    m.hop_limit.map(|h| h.to_string()).unwrap_or_else(|| "unknown".into()),
                    crate::ports::METADATA_HOP_LIMIT
                ),
            });
        }
    }
}

/// What the housekeeping looks at: the project's security groups, load balancers and target
/// groups in every region looked at, and its parameters (in the control plane's region, where the
/// stages write them).
pub(super) struct Seen {
    pub groups: Vec<TaggedGroup>,
    pub balancing: Vec<TaggedBalancing>,
    pub parameters: Vec<ParameterInfo>,
}

/// Observes what the housekeeping looks at.
pub(super) async fn observe<S, E, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    ports_in: &PortsIn<'_>,
    regions: &BTreeSet<String>,
    deployment: &Deployment,
) -> Result<Seen, CloudError> {
    let (mut groups, mut balancing) = (Vec::new(), Vec::new());
    for region in regions {
        let ports = ports_in(region);
        groups.extend(ports.ec2.find_tagged_groups(region).await?);
        balancing.extend(ports.balancers.find_tagged_balancing(region).await?);
    }
    let parameters = ctx
        .parameters
        .list_under(&deployment.parameter_root())
        .await?;
    Ok(Seen {
        groups,
        balancing,
        parameters,
    })
}

/// The cluster's record now (read again just before acting), if it has one; the outcome to
/// report instead when it cannot be read.
async fn record_now<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
) -> Result<Option<ClusterRecord>, String> {
    store
        .get(cluster_id)
        .await
        .map_err(|e| format!("failed: reading the record: {e}"))
}

/// The cluster's `DELETED` record, if any, when what the run found is still an orphan; the
/// outcome to report instead when the cluster has a live record by now (or it cannot be read).
async fn still_orphaned<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
) -> Result<Option<ClusterRecord>, String> {
    let record = record_now(store, cluster_id).await?;
    if record.as_ref().is_some_and(|r| r.status.is_live()) {
        return Err("skipped: the cluster has a live record".into());
    }
    Ok(record)
}

/// Notes an event on the cluster's record (best effort: the outcome is in the report anyway).
async fn note<S: ClusterStore>(store: &S, cluster_id: &str, phase: Phase, detail: String) {
    let event = Event::now(cluster_id, STAGE, phase, detail);
    if let Err(e) = store.append_event(&event).await {
        tracing::warn!(error = %e, "could not record the reconcile event");
    }
}

/// Deletes an orphan group, unless its cluster has a live record by now; an event on its
/// `DELETED` record, if it has one.
pub(super) async fn delete_orphan_group<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    ec2: &dyn FleetEc2,
    region: &str,
    group_id: &str,
    cluster_id: &str,
) -> String {
    let record = match still_orphaned(&ctx.store, cluster_id).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    match ec2.delete_group(group_id).await {
        Ok(()) => {
            tracing::warn!(
                cluster_id,
                group_id,
                region,
                "orphan security group deleted"
            );
            if record.is_some() {
                note(
                    &ctx.store,
                    cluster_id,
                    Phase::Finished,
                    format!("orphan security group {group_id} in {region} deleted"),
                )
                .await;
            }
            format!("done: deleted {group_id} in {region}")
        }
        Err(CloudError::DependencyViolation(m)) => format!("skipped: still in use: {m}"),
        Err(e) => format!("failed: {e}"),
    }
}

/// Deletes a cluster's orphan API load balancer (listener, balancer, target group), unless its
/// record by now says it is no orphan ([`balancer_orphaned`]); an event on its record, if it has
/// one. What is already gone is skipped, so a second run (or the delete's own stage) is harmless.
pub(super) async fn delete_orphan_balancer<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    balancers: &dyn LoadBalancers,
    deployment: &Deployment,
    region: &str,
    cluster_id: &str,
) -> String {
    let record = match record_now(&ctx.store, cluster_id).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    if !balancer_orphaned(record.as_ref()) {
        return "skipped: the cluster has a live record".into();
    }
    match delete_load_balancer::remove(balancers, deployment, cluster_id).await {
        Ok(deleted) if deleted.is_empty() => "skipped: already gone".into(),
        Ok(deleted) => {
            let list = deleted.join(" and ");
            tracing::warn!(cluster_id, region, deleted = %list, "orphan load balancer deleted");
            if let Some(record) = &record {
                // A FAILED record lets go of what is gone, as the delete's stage does (a
                // DELETED one was let go by its delete, and stays as its delete left it).
                if record.status == Status::Failed {
                    let forget = records::modify(&ctx.store, cluster_id, |r| {
                        Ok(r.balancer.take().is_some())
                    });
                    if let Err(e) = forget.await {
                        tracing::warn!(cluster_id, error = %e, "could not clear the record's balancer");
                    }
                }
                note(
                    &ctx.store,
                    cluster_id,
                    Phase::Finished,
                    format!("orphan {list} in {region} deleted"),
                )
                .await;
            }
            format!("done: deleted {list} in {region}")
        }
        Err(e) => format!("failed: {e}"),
    }
}

/// Deletes a cluster's orphan parameters, unless it has a live record by now.
pub(super) async fn delete_orphan_parameters<S: ClusterStore, E, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    cluster_id: &str,
    names: &[String],
) -> String {
    let record = match still_orphaned(&ctx.store, cluster_id).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    match ctx.parameters.delete(names).await {
        Ok(()) => {
            let list = names.join(", ");
            tracing::warn!(cluster_id, parameters = %list, "orphan parameters deleted");
            if record.is_some() {
                note(
                    &ctx.store,
                    cluster_id,
                    Phase::Finished,
                    format!("orphan parameter(s) {list} deleted"),
                )
                .await;
            }
            format!("done: deleted {list}")
        }
        Err(e) => format!("failed: {e}"),
    }
}

/// `tcp 16443 from 203.0.113.0/24`, `udp 4789 from the group`.
fn describe(rule: &IngressRule) -> String {
    let ports = if rule.from_port == rule.to_port {
        rule.from_port.to_string()
    } else {
        format!("{}-{}", rule.from_port, rule.to_port)
    };
    let from = match &rule.source {
        crate::ports::IngressSource::SameGroup => "the group".to_string(),
        crate::ports::IngressSource::Cidr(c) => c.clone(),
    };
    format!("{} {ports} from {from}", rule.protocol)
}

/// Puts a serving cluster's group back to the rules its spec asks for: authorizes `authorize`,
/// revokes `revoke` — if the record still serves with a spec that wants exactly that (a change
/// that came in since the run looked is left to its own execution).
pub(super) async fn restore_rules<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    ec2: &dyn FleetEc2,
    cluster_id: &str,
    group_id: &str,
    authorize: &[IngressRule],
    revoke: &[IngressRule],
) -> String {
    let record = match record_now(&ctx.store, cluster_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return "skipped: the record is gone".into(),
        Err(e) => return e,
    };
    if !record.status.is_serving() {
        return format!("skipped: the cluster is {}", record.status);
    }
    let desired = desired_rules(&record.spec);
    let wanted = |r: &IngressRule| desired.iter().any(|d| d.same_as(r));
    if !authorize.iter().all(wanted) || revoke.iter().any(wanted) {
        return "skipped: the cluster's spec changed since the run looked".into();
    }
    if !authorize.is_empty() {
        if let Err(e) = ec2.authorize(group_id, authorize).await {
            return format!("failed: authorizing: {e}");
        }
    }
    if !revoke.is_empty() {
        if let Err(e) = ec2.revoke(group_id, revoke).await {
            return format!("failed: revoking: {e}");
        }
    }
    let list = |rules: &[IngressRule]| rules.iter().map(describe).collect::<Vec<_>>().join(", ");
    let mut done = Vec::new();
    if !authorize.is_empty() {
        done.push(format!("authorized the missing {}", list(authorize)));
    }
    if !revoke.is_empty() {
        done.push(format!("revoked the undesired {}", list(revoke)));
    }
    let detail = format!("security group {group_id} drifted: {}", done.join("; "));
    tracing::warn!(cluster_id, group_id, %detail, "security group rules restored");
    note(&ctx.store, cluster_id, Phase::Progress, detail.clone()).await;
    format!("done: {detail}")
}
