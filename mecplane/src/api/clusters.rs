//! The operations on clusters: create (check where the nodes go, register the record, start the
//! create execution), find by id or name, delete (record `DELETING`, start the delete
//! execution), events and kubeconfig.
//!
//! Each is safe to repeat. A create with an idempotency key answers a retry with the first
//! request's cluster (without checking its placement again), and finishes the first request's work if it was cut short (the execution is
//! named after the cluster id, so starting it again is a no-op). A delete of a cluster already
//! `DELETING` starts the delete execution if none is recorded, starts the next attempt
//! (`<id>-delete-2`, …) if the recorded one has ended without finishing, and otherwise starts
//! nothing; a delete of a `DELETED` cluster answers `202` with the record — the outcome the caller
//! wanted. A `CREATING` cluster whose create never started, or has ended, can be deleted too.

use serde::Serialize;

use crate::error::CloudError;
use crate::placement::{self, PlacementError};
use crate::ports::{ClusterStore, ExecutionStatus, Executions, KeyClaim, ListFilter, Parameters};
use crate::reconcile::Fleet;
use crate::record::{ClusterRecord, Event, Failure, Phase, Status};
use crate::resources;
use crate::spec::ClusterSpec;
use crate::state::Timing;

use super::errors::{codes, ApiError};
use super::{body, idempotency, principal, updates, ApiContext, ApiRequest, ApiResponse};

/// The stage name the API writes into events and failures.
pub const STAGE: &str = "api";
/// The `error` of a failure recorded when the create execution could not be started.
pub const START_FAILED: &str = "StartExecutionFailed";
/// The failure recorded for a CREATING cluster whose create execution ended without a result.
pub const CREATE_INTERRUPTED: &str = "CreateInterrupted";
/// How often the API tries a record write that keeps losing its condition before it answers
/// 503. A cluster being created or torn down is written by a stage every poll (the stage's
/// `enter` and its event), so a DELETE or PATCH racing a teardown may lose several rounds in a
/// row (with 3, a schemathesis DELETE racing a failed create's teardown on the local stack once
/// answered 503).
pub(super) const WRITE_ATTEMPTS: usize = 6;

/// The create execution's input, exactly what the register stage accepts.
#[derive(Serialize)]
struct CreateExecutionInput<'a> {
    cluster_id: &'a str,
    spec: &'a ClusterSpec,
    timing: &'a Timing,
}

/// The delete execution's input.
#[derive(Serialize)]
struct DeleteExecutionInput<'a> {
    id: &'a str,
    timing: &'a Timing,
    /// Only for a teardown that leaves the record `FAILED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<crate::state::TeardownReason>,
}

/// The delete execution's name for a cluster's `attempt`-th delete: `<id>-delete` for the first,
/// `<id>-delete-<n>` for each resume after an execution that ended without finishing.
pub fn delete_execution_name(cluster_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        format!("{cluster_id}-delete")
    } else {
        format!("{cluster_id}-delete-{attempt}")
    }
}

