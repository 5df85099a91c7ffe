//! Stage `begin-delete`: finds the cluster by id or name and moves it to `DELETING`. Safe to run
//! twice, on a `FAILED` cluster, and on one already `DELETING` or `DELETED`; a cluster still
//! `CREATING` is refused (`InvalidState`) — its create execution owns it until it ends.
//!
//! With `reason: create-failed` (the reconcile's teardown of a create that ended without a
//! result) it leaves a `FAILED` record `FAILED`: the machine removes the resources and
//! `finish-delete` keeps the status, as a create that failed by itself ends. A record that is no
//! longer `FAILED` (a user's `DELETE` took over) is left as it is.
//!
//! On a cluster already `DELETING` whose recorded delete execution is another one (one that
//! failed, resumed by a new `DELETE` or an execution started from the console), this execution
//! takes the record over and the history says the delete was resumed: every delete stage is
//! idempotent, so the teardown carries on from wherever the last one stopped.

use super::Ports;
use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{Phase, Status};
use crate::resources;
use crate::spec::ValidationError;
use crate::state::{BeginDeleteEvent, DeleteInput, TeardownReason, TeardownState};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "begin-delete";

/// Runs the stage.
pub async fn run<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    event: BeginDeleteEvent,
) -> Result<TeardownState, StageError> {
    let store = ports.store;
    let input: DeleteInput =
        serde_json::from_value(event.input.clone()).map_err(|e| ValidationError {
            field: "input".into(),
            message: format!("{e}: expected {{\"id\": ...}} or {{\"name\": ...}}"),
        })?;
    let timing = input.timing.clone().unwrap_or_default();
    timing.validate()?;
    let record = match (&input.id, &input.name) {
        (Some(id), _) => {
            if !resources::is_cluster_id(id) {
                return Err(ValidationError {
                    field: "id".into(),
                    message: "must look like c-0123456789abcdef".into(),
                }
                .into());
            }
            store.get(id).await?
        }
        (None, Some(name)) => store.find_by_name(name).await?,
        (None, None) => {
            return Err(ValidationError {
                field: "id".into(),
                message: "give the cluster's id or name".into(),
            }
            .into())
        }
    };
    let wanted = input.id.clone().or(input.name.clone()).unwrap_or_default();
    let record = record.ok_or(StageError::ClusterNotFound(wanted))?;
    if input.reason == Some(TeardownReason::CreateFailed) {
        if !matches!(
            record.status,
            Status::Failed | Status::Deleting | Status::Deleted
        ) {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {}: only a FAILED cluster's resources are torn down",
                record.id, record.status
            )));
        }
        records::note(
            store,
            &record.id,
            STAGE,
            Phase::Started,
            "removing the resources of the failed create; the record stays FAILED",
        )
        .await?;
        return Ok(TeardownState {
            region: record.spec.region.clone(),
            cluster_id: record.id,
            reason: TeardownReason::CreateFailed,
            timing,
            poll: Default::default(),
            retain: false,
            error: None,
            cleanup_error: None,
        });
    }
    let mut resumed_from = None;
    let updated = records::modify(store, &record.id, |r| match r.status {
        Status::Creating => Err(StageError::InvalidState(format!(
            "cluster {} is CREATING; delete it once its create has finished",
            r.id
        ))),
        Status::Updating => Err(StageError::InvalidState(format!(
            "cluster {} is UPDATING; delete it once its update has finished",
            r.id
        ))),
        Status::Deleted => Ok(false),
        Status::Deleting => {
            resumed_from = None;
            if r.delete_execution_arn.as_deref() == Some(event.execution_arn.as_str()) {
                return Ok(false);
            }
            resumed_from = r.delete_execution_arn.replace(event.execution_arn.clone());
            Ok(true)
        }
        Status::Active | Status::Degraded | Status::Failed => {
            r.status = Status::Deleting;
            r.delete_execution_arn = Some(event.execution_arn.clone());
            Ok(true)
        }
    })
    .await?;
    if let Some(previous) = resumed_from {
        let previous = previous.rsplit(':').next().unwrap_or(&previous);
        records::note(
            store,
            &updated.id,
            STAGE,
            Phase::Progress,
            format!("delete resumed: this execution takes over from {previous}"),
        )
        .await?;
    }
    if updated.status != Status::Deleted {
        records::enter(store, &updated.id, STAGE).await?;
        records::note(
            store,
            &updated.id,
            STAGE,
            Phase::Finished,
            format!("deleting {}", updated.spec.name),
        )
        .await?;
    }
    Ok(TeardownState {
        region: updated.spec.region.clone(),
        cluster_id: updated.id,
        reason: TeardownReason::Delete,
        timing,
        poll: Default::default(),
        retain: false,
        error: None,
        cleanup_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures;
    use serde_json::json;

    fn event(input: serde_json::Value) -> BeginDeleteEvent {
        BeginDeleteEvent {
            input,
            execution_arn: "arn:delete".into(),
        }
    }

    #[tokio::test]
    async fn by_name_or_id_and_twice() {
        let (_cloud, store, state) = fixtures::registered(1, 0).await;
        let err = run(
            &fixtures::records(&store),
            event(json!({"name": state.spec.name})),
        )
        .await
        .unwrap_err();
        assert_eq!(err.name(), "InvalidState", "a CREATING cluster is refused");
        fixtures::set_status(&store, &state.cluster_id, Status::Failed).await;
        let a = run(
            &fixtures::records(&store),
            event(json!({"name": state.spec.name})),
        )
        .await
        .unwrap();
        let b = run(
            &fixtures::records(&store),
            event(json!({"id": state.cluster_id})),
        )
        .await
        .unwrap();
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(store.records()[0].status, Status::Deleting);
    }

    #[tokio::test]
    async fn a_failed_creates_teardown_leaves_the_record_failed_twice_over() {
        let (_cloud, store, state) = fixtures::registered(1, 0).await;
        let teardown = || event(json!({"id": state.cluster_id, "reason": "create-failed"}));
        let err = run(&fixtures::records(&store), teardown())
            .await
            .unwrap_err();
        assert_eq!(
            err.name(),
            "InvalidState",
            "a CREATING cluster is not torn down"
        );
        fixtures::set_status(&store, &state.cluster_id, Status::Failed).await;
        for _ in 0..2 {
            let out = run(&fixtures::records(&store), teardown()).await.unwrap();
            assert_eq!(out.reason, TeardownReason::CreateFailed);
            let done = crate::stages::finish_delete::run(&fixtures::records(&store), out)
                .await
                .unwrap();
            assert_eq!(done.status, Status::Failed);
        }
        let record = store.get(&state.cluster_id).await.unwrap().unwrap();
        assert_eq!(record.status, Status::Failed);
        assert_eq!(record.delete_execution_arn, None, "no delete was asked for");
    }

    #[tokio::test]
    async fn a_later_execution_resumes_a_deleting_cluster_and_says_so() {
        let (_cloud, store, state) = fixtures::registered(1, 0).await;
        fixtures::set_status(&store, &state.cluster_id, Status::Failed).await;
        let by = |arn: &str| BeginDeleteEvent {
            input: json!({"id": state.cluster_id}),
            execution_arn: arn.into(),
        };
        run(&fixtures::records(&store), by("arn:x:delete-1"))
            .await
            .unwrap();
        // The first execution failed later on; a second one (a resumed DELETE, or the console)
        // takes the record over, once however often it runs.
        for _ in 0..2 {
            run(&fixtures::records(&store), by("arn:x:delete-2"))
                .await
                .unwrap();
        }
        let record = &store.records()[0];
        assert_eq!(record.status, Status::Deleting);
        assert_eq!(
            record.delete_execution_arn.as_deref(),
            Some("arn:x:delete-2")
        );
        let resumed: Vec<_> = store
            .all_events()
            .into_iter()
            .filter(|e| e.detail.contains("delete resumed"))
            .collect();
        assert_eq!(resumed.len(), 1, "{resumed:?}");
        assert!(resumed[0].detail.contains("delete-1"), "{resumed:?}");
    }

    #[tokio::test]
    async fn bad_and_unknown_input() {
        let store = crate::fakes::FakeStore::default();
        assert_eq!(
            run(&fixtures::records(&store), event(json!({})))
                .await
                .unwrap_err()
                .name(),
            "ValidationError"
        );
        assert_eq!(
            run(&fixtures::records(&store), event(json!({"id": "nope"})))
                .await
                .unwrap_err()
                .name(),
            "ValidationError"
        );
        assert_eq!(
            run(&fixtures::records(&store), event(json!({"name": "ghost"})))
                .await
                .unwrap_err()
                .name(),
            "ClusterNotFound"
        );
    }
}
