//! Changes to a live cluster: `PATCH /clusters/{id}` and the history of changes at
//! `GET /clusters/{id}/updates`.
//!
//! A PATCH names what it wants (`{"workers": 4}`); the API records the change as an [`Update`]
//! (`InProgress`), moves the record to `UPDATING` and starts the update execution
//! (`<cluster id>-update-<update id>`), whose last stage sets the spec, marks the update
//! `Successful` or `Failed` and moves the record back to `ACTIVE`. The API never changes the spec
//! itself.
//!
//! - One change at a time: a PATCH unless the cluster is `ACTIVE` (or `DEGRADED`) is
//!   `409 ClusterBusy`; a PATCH changing two fields at once is a 422 naming the second.
//! - Optimistic concurrency: every answer carrying one record has `ETag: "<version>"`; an
//!   `If-Match` naming another version is `412 PreconditionFailed`. Without `If-Match`, two
//!   PATCHes racing on one record make one update: the second finds the record `UPDATING` (409).
//! - A PATCH that changes nothing is `200` with the record; one that changes something is `202`
//!   with the record and `Location: /clusters/{id}/updates/{update id}`.
//! - `workers` scales; `microk8s_channel` upgrades one minor up (a skip or a downgrade is a 422);
//!   `addons` is the whole list wanted, validated as on create (what differs is disabled and
//!   enabled); `exposed_ports` is the whole list wanted, validated as on create (the security
//!   group gains the new rules and loses the old). The [`Change`] decided here is what the update records and its stages run.
//! - If StartExecution fails, the record goes back to `ACTIVE` with the update `Failed`, and the
//!   answer is `503`. An update whose execution ended without recording a result (stopped from
//!   the console, say) is marked `Failed` the same way by the next PATCH or DELETE.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::change::Change;
use crate::error::CloudError;
use crate::microk8s;
use crate::ports::{ClusterStore, ExecutionStatus, Executions, Parameters};
use crate::record::{
    ClusterRecord, Failure, Phase, Role, Status, Update, UpdateStatus, MAX_UPDATES_KEPT,
};
use crate::resources;
use crate::spec::{
    same_exposed_ports, validate_addons, validate_exposed_ports, ClusterSpec, ExposedPort, Policy,
    MAX_WORKERS,
};

use super::clusters::{find, modify, note, status_name, STAGE, START_FAILED};
use super::errors::{codes, ApiError};
use super::{body, ApiContext, ApiRequest, ApiResponse};

/// The failure `reason` (its start) of an update whose execution could not be started.
pub const UPDATE_NOT_STARTED_REASON: &str = "the update execution could not be started";
/// The failure `error` of an update whose execution ended without recording a result.
pub const UPDATE_INTERRUPTED: &str = "UpdateInterrupted";
/// How long an `InProgress` update whose execution Step Functions does not know is left alone:
/// the PATCH that recorded it may still be about to start it.
const START_GRACE_SECONDS: i64 = 300;
/// How often a PATCH re-reads and decides again when its conditional write lost.
use super::clusters::WRITE_ATTEMPTS;

/// The most workers an upgrade may take out of service at once.
pub const MAX_UNAVAILABLE: u32 = 10;

/// The body of `PATCH /clusters/{id}`: the fields of the spec a live cluster may change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    pub workers: Option<u32>,
    pub microk8s_channel: Option<String>,
    /// With a `microk8s_channel` change: how many workers may be out of service at once (1–10,
    /// default 1); control planes always go one at a time.
    pub max_unavailable: Option<u32>,
    pub addons: Option<Vec<String>>,
    /// The whole list of workload ports wanted open, each as on create.
    pub exposed_ports: Option<Vec<ExposedPort>>,
}

