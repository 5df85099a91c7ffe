//! Stage `finish-update`: the change is done. The spec gets the change (`workers`,
//! `microk8s_channel` or `addons`), the record loses the
//! nodes that were terminated, goes back to `ACTIVE`, and the update becomes `Successful` with
//! its finish time. Safe to run twice: a record already finished is left as it is.

use super::Ports;
use crate::change::Change;
use crate::clock;
use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{NodeState, Phase, Role, Status, UpdateStatus};
use crate::state::{CreateState, UpdateOutput};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "finish-update";

/// Runs the stage.
pub async fn run<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: CreateState,
) -> Result<UpdateOutput, StageError> {
    let store = ports.store;
    let info = state
        .update
        .clone()
        .ok_or_else(|| StageError::Internal("finish-update runs on an update".into()))?;
    records::enter(store, &state.cluster_id, STAGE).await?;
    let mut finished_now = false;
    let mut done = None;
    let record = records::modify(store, &state.cluster_id, |r| {
        finished_now = false;
        let Some(update) = r.updates.iter_mut().find(|u| u.id == info.id) else {
            return Err(StageError::InvalidState(format!(
                "cluster {} has no update {}",
                r.id, info.id
            )));
        };
        match update.status {
            UpdateStatus::Successful => return Ok(false),
            UpdateStatus::Failed => {
                return Err(StageError::InvalidState(format!(
                    "update {} was already recorded Failed",
                    info.id
                )))
            }
            UpdateStatus::InProgress => {}
        }
        if !r.status.can_become(Status::Active) {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {} and cannot become ACTIVE",
                r.id, r.status
            )));
        }
        let change = Change::of(update)?;
        update.status = UpdateStatus::Successful;
        update.finished_at = Some(clock::now_rfc3339());
        update.failure = None;
        change.apply(&mut r.spec);
        done = Some(change);
        r.nodes.retain(|n| n.state != NodeState::Terminated);
        r.status = Status::Active;
        r.degraded = None;
        finished_now = true;
        Ok(true)
    })
    .await?;
    if finished_now {
        let workers = record
            .nodes
            .iter()
            .filter(|n| n.role == Role::Worker)
            .count();
        let what = done.map(|c| c.describe()).unwrap_or_default();
        let detail = format!(
            "update {} successful: {what}; ACTIVE with {} node(s) ({workers} worker(s))",
            info.id,
            record.nodes.len()
        );
        records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    }
    let update_status = record
        .updates
        .iter()
        .find(|u| u.id == info.id)
        .map(|u| u.status)
        .unwrap_or(UpdateStatus::Successful);
    Ok(UpdateOutput {
        cluster_id: record.id,
        update_id: info.id,
        status: record.status,
        update_status,
        workers: record.spec.workers,
        nodes: record.nodes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures::{poll_until_done, twice};
    use crate::stages::{fixtures, remove_workers};

    #[tokio::test]
    async fn records_the_update_successful_once() {
        let (_cloud, store, state) = remove_workers::tests::scaling(2, 4).await;
        let ports = fixtures::records(&store);
        let first = run(&ports, state.clone()).await.unwrap();
        let second = run(&ports, state).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.status, Status::Active);
        assert_eq!(first.update_status, UpdateStatus::Successful);
        assert_eq!(first.workers, 4);
        let record = &store.records()[0];
        assert_eq!(record.spec.workers, 4);
        assert!(record.updates[0].finished_at.is_some());
        let finished = store
            .all_events()
            .into_iter()
            .filter(|e| e.stage == STAGE && e.phase == Phase::Finished)
            .count();
        assert_eq!(finished, 1, "said once");
    }

    /// Records the next scale from `from` to `to` as the API does: UPDATING, with a new update
    /// InProgress (a copy of the latest, renamed).
    async fn start_next_update(
        store: &crate::fakes::FakeStore,
        mut r: crate::record::ClusterRecord,
        id: &str,
        from: u32,
        to: u32,
    ) -> crate::record::ClusterRecord {
        r.status = Status::Updating;
        let mut next = r.updates.last().expect("an earlier update").clone();
        next.id = id.into();
        next.status = UpdateStatus::InProgress;
        next.params = serde_json::json!({"workers": {"from": from, "to": to}});
        next.execution_arn = None;
        next.finished_at = None;
        r.updates.push(next);
        store.update(&r).await.unwrap()
    }

    /// 1+2 -> 1+4 -> 1+1 as the update machine chains the stages, every stage run twice.
    #[tokio::test]
    async fn scale_up_then_down_with_every_stage_run_twice() {
        use crate::stages::{
            await_nodes, begin_update, join_nodes, launch_nodes, resolve_ami, verify,
        };
        use crate::state::UpdateRoute;
        let (cloud, store, state) = remove_workers::tests::scaling(2, 4).await;
        let ports = fixtures::ports(&cloud, &store);
        let id = state.cluster_id.clone();
        let worker_count = || {
            cloud
                .live_instances()
                .iter()
                .filter(|i| i.instance.role == Some(Role::Worker))
                .count()
        };
        let mut state = twice(|| resolve_ami::run(&ports, state.clone())).await;
        state.target = Some(Role::Worker);
        let state = twice(|| launch_nodes::run(&ports, state.clone())).await;
        let state = poll_until_done(state, |s| async { await_nodes::run(&ports, s).await }).await;
        let state = poll_until_done(state, |s| async { join_nodes::run(&ports, s).await }).await;
        let state = poll_until_done(state, |s| async { verify::run(&ports, s).await }).await;
        let out = twice(|| run(&ports, state.clone())).await;
        assert_eq!((out.workers, out.nodes), (4, 5));
        assert_eq!(worker_count(), 4);
        assert_eq!(
            cloud.commands_of("join").len(),
            2,
            "only the new workers join"
        );
        let mut indexes: Vec<String> = cloud
            .live_instances()
            .iter()
            .filter(|i| i.instance.role == Some(Role::Worker))
            .map(|i| i.tags[crate::resources::TAG_INDEX].clone())
            .collect();
        indexes.sort();
        assert_eq!(indexes, ["0", "1", "2", "3"]);

        // 4 -> 1.
        let r = store.get(&id).await.unwrap().unwrap();
        start_next_update(&store, r, "u-0000000000000002", 4, 1).await;
        let event = || crate::state::BeginUpdateEvent {
            input: serde_json::json!({"cluster_id": id, "update_id": "u-0000000000000002"}),
            execution_arn: "arn:update-2".into(),
        };
        let state = twice(|| begin_update::run(&ports, event())).await;
        assert_eq!(state.update.as_ref().unwrap().route, UpdateRoute::Down);
        let state =
            poll_until_done(state, |s| async { remove_workers::run(&ports, s).await }).await;
        let out = twice(|| run(&ports, state.clone())).await;
        assert_eq!((out.workers, out.nodes), (1, 2));
        assert_eq!(worker_count(), 1);
        assert_eq!(cloud.commands_of("manage-node").len(), 3);
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!(record.status, Status::Active);
        assert!(record
            .updates
            .iter()
            .all(|u| u.status == UpdateStatus::Successful));
        assert!(record.nodes.iter().all(|n| n.index == 0));

        // Up again to 2: the terminated workers are history, not a failure of await-workers.
        start_next_update(&store, record.clone(), "u-0000000000000003", 1, 2).await;
        let event = || crate::state::BeginUpdateEvent {
            input: serde_json::json!({"cluster_id": id, "update_id": "u-0000000000000003"}),
            execution_arn: "arn:update-3".into(),
        };
        let mut state = twice(|| begin_update::run(&ports, event())).await;
        state.ami_id = Some("ami-0abc".into());
        state.target = Some(Role::Worker);
        let state = twice(|| launch_nodes::run(&ports, state.clone())).await;
        let state = poll_until_done(state, |s| async { await_nodes::run(&ports, s).await }).await;
        let state = poll_until_done(state, |s| async { join_nodes::run(&ports, s).await }).await;
        let state = poll_until_done(state, |s| async { verify::run(&ports, s).await }).await;
        let out = twice(|| run(&ports, state.clone())).await;
        assert_eq!((out.workers, out.nodes), (2, 3));
    }
}
