//! Stage `begin-update`: the first step of the update state machine. It reads the record, checks
//! the cluster is `UPDATING` with the execution's update `InProgress` (the API wrote both before
//! it started the execution), and turns the record into the working state the provisioning stages
//! take: the spec with the update's `workers`, the security group and the join token parameter by
//! reference, the workers already members, and the update (id, from, to, direction) for the
//! machine's Choice. Safe to run twice: it only records the execution on the update once.

use super::Ports;
use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{NodeState, Phase, Role, Status, UpdateKind, UpdateStatus};
use crate::resources;
use crate::spec::ValidationError;
use crate::state::{BeginUpdateEvent, CreateState, ScaleDirection, UpdateInfo, UpdateInput};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "begin-update";

/// The `from` and `to` of a scale update's `params` (`{"workers": {"from": a, "to": b}}`).
pub fn scale_params(params: &serde_json::Value) -> Result<(u32, u32), ValidationError> {
    let number = |key: &str| {
        params["workers"][key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ValidationError {
                field: format!("params.workers.{key}"),
                message: "must be a number of workers".into(),
            })
    };
    Ok((number("from")?, number("to")?))
}

/// Runs the stage.
pub async fn run<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    event: BeginUpdateEvent,
) -> Result<CreateState, StageError> {
    let store = ports.store;
    let input: UpdateInput =
        serde_json::from_value(event.input.clone()).map_err(|e| ValidationError {
            field: "input".into(),
            message: format!("{e}: expected {{\"cluster_id\", \"update_id\", \"region\"}}"),
        })?;
    let timing = input.timing.clone().unwrap_or_default();
    timing.validate()?;
    if !resources::is_cluster_id(&input.cluster_id) {
        return Err(ValidationError {
            field: "cluster_id".into(),
            message: "must look like c-0123456789abcdef".into(),
        }
        .into());
    }
    let record = records::modify(store, &input.cluster_id, |r| {
        let Some(update) = r.updates.iter_mut().find(|u| u.id == input.update_id) else {
            return Err(StageError::InvalidState(format!(
                "cluster {} has no update {}",
                r.id, input.update_id
            )));
        };
        if update.status != UpdateStatus::InProgress {
            return Err(StageError::InvalidState(format!(
                "update {} of cluster {} is {:?}, not InProgress",
                update.id, r.id, update.status
            )));
        }
        if update.kind != UpdateKind::Scale {
            return Err(StageError::InvalidState(format!(
                "update {} is a {:?} change; this state machine runs scale changes only",
                update.id, update.kind
            )));
        }
        if r.status != Status::Updating {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {}, not UPDATING",
                r.id, r.status
            )));
        }
        if update.execution_arn.is_some() {
            return Ok(false);
        }
        update.execution_arn = Some(event.execution_arn.clone());
        Ok(true)
    })
    .await?;
    let update = record
        .updates
        .iter()
        .find(|u| u.id == input.update_id)
        .cloned()
        .ok_or_else(|| StageError::Internal("the update vanished".into()))?;
    let (from, to) = scale_params(&update.params)?;
    let direction = ScaleDirection::of(from, to);
    records::enter(store, &record.id, STAGE).await?;

    let mut spec = record.spec.clone();
    spec.workers = to;
    let mut state = CreateState::new(record.id.clone(), spec, timing);
    state.security_group_id = record.security_group_id.clone();
    state.token_parameter = Some(resources::join_token_parameter(&record.id));
    // Workers already members are not joined again.
    state.joined = record
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .filter(|n| matches!(n.state, NodeState::Joined | NodeState::Ready))
        .map(|n| n.instance_id.clone())
        .collect();
    state.update = Some(UpdateInfo {
        id: update.id.clone(),
        from,
        to,
        direction,
        remove: None,
        removed: Vec::new(),
    });
    let what = match direction {
        ScaleDirection::Up => "launching and joining",
        ScaleDirection::Down => "draining, removing and terminating",
        ScaleDirection::None => "nothing to change for",
    };
    let detail = format!(
        "update {}: workers {from} -> {to}; {what} {} worker(s)",
        update.id,
        from.abs_diff(to)
    );
    records::note(store, &record.id, STAGE, Phase::Finished, detail).await?;
    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fakes::FakeStore;
    use crate::record::{Update, UpdateKind};
    use crate::stages::fixtures;
    use serde_json::json;

    /// Puts the record in `UPDATING` with a scale update `InProgress`, as the API does.
    pub(crate) async fn start_update(store: &FakeStore, cluster_id: &str, from: u32, to: u32) {
        let mut r = store.get(cluster_id).await.unwrap().unwrap();
        r.status = Status::Updating;
        r.updates.push(Update {
            id: "u-0000000000000001".into(),
            kind: UpdateKind::Scale,
            params: json!({"workers": {"from": from, "to": to}}),
            status: UpdateStatus::InProgress,
            execution_arn: None,
            created_by: None,
            started_at: crate::clock::now_rfc3339(),
            finished_at: None,
            failure: None,
        });
        store.update(&r).await.unwrap();
    }

    pub(crate) fn event(cluster_id: &str) -> BeginUpdateEvent {
        BeginUpdateEvent {
            input: json!({"cluster_id": cluster_id, "update_id": "u-0000000000000001", "region": "us-east-1"}),
            execution_arn: "arn:update".into(),
        }
    }

    #[tokio::test]
    async fn builds_the_working_state_twice_alike() {
        let (_cloud, store, state) = fixtures::registered(1, 2).await;
        fixtures::set_status(&store, &state.cluster_id, Status::Active).await;
        start_update(&store, &state.cluster_id, 2, 4).await;
        let ports = fixtures::records(&store);
        let first = run(&ports, event(&state.cluster_id)).await.unwrap();
        let second = run(&ports, event(&state.cluster_id)).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.spec.workers, 4);
        let info = first.update.clone().unwrap();
        assert_eq!(
            (info.from, info.to, info.direction),
            (2, 4, ScaleDirection::Up)
        );
        assert_eq!(
            first.token_parameter.as_deref(),
            Some(resources::join_token_parameter(&state.cluster_id).as_str())
        );
        let record = &store.records()[0];
        assert_eq!(
            record.updates[0].execution_arn.as_deref(),
            Some("arn:update")
        );
        // The Choice reads $.update.direction.
        let v = serde_json::to_value(&first).unwrap();
        assert_eq!(v["update"]["direction"], "up");
    }

    #[tokio::test]
    async fn refuses_a_cluster_not_updating_or_an_unknown_update() {
        let (_cloud, store, state) = fixtures::registered(1, 2).await;
        let ports = fixtures::records(&store);
        fixtures::set_status(&store, &state.cluster_id, Status::Active).await;
        let err = run(&ports, event(&state.cluster_id)).await.unwrap_err();
        assert_eq!(err.name(), "InvalidState");
        start_update(&store, &state.cluster_id, 2, 1).await;
        let mut r = store.get(&state.cluster_id).await.unwrap().unwrap();
        r.status = Status::Active;
        store.update(&r).await.unwrap();
        for _ in 0..2 {
            let err = run(&ports, event(&state.cluster_id)).await.unwrap_err();
            assert_eq!(err.name(), "InvalidState");
            assert!(err.to_string().contains("not UPDATING"), "{err}");
        }
        let bad = BeginUpdateEvent {
            input: json!({"cluster_id": state.cluster_id, "update": "u-1"}),
            execution_arn: "arn:update".into(),
        };
        assert_eq!(
            run(&ports, bad).await.unwrap_err().name(),
            "ValidationError"
        );
    }
}