impl ClusterPatch {
    /// Every field a PATCH may carry.
    pub const FIELDS: &'static [&'static str] = &[
        "workers",
        "microk8s_channel",
        "max_unavailable",
        "addons",
        "exposed_ports",
    ];

    /// The checks that need no record (made before the table is asked anything).
    pub fn check(&self) -> Result<(), ApiError> {
        if self.workers.is_some_and(|w| w > MAX_WORKERS) {
            return Err(ApiError::invalid(
                "workers",
                format!("must be between 0 and {MAX_WORKERS}"),
            ));
        }
        match self.max_unavailable {
            Some(m) if !(1..=MAX_UNAVAILABLE).contains(&m) => Err(ApiError::invalid(
                "max_unavailable",
                format!("must be between 1 and {MAX_UNAVAILABLE}"),
            )),
            Some(_) if self.microk8s_channel.is_none() => Err(ApiError::invalid(
                "max_unavailable",
                "goes with a microk8s_channel change (how many workers an upgrade takes out of service at once)",
            )),
            _ => Ok(()),
        }
    }

    /// The change this patch asks of a cluster with `spec`: `None` when it asks for none, a 422
    /// naming the field when it asks for one that is out of bounds, or for two changes at once
    /// (one change at a time, as EKS updates go).
    pub fn change(&self, spec: &ClusterSpec, policy: &Policy) -> Result<Option<Change>, ApiError> {
        self.check()?;
        let mut changes: Vec<(&str, Change)> = Vec::new();
        if let Some(to) = self.workers.filter(|w| *w != spec.workers) {
            if spec.control_planes + to > policy.max_nodes {
                return Err(ApiError::invalid(
                    "workers",
                    format!(
                        "{} control plane(s) + {to} worker(s) is more than this deployment's limit of {} nodes per cluster",
                        spec.control_planes, policy.max_nodes
                    ),
                ));
            }
            changes.push((
                "workers",
                Change::Scale {
                    from: spec.workers,
                    to,
                },
            ));
        }
        if let Some(to) = self
            .microk8s_channel
            .as_ref()
            .filter(|c| **c != spec.microk8s_channel)
        {
            microk8s::check_upgrade(&spec.microk8s_channel, to)
                .map_err(|m| ApiError::invalid("microk8s_channel", m))?;
            changes.push((
                "microk8s_channel",
                Change::Upgrade {
                    from: spec.microk8s_channel.clone(),
                    to: to.clone(),
                    max_unavailable: self.max_unavailable.unwrap_or(1),
                },
            ));
        }
        if let Some(to) = &self.addons {
            validate_addons(to, spec.arch).map_err(ApiError::from)?;
            let (disable, enable) = microk8s::addon_changes(&spec.addons, to);
            if !disable.is_empty() || !enable.is_empty() {
                changes.push((
                    "addons",
                    Change::Addons {
                        from: spec.addons.clone(),
                        to: to.clone(),
                    },
                ));
            }
        }
        if let Some(to) = &self.exposed_ports {
            let to = validate_exposed_ports(to).map_err(ApiError::from)?;
            if !same_exposed_ports(&spec.exposed_ports, &to) {
                changes.push((
                    "exposed_ports",
                    Change::ExposedPorts {
                        from: spec.exposed_ports.clone(),
                        to,
                    },
                ));
            }
        }
        match changes.len() {
            0 => Ok(None),
            1 => Ok(changes.pop().map(|(_, c)| c)),
            _ => Err(ApiError::invalid(
                changes[1].0,
                format!(
                    "one change at a time: this PATCH changes both {} and {}; send them one after the other",
                    changes[0].0, changes[1].0
                ),
            )),
        }
    }
}

/// The update execution's input (what the update state machine's first stage reads).
#[derive(Serialize)]
struct UpdateExecutionInput<'a> {
    cluster_id: &'a str,
    update_id: &'a str,
    region: &'a str,
    /// The deployment's timing, as every create and delete gets it.
    timing: &'a crate::state::Timing,
}

/// The `ETag` of a record: its version, quoted.
pub fn etag(record: &ClusterRecord) -> String {
    format!("\"{}\"", record.version)
}

/// A JSON answer of one record, with its `ETag`.
pub fn record_answer(status: u16, record: &ClusterRecord) -> ApiResponse {
    ApiResponse::json(status, record).with_header("etag", etag(record))
}

/// `412` unless `If-Match` is absent, `*`, or names the record's version (`"7"`; a list of tags
/// matches if any does; a weak tag never matches, as RFC 9110 says for `If-Match`).
fn check_if_match(if_match: Option<&str>, record: &ClusterRecord) -> Result<(), ApiError> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let current = record.version.to_string();
    let matches = header.split(',').map(str::trim).any(|tag| {
        tag == "*" || (!tag.starts_with("W/") && tag.trim_matches('"') == current.as_str())
    });
    if matches {
        return Ok(());
    }
    Err(ApiError::precondition_failed(format!(
        "cluster {} is at version {} (ETag {}), not If-Match {}: read it again and decide again",
        record.id,
        record.version,
        etag(record),
        header.chars().take(64).collect::<String>()
    )))
}

