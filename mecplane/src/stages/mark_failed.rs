//! Stage `mark-failed`: the create failed. The record becomes `FAILED` with the stage that failed,
//! the error Step Functions saw and a readable reason; the state becomes a teardown state so the
//! machine can remove what was made (unless the spec says `retain_on_failure`).

use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{Failure, Phase, Status};
use crate::state::{CreateState, StepError, TeardownReason, TeardownState};

use super::records;

/// The stage's name in events.
pub const STAGE: &str = "mark-failed";

/// Runs the stage.
pub async fn run<S: ClusterStore>(
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
        let teardown = run(&store, state.clone()).await.unwrap();
        run(&store, state).await.unwrap();
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
}