/// The attempt a delete execution's ARN names (`<id>-delete` 1, `<id>-delete-<n>` n), or 0 for an
/// execution the API did not name (started from the console).
fn delete_attempt_of(cluster_id: &str, execution_arn: &str) -> u32 {
    let name = execution_arn.rsplit(':').next().unwrap_or_default();
    let Some(rest) = name.strip_prefix(cluster_id) else {
        return 0;
    };
    match rest {
        "-delete" => 1,
        _ => rest
            .strip_prefix("-delete-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

/// How Step Functions names an execution's end, for reasons and events.
pub(super) fn status_name(status: &ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Running => "RUNNING",
        ExecutionStatus::Succeeded => "SUCCEEDED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::TimedOut => "TIMED_OUT",
        ExecutionStatus::Aborted => "ABORTED",
    }
}

/// `202 Accepted` with the record, its `ETag` and its `Location`.
fn accepted(record: &ClusterRecord) -> ApiResponse {
    updates::record_answer(202, record).with_header("location", format!("/clusters/{}", record.id))
}

/// `POST /clusters`.
///
/// Where the nodes go is checked first, in the spec's region ([`place`]): a refusal claims
/// nothing — no idempotency key, no name, no record, no execution — so the caller can fix the
/// request and send it again, with the same key or without.
pub async fn create<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    fleet: Option<&Fleet<'_>>,
) -> Result<ApiResponse, ApiError> {
    let request = body::decode_create(&req.body)?;
    let mut spec = request.validate(&ctx.config.policy)?;
    let key = idempotency::key_of(req, &request)?;
    if let Some(key) = &key {
        // A retry of a create that was taken answers its cluster as it is now, whatever the
        // placement would say today (a subnet may have gone since); the key stays unclaimed
        // until the placement has passed.
        let hash = idempotency::request_hash(&request);
        if let Some(KeyClaim::Existing {
            cluster_id,
            request_hash,
        }) = ctx
            .store
            .find_key(&key.scoped(req.caller.as_deref()))
            .await?
        {
            if let Some(existing) = ctx
                .store
                .get(&cluster_id)
                .await?
                .filter(|_| request_hash == hash)
            {
                tracing::info!(cluster_id = %existing.id, "idempotent replay");
                return finish_create(ctx, existing).await;
            }
        }
    }
    let chosen = place(fleet, &mut spec).await?;

    let mut id = resources::new_cluster_id();
    if let Some(key) = &key {
        let hash = idempotency::request_hash(&request);
        if let KeyClaim::Existing {
            cluster_id,
            request_hash,
        } = ctx
            .store
            .claim_key(&key.scoped(req.caller.as_deref()), &id, &hash)
            .await?
        {
            if request_hash != hash {
                return Err(ApiError::unprocessable(
                    codes::IDEMPOTENCY_KEY_REUSED,
                    "this idempotency key was used for a different request; use a new key",
                )
                .with_field(key.field));
            }
            id = cluster_id;
            if let Some(existing) = ctx.store.get(&id).await? {
                tracing::info!(cluster_id = %id, "idempotent replay");
                return finish_create(ctx, existing).await;
            }
            // The first request claimed the key and stopped before it stored the record:
            // carry on under its cluster id.
        }
    }

    let principal = req.caller.as_deref().map(principal::of);
    if let Some(principal) = &principal {
        limit_clusters_of(ctx, &principal.arn).await?;
    }
    let mut record = ClusterRecord::new(id.clone(), spec, None);
    if let Some(principal) = principal {
        record.created_by = Some(principal.arn);
        record.created_by_session = principal.session;
    }
    if ctx.store.create(&record).await? {
        tracing::info!(cluster_id = %id, name = %record.spec.name, "cluster registered");
        let subnets = match (chosen, &record.spec.vpc_id) {
            (true, Some(vpc)) => format!(
                "; in {vpc}, subnets {} chosen",
                record.spec.subnet_ids.join(", ")
            ),
            _ => String::new(),
        };
        note(
            &ctx.store,
            &id,
            Phase::Started,
            format!("create of {} requested{subnets}", record.spec.name),
        )
        .await;
        return finish_create(ctx, record).await;
    }
    // The name is held, or (with a key) a concurrent retry of this request stored the record first.
    if key.is_some() {
        if let Some(existing) = ctx.store.get(&id).await? {
            return finish_create(ctx, existing).await;
        }
    }
    // Which cluster holds the name is said only to a caller who may see it: with
    // `OwnClustersOnly`, another owner's cluster stays unnamed (its id and status are its own).
    let holder = ctx.store.find_by_name(&record.spec.name).await?;
    let which = holder
        .filter(|h| !ctx.config.policy.own_clusters_only || super::owned_by(h, req))
        .map(|h| format!(" ({}, {})", h.id, h.status))
        .unwrap_or_default();
    Err(ApiError::conflict(
        codes::NAME_TAKEN,
        format!(
            "a cluster named '{}' already exists{which}",
            record.spec.name
        ),
    )
    .with_field("name"))
}

/// Chooses the subnets of a spec that names only its VPC, then checks where its nodes go, in the
/// spec's region ([`placement::choose_subnets`], [`placement::check`]): a refusal is a `422`
/// naming the field (`subnet_ids[1]`, `instance_type`, `vpc_id`), EC2 failing a `503` to retry.
/// A spec naming neither subnets nor a VPC (the default VPC) asks EC2 nothing. Answers whether
/// it chose the subnets.
async fn place(fleet: Option<&Fleet<'_>>, spec: &mut ClusterSpec) -> Result<bool, ApiError> {
    if spec.vpc_id.is_none() && placement::named_subnets(spec).next().is_none() {
        return Ok(false);
    }
    let fleet = fleet.ok_or_else(|| {
        ApiError::unavailable("this API has no EC2 access to check where the cluster's nodes go")
    })?;
    let ec2 = (fleet.ports_in)(&spec.region).ec2;
    let placed = async {
        let seen = placement::choose_subnets(&*ec2, spec).await?;
        placement::check(&*ec2, spec, seen.as_ref())
            .await
            .map(|_| seen.is_some())
    }
    .await;
    match placed {
        Ok(chosen) => Ok(chosen),
        Err(PlacementError::Invalid(e)) => Err(e.into()),
        Err(PlacementError::Cloud(e)) => {
            tracing::warn!(region = %spec.region, error = %e, "placement lookup failed");
            Err(ApiError::unavailable(format!(
                "could not look up the subnets and zones in {}; retry shortly",
                spec.region
            )))
        }
    }
}

/// The most records read to count one principal's clusters (100 per page).
const COUNT_PAGES: usize = 50;

/// `409 TooManyClusters` when `owner` already has as many live clusters as the deployment
/// allows (`Policy::max_clusters_per_principal`, counted by `created_by`, an assumed role with all
/// its sessions: [`principal::same_owner`]). A guardrail against
/// runaway cost, not a transaction: two creates racing at the limit may both pass.
async fn limit_clusters_of<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    owner: &str,
) -> Result<(), ApiError> {
    let limit = ctx.config.policy.max_clusters_per_principal;
    let (mut live, mut token) = (0u32, None::<String>);
    for _ in 0..COUNT_PAGES {
        let page = ctx
            .store
            .list(&ListFilter::default(), token.as_deref(), 100)
            .await?;
        live += page
            .records
            .iter()
            .filter(|r| {
                r.status.is_live()
                    && r.created_by
                        .as_deref()
                        .is_some_and(|by| principal::same_owner(by, owner))
            })
            .count() as u32;
        token = page.next_token;
        if token.is_none() || live >= limit {
            break;
        }
    }
    if live >= limit {
        return Err(ApiError::conflict(
            codes::TOO_MANY_CLUSTERS,
            format!(
                "you have {live} live cluster(s); this deployment allows {limit} per principal — delete one first"
            ),
        ));
    }
    Ok(())
}