/// The update in progress on a record, if any.
fn in_progress(record: &ClusterRecord) -> Option<&Update> {
    record
        .updates
        .iter()
        .rev()
        .find(|u| u.status == UpdateStatus::InProgress)
}

/// `409 ClusterBusy` for a cluster that is not `ACTIVE`, naming its status (and the update
/// running, if one is).
pub fn busy(record: &ClusterRecord, what: &str) -> ApiError {
    let running = match (record.status, in_progress(record)) {
        (Status::Updating, Some(u)) => format!(
            " (update {} runs: GET /clusters/{}/updates/{})",
            u.id, record.id, u.id
        ),
        _ => String::new(),
    };
    ApiError::conflict(
        codes::CLUSTER_BUSY,
        format!(
            "cluster {} is {}{running}; {what} once it is ACTIVE",
            record.id, record.status
        ),
    )
}

/// `PATCH /clusters/{id}`.
pub async fn patch<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    id_or_name: &str,
) -> Result<ApiResponse, ApiError> {
    let patch = body::decode_patch(&req.body)?;
    patch.check()?;
    let who = Who::of(req);
    begin_change(ctx, &who, id_or_name, |record| {
        patch.change(&record.spec, &ctx.config.policy)
    })
    .await
}

/// `POST /clusters/{id}/nodes/{instance_id}/replace`: replaces one node of the record (a worker,
/// or a control plane of a cluster with three) by a new instance with the same role and index.
/// `404` when the instance is not a node of the cluster.
pub async fn replace_node<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    id_or_name: &str,
    instance_id: &str,
) -> Result<ApiResponse, ApiError> {
    replace(ctx, &Who::of(req), id_or_name, instance_id).await
}

/// Starts the replacement of a node for `who` (the API's caller, or the reconcile).
pub(crate) async fn replace<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    who: &Who<'_>,
    id_or_name: &str,
    instance_id: &str,
) -> Result<ApiResponse, ApiError> {
    begin_change(ctx, who, id_or_name, |record| {
        let node = record
            .nodes
            .iter()
            .find(|n| n.instance_id == instance_id)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "cluster {} has no node '{}'",
                    record.id,
                    instance_id.chars().take(64).collect::<String>()
                ))
            })?;
        if node.role == Role::ControlPlane && record.spec.control_planes < 3 {
            return Err(ApiError::invalid(
                "instance_id",
                format!(
                    "{instance_id} is the only control plane of cluster {}: its datastore goes with it; a control plane is replaced only in a cluster with three",
                    record.id
                ),
            ));
        }
        Ok(Some(Change::ReplaceNode {
            instance_id: node.instance_id.clone(),
            role: node.role,
            index: node.index,
        }))
    })
    .await
}

/// Who asks for a change, and on which version of the record.
pub(crate) struct Who<'a> {
    /// The IAM principal (the API's caller), or the component (`mecplane:reconcile`).
    pub caller: Option<String>,
    /// The request's `If-Match`, if any.
    pub if_match: Option<&'a str>,
}

impl<'a> Who<'a> {
    fn of(req: &'a ApiRequest) -> Self {
        Who {
            caller: req.caller.clone(),
            if_match: req.header("if-match"),
        }
    }
}

