//! Stage `finish-delete`: everything is gone; the record becomes `DELETED` and its name is free —
//! or, after the teardown of a failed create (`reason: create-failed`), stays `FAILED` with its
//! failure, its name still taken until the user deletes it.

use super::Ports;
use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{Phase, Status};
use crate::state::{DeleteOutput, TeardownReason, TeardownState};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "finish-delete";

/// Runs the stage.
pub async fn run<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: TeardownState,
) -> Result<DeleteOutput, StageError> {
    let store = ports.store;
    if state.reason == TeardownReason::CreateFailed {
        let record = records::load(store, &state.cluster_id).await?;
        if record.status == Status::Failed {
            records::enter(store, &state.cluster_id, STAGE).await?;
            records::note(
                store,
                &state.cluster_id,
                STAGE,
                Phase::Finished,
                "the failed create's resources are removed; the record stays FAILED (delete it to free its name)",
            )
            .await?;
        }
        return Ok(DeleteOutput {
            cluster_id: record.id,
            status: record.status,
        });
    }
    let record = records::modify(store, &state.cluster_id, |r| {
        if !r.status.can_become(Status::Deleted) {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {} and cannot become DELETED",
                r.id, r.status
            )));
        }
        let changed = r.status != Status::Deleted;
        r.status = Status::Deleted;
        r.stage = Some(STAGE.into());
        Ok(changed)
    })
    .await?;
    records::note(store, &state.cluster_id, STAGE, Phase::Finished, "DELETED").await?;
    Ok(DeleteOutput {
        cluster_id: record.id,
        status: record.status,
    })
}
