//! Reading and writing the cluster record from a stage: conditional read-modify-write with a few
//! retries, and the history events that say which stage is running.

use crate::error::{CloudError, StageError};
use crate::ports::ClusterStore;
use crate::record::{ClusterRecord, Event, Phase};

/// How often a stage retries a write that lost its condition before it reports `RecordConflict`
/// (which Step Functions retries with backoff).
const WRITE_ATTEMPTS: usize = 4;

/// The cluster's record, or `ClusterNotFound`.
pub(crate) async fn load<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
) -> Result<ClusterRecord, StageError> {
    store
        .get(cluster_id)
        .await?
        .ok_or_else(|| StageError::ClusterNotFound(cluster_id.into()))
}

/// Applies `change` to the stored record and writes it if it changed, re-reading on a lost
/// condition. `change` returns whether it changed anything (no write when it did not).
pub(crate) async fn modify<S, F>(
    store: &S,
    cluster_id: &str,
    mut change: F,
) -> Result<ClusterRecord, StageError>
where
    S: ClusterStore,
    F: FnMut(&mut ClusterRecord) -> Result<bool, StageError>,
{
    for _ in 0..WRITE_ATTEMPTS {
        let mut record = load(store, cluster_id).await?;
        if !change(&mut record)? {
            return Ok(record);
        }
        match store.update(&record).await {
            Ok(written) => return Ok(written),
            Err(CloudError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StageError::RecordConflict)
}

/// Marks `stage` as the one running and records that it started — once, however often a polling
/// stage is invoked.
pub(crate) async fn enter<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
    stage: &str,
) -> Result<ClusterRecord, StageError> {
    let mut entered = false;
    let record = modify(store, cluster_id, |r| {
        entered = r.stage.as_deref() != Some(stage);
        if entered {
            r.stage = Some(stage.to_string());
        }
        Ok(entered)
    })
    .await?;
    if entered {
        note(store, cluster_id, stage, Phase::Started, "").await?;
    }
    Ok(record)
}

/// Appends an event to the cluster's history. Never pass a secret.
pub(crate) async fn note<S: ClusterStore>(
    store: &S,
    cluster_id: &str,
    stage: &str,
    phase: Phase,
    detail: impl Into<String>,
) -> Result<(), StageError> {
    store
        .append_event(&Event::now(cluster_id, stage, phase, detail))
        .await
        .map_err(Into::into)
}