/// Starts the create execution of a `CREATING` record that has none yet, and answers `202`. A
/// record past that point is answered as it is.
pub(super) async fn finish_create<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    record: ClusterRecord,
) -> Result<ApiResponse, ApiError> {
    if record.status != Status::Creating || record.execution_arn.is_some() {
        return Ok(accepted(&record));
    }
    let input = serde_json::to_string(&CreateExecutionInput {
        cluster_id: &record.id,
        spec: &record.spec,
        timing: &ctx.config.timing,
    })
    .map_err(|e| {
        tracing::error!(error = %e, "could not serialize the execution input");
        ApiError::internal()
    })?;
    let arn = match ctx
        .executions
        .start(&ctx.config.create_state_machine_arn, &record.id, &input)
        .await
    {
        Ok(arn) => arn,
        Err(e) => return Err(create_not_started(ctx, &record.id, e).await),
    };
    tracing::info!(cluster_id = %record.id, execution_arn = %arn, "create execution started");
    // The register stage may have bound the execution already (it writes the same ARN). A delete
    // may have taken the record meanwhile: then the register stage refuses this execution.
    let record = modify(&ctx.store, &record.id, |r| {
        let changed = r.execution_arn.is_none() && r.status == Status::Creating;
        if changed {
            r.execution_arn = Some(arn.clone());
        }
        changed
    })
    .await?;
    Ok(accepted(&record))
}

