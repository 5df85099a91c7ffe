//! `POST /reconcile`: a fleet reconcile on demand ([`crate::reconcile::run`]).
//!
//! A run that acts (no `dry_run`) changes clusters of every principal: it runs only for a
//! principal the deployment names (`ReconcilePrincipals`, [`crate::spec::Policy::reconcile_principals`],
//! compared as [`principal::listed`] does: a role by its sessions); anyone else gets
//! `403 NotAllowed`. A dry run only reports, and anyone may ask for it. With `OwnClustersOnly` the
//! report shows the caller's own clusters only ([`visible_to`]): no other cluster's id, instance
//! ids or names, no orphan (an orphan has no owner).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ports::{ClusterStore, Executions, ListFilter, Parameters};
use crate::reconcile::{Action, Fleet, Report};
use crate::record::{NodeState, Status};

use super::{body, principal, ApiContext, ApiError, ApiRequest, ApiResponse};

/// The most pages (of 100) read to find the caller's clusters.
const OWN_PAGES: usize = 50;

/// Answers `POST /reconcile`.
pub async fn post<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    fleet: Option<&Fleet<'_>>,
) -> Result<ApiResponse, ApiError> {
    let asked = body::decode_reconcile(&req.body)?;
    if !asked.dry_run {
        may_act(
            &ctx.config.policy.reconcile_principals,
            req.caller.as_deref(),
        )?;
    }
    let fleet = fleet
        .ok_or_else(|| ApiError::unavailable("this API has no fleet access to reconcile with"))?;
    let event = crate::reconcile::ReconcileEvent {
        source: Some("mecplane.api".into()),
        dry_run: asked.dry_run,
        ..Default::default()
    };
    let report = crate::reconcile::run(ctx, fleet, &event).await?;
    if !ctx.config.policy.own_clusters_only {
        return Ok(ApiResponse::json(200, &report));
    }
    let own = own_clusters(&ctx.store, req.caller.as_deref()).await?;
    Ok(ApiResponse::json(200, &visible_to(report, &own)))
}

/// `403 NotAllowed` unless the caller is one of the deployment's reconcile principals.
pub fn may_act(principals: &[String], caller: Option<&str>) -> Result<(), ApiError> {
    if caller.is_some_and(|c| principal::listed(principals, c)) {
        return Ok(());
    }
    let who = caller
        .map(|c| principal::of(c).arn)
        .unwrap_or_else(|| "an unsigned caller".into());
    let why = if principals.is_empty() {
        "this deployment lets no principal run a reconcile that acts through the API \
         (ReconcilePrincipals is empty; the schedule runs it)"
            .to_string()
    } else {
        format!("{who} is not one of this deployment's ReconcilePrincipals")
    };
    Err(ApiError::not_allowed(format!(
        "{why}; send {{\"dry_run\": true}} to see what a run would do"
    )))
}

/// What the report may say of one of the caller's clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    pub status: Status,
    pub region: String,
    /// Its recorded nodes not terminated.
    pub nodes: usize,
}

/// The caller's clusters that are not `DELETED`, by id (none for an unsigned caller).
async fn own_clusters<S: ClusterStore>(
    store: &S,
    caller: Option<&str>,
) -> Result<BTreeMap<String, Own>, ApiError> {
    let mut own = BTreeMap::new();
    let Some(caller) = caller else {
        return Ok(own);
    };
    let mut token: Option<String> = None;
    for _ in 0..OWN_PAGES {
        let page = store
            .list(&ListFilter::default(), token.as_deref(), 100)
            .await?;
        for r in page.records {
            let mine = r
                .created_by
                .as_deref()
                .is_some_and(|by| principal::same_owner(by, caller));
            if mine && r.status.is_live() {
                let nodes = r
                    .nodes
                    .iter()
                    .filter(|n| n.state != NodeState::Terminated)
                    .count();
                own.insert(
                    r.id.clone(),
                    Own {
                        status: r.status,
                        region: r.spec.region.clone(),
                        nodes,
                    },
                );
            }
        }
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    Ok(own)
}

/// The report as one owner may see it: the actions, findings and outcomes of its own clusters;
/// `records`, `clusters_by_status`, `regions` and `instances` (recorded nodes) of those clusters;
/// `unhealthy_nodes`, the nodes its actions name as dead. Pure.
pub fn visible_to(mut report: Report, own: &BTreeMap<String, Own>) -> Report {
    let mine = |id: &str| own.contains_key(id);
    report.only = report.only.filter(|id| mine(id));
    report.plan.actions.retain(|a| mine(a.cluster_id()));
    report.plan.findings.retain(|f| mine(&f.cluster_id));
    report.outcomes.retain(|o| mine(o.action.cluster_id()));
    report.records = own.len();
    report.instances = own.values().map(|o| o.nodes).sum();
    report.regions = own
        .values()
        .map(|o| o.region.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for o in own.values() {
        *by_status.entry(o.status.as_str()).or_default() += 1;
    }
    report.plan.clusters_by_status = by_status
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let dead: BTreeSet<&str> = report
        .plan
        .actions
        .iter()
        .flat_map(|a| match a {
            Action::ReplaceNode { instance_id, .. } => vec![instance_id.as_str()],
            Action::MarkDegraded { nodes, .. } => nodes.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    report.plan.unhealthy_nodes = dead.len();
    report
}