/// The path every change takes: the record read (by id or name), `If-Match` checked, an update
/// whose execution ended without a result failed, `409` unless the cluster serves, the change
/// `decide`d from the record (`None`: `200` with the record), then recorded (`UPDATING`, the
/// update `InProgress`) with a conditional write — re-read and decided again when it loses — and
/// its execution started (`202`).
pub(crate) async fn begin_change<S, E, P, F>(
    ctx: &ApiContext<S, E, P>,
    who: &Who<'_>,
    id_or_name: &str,
    decide: F,
) -> Result<ApiResponse, ApiError>
where
    S: ClusterStore,
    E: Executions,
    P: Parameters,
    F: Fn(&ClusterRecord) -> Result<Option<Change>, ApiError>,
{
    let mut record = find(&ctx.store, id_or_name).await?;
    for attempt in 0..WRITE_ATTEMPTS {
        check_if_match(who.if_match, &record)?;
        if record.status == Status::Updating {
            record = fail_interrupted_update(ctx, record).await?;
        }
        if !record.status.is_serving() {
            return Err(busy(&record, "change it"));
        }
        let Some(change) = decide(&record)? else {
            return Ok(record_answer(200, &record));
        };
        let update_id = resources::new_update_id();
        let name = resources::update_execution_name(&record.id, &update_id);
        let mut next = record.clone();
        next.status = Status::Updating;
        next.updates.push(change.in_progress(
            update_id.clone(),
            resources::execution_arn(&ctx.config.update_state_machine_arn, &name),
            who.caller.clone(),
        ));
        let excess = next.updates.len().saturating_sub(MAX_UPDATES_KEPT);
        next.updates.drain(..excess);
        match ctx.store.update(&next).await {
            Ok(written) => {
                tracing::info!(cluster_id = %written.id, update_id = %update_id, change = %change.describe(), "cluster UPDATING");
                note(
                    &ctx.store,
                    &written.id,
                    Phase::Started,
                    format!("{} requested (update {update_id})", change.describe()),
                )
                .await;
                return start_update(ctx, written, &update_id, &name).await;
            }
            // Another writer (a concurrent PATCH, a stage) won: read again and decide again.
            Err(CloudError::ConditionFailed) if attempt + 1 < WRITE_ATTEMPTS => {
                record = ctx
                    .store
                    .get(&record.id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("the cluster vanished"))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CloudError::ConditionFailed.into())
}

/// Starts the update execution of an `UPDATING` record and answers `202`; if it cannot start,
/// the record goes back to `ACTIVE` with the update `Failed`, and the answer is `503`.
async fn start_update<S: ClusterStore, E: Executions, P>(
    ctx: &ApiContext<S, E, P>,
    record: ClusterRecord,
    update_id: &str,
    name: &str,
) -> Result<ApiResponse, ApiError> {
    let input = serde_json::to_string(&UpdateExecutionInput {
        cluster_id: &record.id,
        update_id,
        region: &record.spec.region,
        timing: &ctx.config.timing,
    })
    .map_err(|e| {
        tracing::error!(error = %e, "could not serialize the execution input");
        ApiError::internal()
    })?;
    let location = format!("/clusters/{}/updates/{update_id}", record.id);
    let started = ctx
        .executions
        .start(&ctx.config.update_state_machine_arn, name, &input)
        .await;
    let arn = match started {
        Ok(arn) => arn,
        Err(error) => return Err(update_not_started(ctx, &record, update_id, error).await),
    };
    tracing::info!(cluster_id = %record.id, update_id, execution_arn = %arn, "update execution started");
    // The ARN recorded beforehand is the one Step Functions gives; record it if it differs.
    let record = modify(&ctx.store, &record.id, |r| {
        match r
            .updates
            .iter_mut()
            .find(|u| u.id == update_id && u.status == UpdateStatus::InProgress)
        {
            Some(u) if u.execution_arn.as_deref() != Some(arn.as_str()) => {
                u.execution_arn = Some(arn.clone());
                true
            }
            _ => false,
        }
    })
    .await?;
    Ok(record_answer(202, &record).with_header("location", location))
}

/// StartExecution failed. Unless the execution turns out to exist after all (the call failed
/// after Step Functions took it), the update is marked `Failed`, the record goes back to `ACTIVE`,
/// and the caller gets a `503`.
async fn update_not_started<S: ClusterStore, E: Executions, P>(
    ctx: &ApiContext<S, E, P>,
    record: &ClusterRecord,
    update_id: &str,
    error: CloudError,
) -> ApiError {
    tracing::error!(cluster_id = %record.id, update_id, error = %error, "could not start the update execution");
    let planned = record
        .updates
        .iter()
        .find(|u| u.id == update_id)
        .and_then(|u| u.execution_arn.clone());
    if let Some(arn) = &planned {
        if let Ok(status) = ctx.executions.status(arn).await {
            tracing::warn!(cluster_id = %record.id, update_id, status = status_name(&status), "the update execution exists after all");
            return ApiError::unavailable(format!(
                "the update of cluster {} was started after all; GET /clusters/{}/updates/{update_id}",
                record.id, record.id
            ));
        }
    }
    let reason = format!("{UPDATE_NOT_STARTED_REASON}: {error}");
    match fail_update(ctx, &record.id, update_id, START_FAILED, &reason).await {
        Ok(true) => ApiError::unavailable(format!(
            "{UPDATE_NOT_STARTED_REASON}; cluster {} is ACTIVE again and update {update_id} Failed — retry the PATCH",
            record.id
        )),
        _ => ApiError::unavailable(format!(
            "the update of cluster {} could not be started; GET /clusters/{}/updates/{update_id}",
            record.id, record.id
        )),
    }
}

/// Marks update `update_id` `Failed` and the record `ACTIVE`, if the record is still `UPDATING`
/// with that update in progress (re-checked on every write). Whether this call marked it.
async fn fail_update<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    cluster_id: &str,
    update_id: &str,
    error: &str,
    reason: &str,
) -> Result<bool, ApiError> {
    let mut marked = false;
    modify(&ctx.store, cluster_id, |r| {
        marked = false;
        if r.status != Status::Updating {
            return false;
        }
        let Some(u) = r
            .updates
            .iter_mut()
            .find(|u| u.id == update_id && u.status == UpdateStatus::InProgress)
        else {
            return false;
        };
        u.status = UpdateStatus::Failed;
        u.finished_at = Some(crate::clock::now_rfc3339());
        u.failure = Some(Failure {
            stage: STAGE.into(),
            error: error.into(),
            reason: reason.into(),
        });
        r.status = Status::Active;
        marked = true;
        true
    })
    .await?;
    if marked {
        tracing::warn!(
            cluster_id,
            update_id,
            reason,
            "update Failed; cluster ACTIVE"
        );
        note(
            &ctx.store,
            cluster_id,
            Phase::Failed,
            format!("update {update_id} failed: {reason}"),
        )
        .await;
    }
    Ok(marked)
}

/// An `UPDATING` record whose update execution has ended without recording a result (stopped
/// from the console, say; or never started by a PATCH cut short) would stay `UPDATING` for ever:
/// its update becomes `Failed` and the record `ACTIVE` again. While the execution runs — or may
/// still be about to start — the record is returned as it is.
pub async fn fail_interrupted_update<S: ClusterStore, E: Executions, P>(
    ctx: &ApiContext<S, E, P>,
    record: ClusterRecord,
) -> Result<ClusterRecord, ApiError> {
    let Some(update) = in_progress(&record).cloned() else {
        return Ok(record);
    };
    let young = OffsetDateTime::parse(&update.started_at, &Rfc3339)
        .map(|t| (OffsetDateTime::now_utc() - t).whole_seconds() < START_GRACE_SECONDS)
        .unwrap_or(false);
    let reason = match &update.execution_arn {
        Some(arn) => match ctx.executions.status(arn).await {
            Ok(ExecutionStatus::Running) => return Ok(record),
            Ok(status) => format!(
                "the update execution ended {} without recording a result",
                status_name(&status)
            ),
            Err(CloudError::NotFound(_)) if young => return Ok(record),
            Err(CloudError::NotFound(_)) => {
                "the update execution was never started (or is no longer known)".to_string()
            }
            Err(e) => return Err(e.into()),
        },
        None if young => return Ok(record),
        None => "the update execution was never recorded".to_string(),
    };
    fail_update(ctx, &record.id, &update.id, UPDATE_INTERRUPTED, &reason).await?;
    ctx.store
        .get(&record.id)
        .await?
        .ok_or_else(|| ApiError::not_found("the cluster vanished"))
}

/// The answer of `GET /clusters/{id}/updates`.
#[derive(Debug, Serialize)]
pub struct UpdateList<'a> {
    /// Newest first.
    pub updates: Vec<&'a Update>,
}

/// `GET /clusters/{id}/updates`: the record's updates, newest first.
pub async fn list<S: ClusterStore>(store: &S, id_or_name: &str) -> Result<ApiResponse, ApiError> {
    let record = find(store, id_or_name).await?;
    Ok(ApiResponse::json(
        200,
        &UpdateList {
            updates: record.updates.iter().rev().collect(),
        },
    ))
}

/// `GET /clusters/{id}/updates/{update_id}`.
pub async fn get<S: ClusterStore>(
    store: &S,
    id_or_name: &str,
    update_id: &str,
) -> Result<ApiResponse, ApiError> {
    let record = find(store, id_or_name).await?;
    let update = record
        .updates
        .iter()
        .find(|u| u.id == update_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "cluster {} has no update '{}'",
                record.id,
                update_id.chars().take(64).collect::<String>()
            ))
        })?;
    Ok(ApiResponse::json(200, update))
}