/// A CREATING cluster whose create execution has ended — stopped by hand, timed out, or ended
/// before it could record a result — would block its own delete for ever. Such a record becomes
/// `FAILED` (with what Step Functions says), so the delete can clean up whatever was launched.
/// While the execution runs, the record is returned as it is (and the delete answers 409).
///
/// So does a CREATING record no execution owns: the request that registered it ended before it
/// started one (or before it recorded the one it started). Nothing can have been launched for it:
/// the register stage binds its execution to the record before any other stage runs, and refuses
/// a record that is no longer CREATING — so whichever comes first, the delete or a late create,
/// wins, and the other stands back (the condition below is re-checked on every write).
pub(crate) async fn fail_interrupted_create<S: ClusterStore, E: Executions, P>(
    ctx: &ApiContext<S, E, P>,
    record: ClusterRecord,
) -> Result<ClusterRecord, ApiError> {
    let (owner, reason) = match record.execution_arn.clone() {
        Some(arn) => {
            let status = ctx.executions.status(&arn).await?;
            if status == ExecutionStatus::Running {
                return Ok(record);
            }
            let ended = status_name(&status);
            (
                Some(arn),
                format!("the create execution ended {ended} without recording a result"),
            )
        }
        None => (
            None,
            "the create execution was never started: the request that registered the cluster \
             ended before starting it"
                .to_string(),
        ),
    };
    let failed = modify(&ctx.store, &record.id, |r| {
        let mark = r.status == Status::Creating && r.execution_arn == owner;
        if mark {
            r.status = Status::Failed;
            r.failure = Some(Failure {
                stage: r.stage.clone().unwrap_or_else(|| STAGE.into()),
                error: CREATE_INTERRUPTED.into(),
                reason: reason.clone(),
            });
        }
        mark
    })
    .await?;
    if failed
        .failure
        .as_ref()
        .is_some_and(|f| f.error == CREATE_INTERRUPTED)
    {
        tracing::warn!(cluster_id = %failed.id, execution_arn = ?owner, %reason, "cluster FAILED");
        note(&ctx.store, &failed.id, Phase::Failed, reason).await;
    }
    Ok(failed)
}

/// StartExecution failed: records the cluster `FAILED` (so a delete can release its name; nothing
/// was created in the cloud) and answers `503`. If an execution turns out to own the record after
/// all, the start did happen and the caller gets the record.
async fn create_not_started<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    cluster_id: &str,
    error: CloudError,
) -> ApiError {
    tracing::error!(cluster_id, error = %error, "could not start the create execution");
    let reason = format!("the create execution could not be started: {error}");
    let failed = modify(&ctx.store, cluster_id, |r| {
        let mark = r.status == Status::Creating && r.execution_arn.is_none();
        if mark {
            r.status = Status::Failed;
            r.stage = Some(STAGE.into());
            r.failure = Some(Failure {
                stage: STAGE.into(),
                error: START_FAILED.into(),
                reason: reason.clone(),
            });
        }
        mark
    })
    .await;
    match failed {
        Ok(r) if r.status == Status::Failed => {
            note(&ctx.store, cluster_id, Phase::Failed, reason).await;
            ApiError::unavailable(format!(
                "the create execution could not be started; cluster {cluster_id} is FAILED — delete it, then create again"
            ))
        }
        Ok(r) if r.execution_arn.is_some() => ApiError::unavailable(format!(
            "cluster {cluster_id} is being created after all; GET /clusters/{cluster_id}"
        )),
        Ok(_) | Err(_) => ApiError::unavailable(format!(
            "the create of cluster {cluster_id} could not be started"
        )),
    }
}

