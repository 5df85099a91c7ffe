//! Stage `mark-failed`: the create failed. The record becomes `FAILED` with the stage that failed,
//! the error Step Functions saw and a readable reason; the state becomes a teardown state so the
//! machine can remove what was made (unless the spec says `retain_on_failure`). If removing it
//! fails too, the same function records that ([`cleanup_failed`]): what is left stays until the
//! cluster is deleted, and the record says so instead of "removing what was created".

use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{Failure, Phase, Status};
use crate::state::{CreateState, FailedInput, StepError, TeardownReason, TeardownState};

use super::{records, Ports};

/// The stage's name in events.
pub const STAGE: &str = "mark-failed";

/// What the record's failure reason gains when the cleanup did not finish.
pub const CLEANUP_INCOMPLETE: &str = "cleanup incomplete";

/// Runs the stage on either input.
pub async fn handle<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    input: FailedInput,
) -> Result<TeardownState, StageError> {
    match input {
        FailedInput::Create(state) => failed_create(ports.store, *state).await,
        FailedInput::Cleanup(state) => cleanup_failed(ports.store, state).await,
    }
}

/// A cleanup step failed: the failure's reason says the cleanup is incomplete (once), and the
/// history says what failed and that deleting the cluster removes the rest.
pub async fn cleanup_failed<S: ClusterStore>(
    store: &S,
    state: TeardownState,
) -> Result<TeardownState, StageError> {
    let error = state.cleanup_error.clone().unwrap_or_else(|| StepError {
        error: "InternalError".into(),
        cause: "the cleanup failed without an error".into(),
    });
    let what = format!("{}: {}", error.error, error.reason());
    records::modify(store, &state.cluster_id, |r| {
        let Some(failure) = r.failure.as_mut() else {
            return Ok(false);
        };
        if failure.reason.contains(CLEANUP_INCOMPLETE) {
            return Ok(false);
        }
        failure.reason = format!("{}; {CLEANUP_INCOMPLETE} ({what})", failure.reason);
        Ok(true)
    })
    .await?;
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Failed,
        format!("removing what was created failed: {what}; delete the cluster to remove the rest"),
    )
    .await?;
    Ok(state)
}

/// Runs the stage for a failed create.
pub async fn failed_create<S: ClusterStore>(
    store: &S,
    state: CreateState,
) -> Result<TeardownState, StageError> {
    let error = state.error.clone().unwrap_or_else(|| StepError {
        error: "InternalError".into(),
        cause: "the create failed without an error".into(),
    });
    let reason = error.reason();
    let mut failed_stage = String::new();
    records::modify(store, &state.cluster_id, |r| {
        if r.status == Status::Failed && r.failure.is_some() {
            failed_stage = r
                .failure
                .as_ref()
                .map(|f| f.stage.clone())
                .unwrap_or_default();
            return Ok(false);
        }
        if !r.status.can_become(Status::Failed) {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {} and cannot become FAILED",
                r.id, r.status
            )));
        }
        failed_stage = r.stage.clone().unwrap_or_else(|| "register".into());
        r.status = Status::Failed;
        r.failure = Some(Failure {
            stage: failed_stage.clone(),
            error: error.error.clone(),
            reason: reason.clone(),
        });
        Ok(true)
    })
    .await?;
    records::note(
        store,
        &state.cluster_id,
        &failed_stage,
        Phase::Failed,
        format!("{}: {reason}", error.error),
    )
    .await?;
    let retain = state.spec.retain_on_failure;
    let next = if retain {
        "resources retained (retain_on_failure)"
    } else {
        "removing what was created"
    };
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!("FAILED in {failed_stage}; {next}"),
    )
    .await?;
    Ok(TeardownState {
        cluster_id: state.cluster_id,
        reason: TeardownReason::CreateFailed,
        region: state.spec.region,
        timing: state.timing,
        poll: Default::default(),
        retain,
        error: Some(error),
        cleanup_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures;

    #[tokio::test]
    async fn records_stage_error_and_reason_once() {
        let (_cloud, store, mut state) = fixtures::registered(1, 0).await;
        records::enter(&store, &state.cluster_id, "bootstrap")
            .await
            .unwrap();
        state.error = Some(StepError {
            error: "CommandFailed".into(),
            cause: r#"{"errorType":"CommandFailed","errorMessage":"bootstrap on i-1 failed (Failed, exit 1): no space"}"#.into(),
        });
        let teardown = failed_create(&store, state.clone()).await.unwrap();
        failed_create(&store, state).await.unwrap();
        let record = &store.records()[0];
        assert_eq!(record.status, Status::Failed);
        let failure = record.failure.clone().unwrap();
        assert_eq!(failure.stage, "bootstrap");
        assert_eq!(failure.error, "CommandFailed");
        assert_eq!(
            failure.reason,
            "bootstrap on i-1 failed (Failed, exit 1): no space"
        );
        assert_eq!(teardown.reason, TeardownReason::CreateFailed);
        assert!(!teardown.retain);
    }

    #[tokio::test]
    async fn a_failed_cleanup_is_said_on_the_record_once() {
        let (_cloud, store, mut state) = fixtures::registered(1, 0).await;
        state.error = Some(StepError {
            error: "CommandFailed".into(),
            cause: "bootstrap failed".into(),
        });
        // The machine passes the create state, then (after a cleanup step failed) the teardown
        // state: one function, told apart by shape.
        let create: FailedInput =
            serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
        let mut teardown = handle(&fixtures::records(&store), create).await.unwrap();
        teardown.cleanup_error = Some(StepError {
            error: "AwsError".into(),
            cause:
                r#"{"errorType":"AwsError","errorMessage":"UnauthorizedOperation: not allowed"}"#
                    .into(),
        });
        let cleanup: FailedInput =
            serde_json::from_value(serde_json::to_value(&teardown).unwrap()).unwrap();
        assert!(matches!(cleanup, FailedInput::Cleanup(_)));
        let out = handle(&fixtures::records(&store), cleanup.clone())
            .await
            .unwrap();
        handle(&fixtures::records(&store), cleanup).await.unwrap();
        assert_eq!(out, teardown, "the state passes through");
        let record = &store.records()[0];
        let reason = &record.failure.as_ref().unwrap().reason;
        assert_eq!(
            reason,
            "bootstrap failed; cleanup incomplete (AwsError: UnauthorizedOperation: not allowed)"
        );
        let events = store.all_events();
        assert!(events
            .iter()
            .any(|e| e.detail.contains("delete the cluster to remove the rest")));
    }
}