/// The cluster with this id, or else the live cluster with this name; `404` otherwise. A deleted
/// cluster stays readable by id; its name is free for a new cluster.
pub async fn find<S: ClusterStore>(store: &S, id_or_name: &str) -> Result<ClusterRecord, ApiError> {
    // Neither an id nor a name a cluster could have (a 2 KB path, say): not a question for the
    // table, whose key limits would answer it with an error.
    if !resources::is_cluster_id(id_or_name) && crate::spec::validate_name(id_or_name).is_err() {
        return Err(ApiError::not_found(format!(
            "no cluster with id or name '{}'",
            id_or_name.chars().take(64).collect::<String>()
        )));
    }
    if resources::is_cluster_id(id_or_name) {
        if let Some(record) = store.get(id_or_name).await? {
            return Ok(record);
        }
    }
    // A name may look like an id (`c-0123…` is a valid DNS label), so an id miss falls back to names.
    store
        .find_by_name(id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster with id or name '{id_or_name}'")))
}

/// `DELETE /clusters/{id}`.
pub async fn delete<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    id_or_name: &str,
) -> Result<ApiResponse, ApiError> {
    let mut record = find(&ctx.store, id_or_name).await?;
    if record.status == Status::Creating {
        record = fail_interrupted_create(ctx, record).await?;
    }
    if record.status == Status::Updating {
        record = updates::fail_interrupted_update(ctx, record).await?;
    }
    for attempt in 0..WRITE_ATTEMPTS {
        match record.status {
            Status::Creating => {
                return Err(ApiError::conflict(
                    codes::CLUSTER_BUSY,
                    format!(
                        "cluster {} is CREATING; delete it once its create has finished",
                        record.id
                    ),
                ))
            }
            // A change runs on the live cluster: it ends (ACTIVE again) before a delete may begin.
            Status::Updating => return Err(updates::busy(&record, "delete it")),
            Status::Deleted => return Ok(accepted(&record)),
            Status::Deleting => break,
            Status::Active | Status::Degraded | Status::Failed => {
                let mut next = record.clone();
                next.status = Status::Deleting;
                match ctx.store.update(&next).await {
                    Ok(written) => {
                        tracing::info!(cluster_id = %written.id, "cluster DELETING");
                        note(
                            &ctx.store,
                            &written.id,
                            Phase::Started,
                            format!("delete of {} requested", written.spec.name),
                        )
                        .await;
                        record = written;
                        break;
                    }
                    // A stage wrote meanwhile: read again and decide again.
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
        }
    }
    if record.status != Status::Deleting {
        return Err(ApiError::unavailable(format!(
            "cluster {} is being changed; retry the delete",
            record.id
        )));
    }
    let Some(previous) = record.delete_execution_arn.clone() else {
        // A delete cut short after it recorded DELETING starts the execution here, on the retry.
        return start_delete(ctx, record, None).await;
    };
    // A delete whose execution has ended without finishing (a step failed, or it was stopped or
    // timed out) would leave the cluster DELETING for ever: this DELETE resumes it with the next
    // attempt. While the execution runs (or once it has succeeded) there is nothing to start.
    let ended = match ctx.executions.status(&previous).await {
        Ok(ExecutionStatus::Running | ExecutionStatus::Succeeded) => return Ok(accepted(&record)),
        Ok(status) => status_name(&status),
        // Step Functions forgets executions some time after they end.
        Err(CloudError::NotFound(_)) => "and is no longer known",
        Err(e) => return Err(e.into()),
    };
    start_delete(ctx, record, Some((previous, ended))).await
}

/// Starts a delete execution for a `DELETING` record and records it: the first attempt, or —
/// given the recorded execution and how it ended — the next. Concurrent calls start the same
/// execution (same name, same input) and record it once.
async fn start_delete<S: ClusterStore, E: Executions, P>(
    ctx: &ApiContext<S, E, P>,
    record: ClusterRecord,
    previous: Option<(String, &str)>,
) -> Result<ApiResponse, ApiError> {
    let attempt = match &previous {
        // After a delete started from the console (attempt 0) the API's next one is the second.
        Some((arn, _)) => {
            record
                .delete_attempt
                .max(delete_attempt_of(&record.id, arn))
                .max(1)
                + 1
        }
        None => record.delete_attempt.max(1),
    };
    let input = serde_json::to_string(&DeleteExecutionInput {
        id: &record.id,
        timing: &ctx.config.timing,
        reason: None,
    })
    .map_err(|e| {
        tracing::error!(error = %e, "could not serialize the execution input");
        ApiError::internal()
    })?;
    let name = delete_execution_name(&record.id, attempt);
    let arn = match ctx
        .executions
        .start(&ctx.config.delete_state_machine_arn, &name, &input)
        .await
    {
        Ok(arn) => arn,
        Err(e) => {
            tracing::error!(cluster_id = %record.id, error = %e, "could not start the delete execution");
            return Err(ApiError::unavailable(format!(
                "cluster {} is DELETING but its delete execution could not be started; retry the delete",
                record.id
            )));
        }
    };
    tracing::info!(cluster_id = %record.id, execution_arn = %arn, attempt, "delete execution started");
    let expected = previous.as_ref().map(|(arn, _)| arn.clone());
    let mut recorded = false;
    let record = modify(&ctx.store, &record.id, |r| {
        // The execution's begin-delete stage may have recorded it already (not its attempt).
        let ours = r.delete_execution_arn.as_deref() == Some(arn.as_str());
        let take = r.status == Status::Deleting && (ours || r.delete_execution_arn == expected);
        recorded = take && !ours;
        let changed = take && (!ours || r.delete_attempt < attempt);
        if changed {
            r.delete_execution_arn = Some(arn.clone());
            r.delete_attempt = attempt;
        }
        changed
    })
    .await?;
    if let (true, Some((previous, ended))) = (recorded, previous) {
        let previous = previous.rsplit(':').next().unwrap_or(&previous);
        tracing::warn!(cluster_id = %record.id, %previous, ended, attempt, "delete resumed");
        note(
            &ctx.store,
            &record.id,
            Phase::Started,
            format!("delete resumed (attempt {attempt}, execution {name}): the previous delete execution {previous} ended {ended}"),
        )
        .await;
    }
    Ok(accepted(&record))
}

/// Removes the resources of a `FAILED` cluster and leaves it `FAILED` (as a create that failed by
/// itself ends): the delete state machine with `reason: create-failed`, named `<id>-teardown`, so
/// that starting it twice starts it once. For the reconcile, once a create has ended without a
/// result; a user's `DELETE` meanwhile simply takes over (every teardown step is idempotent).
pub async fn teardown_failed<S: ClusterStore, E: Executions, P>(
    ctx: &ApiContext<S, E, P>,
    record: &ClusterRecord,
) -> Result<String, ApiError> {
    if record.status != Status::Failed {
        return Err(ApiError::conflict(
            codes::CLUSTER_BUSY,
            format!("cluster {} is {}, not FAILED", record.id, record.status),
        ));
    }
    let input = serde_json::to_string(&DeleteExecutionInput {
        id: &record.id,
        timing: &ctx.config.timing,
        reason: Some(crate::state::TeardownReason::CreateFailed),
    })
    .map_err(|e| {
        tracing::error!(error = %e, "could not serialize the execution input");
        ApiError::internal()
    })?;
    let name = format!("{}-teardown", record.id);
    let arn = ctx
        .executions
        .start(&ctx.config.delete_state_machine_arn, &name, &input)
        .await
        .map_err(|e| {
            tracing::error!(cluster_id = %record.id, error = %e, "could not start the teardown");
            ApiError::unavailable(format!(
                "the teardown of cluster {} could not be started: {e}",
                record.id
            ))
        })?;
    note(
        &ctx.store,
        &record.id,
        Phase::Started,
        format!("removing the resources of the failed create ({name}); the record stays FAILED"),
    )
    .await;
    Ok(arn)
}

/// The answer of `GET /clusters/{id}/events`.
#[derive(Debug, Serialize)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// `GET /clusters/{id}/events`: the history, oldest first.
pub async fn events<S: ClusterStore>(store: &S, id_or_name: &str) -> Result<ApiResponse, ApiError> {
    let record = find(store, id_or_name).await?;
    Ok(ApiResponse::json(
        200,
        &EventList {
            events: store.events(&record.id).await?,
        },
    ))
}

/// The JSON answer of `GET /clusters/{id}/kubeconfig`.
#[derive(Debug, Serialize)]
pub struct KubeconfigAnswer<'a> {
    pub cluster_id: &'a str,
    pub name: &'a str,
    /// The kubeconfig YAML.
    pub kubeconfig: &'a str,
}

/// `GET /clusters/{id}/kubeconfig`: only while `ACTIVE`. JSON by default; the bare YAML when the
/// `Accept` header asks for `application/yaml`. Never cached, never logged.
pub async fn kubeconfig<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    id_or_name: &str,
) -> Result<ApiResponse, ApiError> {
    let record = find(&ctx.store, id_or_name).await?;
    let not_active = |why: String| ApiError::conflict(codes::CLUSTER_NOT_ACTIVE, why);
    if !record.status.is_serving() {
        return Err(not_active(format!(
            "cluster {} is {}; its kubeconfig is available while it is ACTIVE or DEGRADED",
            record.id, record.status
        )));
    }
    let parameter = record
        .kubeconfig_parameter
        .as_deref()
        .ok_or_else(|| not_active(format!("cluster {} has no kubeconfig stored", record.id)))?;
    // Gone between reading the record and the parameter: a delete has begun.
    let kubeconfig =
        ctx.parameters.get_secret(parameter).await?.ok_or_else(|| {
            not_active(format!("cluster {} no longer has a kubeconfig", record.id))
        })?;
    tracing::info!(cluster_id = %record.id, "kubeconfig read");
    let wants_yaml = req
        .header("accept")
        .is_some_and(|a| a.contains("application/yaml"));
    let response = if wants_yaml {
        ApiResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/yaml".into())],
            body: kubeconfig.into_bytes(),
        }
    } else {
        ApiResponse::json(
            200,
            &KubeconfigAnswer {
                cluster_id: &record.id,
                name: &record.spec.name,
                kubeconfig: &kubeconfig,
            },
        )
    };
    Ok(response.with_header("cache-control", "no-store"))
}

/// Applies `change` to the stored record and writes it if it changed, re-reading when a stage
/// wrote meanwhile. `change` returns whether it changed anything.
pub(super) async fn modify<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
    mut change: impl FnMut(&mut ClusterRecord) -> bool,
) -> Result<ClusterRecord, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let mut record = store
            .get(cluster_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no cluster {cluster_id}")))?;
        if !change(&mut record) {
            return Ok(record);
        }
        match store.update(&record).await {
            Ok(written) => return Ok(written),
            Err(CloudError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CloudError::ConditionFailed.into())
}

/// Appends an API event to the cluster's history. History is a courtesy: a failed write is logged,
/// not answered with an error, because the request itself has succeeded.
pub(super) async fn note<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
    phase: Phase,
    detail: String,
) {
    if let Err(e) = store
        .append_event(&Event::now(cluster_id, STAGE, phase, detail))
        .await
    {
        tracing::warn!(cluster_id, error = %e, "could not append an event");
    }
}
