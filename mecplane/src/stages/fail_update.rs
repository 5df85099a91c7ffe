//! Stage `fail-update`: a step of the update failed (the `Catch` of every state after
//! begin-update). A failed change never destroys the cluster and leaves nothing half-made: a scale
//! up's new workers (index ≥ the update's `from`) that are not Ready members are terminated; a
//! scale down's workers already removed from the cluster are terminated. The record goes back to
//! `ACTIVE` with the workers that are left (`DEGRADED` when an upgrade left a node unhealthy: it
//! died or never came back Ready), and the update becomes `Failed` with the stage, the
//! error and a readable reason (without ARNs). The state passes through, so the machine's `Fail`
//! state reports the error that failed the update. Safe to run twice.

use super::Ports;
use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, Instances};
use crate::record::{Failure, NodeState, Phase, Role, Status, UpdateStatus};
use crate::state::{CreateState, RolloutStep, StepError, UpdateRoute};

use super::{nodes, records};

/// The stage's name in events.
pub const STAGE: &str = "fail-update";

/// Runs the stage.
pub async fn run<E: Instances, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, store) = (ports.ec2, ports.store);
    let info = state
        .update
        .clone()
        .ok_or_else(|| StageError::Internal("fail-update runs on an update".into()))?;
    let error = state.error.clone().unwrap_or_else(|| StepError {
        error: "InternalError".into(),
        cause: "the update failed without an error".into(),
    });
    let reason = error.reason();
    let record = records::load(store, &state.cluster_id).await?;

    // What must not stay: nodes that did not make it into the cluster, or already left it.
    let role = state.target_role();
    let live = nodes::live(instances, &state.cluster_id, role).await?;
    let ready = |id: &str| {
        record
            .nodes
            .iter()
            .any(|n| n.instance_id == id && n.state == NodeState::Ready)
    };
    let doomed: Vec<String> = live
        .iter()
        .filter(|i| match info.route {
            UpdateRoute::Up => i.index.is_none_or(|x| x >= info.from) && !ready(&i.instance_id),
            UpdateRoute::Down => info.removed.contains(&i.instance_id),
            // The node already out of the cluster, and a replacement that is not a member.
            UpdateRoute::Replace => {
                info.removed.contains(&i.instance_id)
                    || (!state.joined.contains(&i.instance_id)
                        && !info.remove.iter().flatten().any(|r| *r == i.instance_id)
                        && !ready(&i.instance_id))
            }
            // A ports change launches nothing: the group's rules go back to the spec at the
            // reconcile's next drift check.
            UpdateRoute::Upgrade | UpdateRoute::Addons | UpdateRoute::Ports | UpdateRoute::None => {
                false
            }
        })
        .map(|i| i.instance_id.clone())
        .collect();
    if !doomed.is_empty() {
        instances.terminate(&doomed).await?;
    }
    let workers_left = if role == Role::Worker {
        (live.len() - doomed.len()) as u32
    } else {
        record.spec.workers
    };
    // A node whose upgrade failed past its drain without a clean, reverted refresh (it died, or
    // never came back Ready) is known unhealthy: the cluster is DEGRADED, not ACTIVE.
    // So is a node whose replacement failed: it was asked to go, and may be gone already.
    let unhealthy = match info.route {
        UpdateRoute::Replace => info.remove.iter().flatten().next().cloned(),
        _ => info
            .upgrade
            .as_ref()
            .filter(|u| u.failed.is_none() && u.step != RolloutStep::Drain)
            .and_then(|u| u.current().cloned()),
    };
    let settled = if unhealthy.is_some() {
        Status::Degraded
    } else {
        Status::Active
    };
    let reason = match &unhealthy {
        Some(node) => format!("{reason} (node {node} is unhealthy)"),
        None => reason,
    };

    let mut failed_stage = String::new();
    let mut recorded_now = false;
    records::modify(store, &state.cluster_id, |r| {
        recorded_now = false;
        let stage = r.stage.clone().unwrap_or_else(|| STAGE.into());
        let Some(update) = r.updates.iter_mut().find(|u| u.id == info.id) else {
            return Err(StageError::InvalidState(format!(
                "cluster {} has no update {}",
                r.id, info.id
            )));
        };
        if update.status != UpdateStatus::InProgress {
            failed_stage = update
                .failure
                .as_ref()
                .map(|f| f.stage.clone())
                .unwrap_or_default();
            return Ok(false);
        }
        if !r.status.can_become(settled) {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {} and cannot become {settled}",
                r.id, r.status
            )));
        }
        failed_stage = stage.clone();
        update.status = UpdateStatus::Failed;
        update.finished_at = Some(clock::now_rfc3339());
        update.failure = Some(Failure {
            stage,
            error: error.error.clone(),
            reason: reason.clone(),
        });
        for n in r.nodes.iter_mut() {
            if doomed.contains(&n.instance_id) || info.removed.contains(&n.instance_id) {
                n.state = NodeState::Terminated;
            }
        }
        r.nodes.retain(|n| n.state != NodeState::Terminated);
        r.spec.workers = workers_left;
        r.status = settled;
        r.degraded = unhealthy.as_ref().map(|node| crate::record::Degradation {
            nodes: vec![node.clone()],
            reason: reason.clone(),
            since: clock::now_rfc3339(),
        });
        recorded_now = true;
        Ok(true)
    })
    .await?;
    if recorded_now {
        records::note(
            store,
            &state.cluster_id,
            &failed_stage,
            Phase::Failed,
            format!("{}: {reason}", error.error),
        )
        .await?;
        let cleaned = if doomed.is_empty() {
            "nothing to clean up".to_string()
        } else {
            format!("terminated {}", doomed.join(", "))
        };
        records::note(
            store,
            &state.cluster_id,
            STAGE,
            Phase::Finished,
            format!(
                "update {} failed in {failed_stage}; {cleaned}; {settled} with {workers_left} worker(s)",
                info.id
            ),
        )
        .await?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::CommandStatus;
    use crate::stages::{
        await_nodes, fixtures, join_nodes, launch_nodes, remove_workers, resolve_ami,
    };

    fn failed(mut state: CreateState) -> CreateState {
        state.error = Some(StepError {
            error: "CommandFailed".into(),
            cause: r#"{"errorType":"CommandFailed","errorMessage":"join on i-9 failed (Failed, exit 1): no route; arn:aws:states:us-east-1:123456789012:execution:x"}"#.into(),
        });
        state
    }

    #[tokio::test]
    async fn a_failed_scale_up_terminates_the_new_workers_and_goes_back_to_active() {
        let (cloud, store, mut state) = remove_workers::tests::scaling(1, 3).await;
        cloud.respond_with(|cmd, instances| {
            if cmd.script == "join" {
                CommandStatus::Failed {
                    status: "Failed".into(),
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: "join: no route\n".into(),
                }
            } else {
                fixtures::default_outcome(cmd, instances)
            }
        });
        state.target = Some(Role::Worker);
        let ports = fixtures::ports(&cloud, &store);
        state = resolve_ami::run(&ports, state).await.unwrap();
        state = launch_nodes::run(&ports, state).await.unwrap();
        state = await_nodes::run(&ports, state).await.unwrap();
        assert!(state.poll.done);
        assert_eq!(cloud.live_instances().len(), 4);
        let mut err = None;
        for _ in 0..5 {
            match join_nodes::run(&ports, state.clone()).await {
                Ok(s) => state = s,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err.expect("join fails").name(), "CommandFailed");
        let state = failed(state);
        let first = run(&ports, state.clone()).await.unwrap();
        let again = run(&ports, state.clone()).await.unwrap();
        assert_eq!(first, state, "the state passes through");
        assert_eq!(again, state);
        let live: Vec<_> = cloud.live_instances();
        assert_eq!(live.len(), 2, "the control plane and the old worker");
        assert!(live.iter().all(|i| i.instance.index == Some(0)));
        let record = &store.records()[0];
        assert_eq!(record.status, Status::Active);
        assert_eq!(record.spec.workers, 1);
        assert_eq!(record.nodes.len(), 2);
        let update = &record.updates[0];
        assert_eq!(update.status, UpdateStatus::Failed);
        assert!(update.finished_at.is_some());
        let failure = update.failure.clone().unwrap();
        assert_eq!(failure.stage, "join-workers");
        assert_eq!(failure.error, "CommandFailed");
        assert!(
            failure.reason.starts_with("join on i-9 failed"),
            "{failure:?}"
        );
        assert!(!failure.reason.contains("123456789012"), "{failure:?}");
        let said = store
            .all_events()
            .into_iter()
            .filter(|e| e.stage == STAGE)
            .count();
        assert_eq!(said, 1, "said once");
    }

    #[tokio::test]
    async fn a_failed_scale_down_terminates_the_removed_workers_only() {
        let (cloud, store, mut state) = remove_workers::tests::scaling(3, 1).await;
        let ports = fixtures::ports(&cloud, &store);
        // The first removal finishes (send, then answer), then the machine fails.
        state = remove_workers::run(&ports, state).await.unwrap();
        state = remove_workers::run(&ports, state).await.unwrap();
        let removed = state.update.clone().unwrap().removed;
        assert_eq!(removed.len(), 1);
        let state = failed(state);
        run(&ports, state.clone()).await.unwrap();
        run(&ports, state).await.unwrap();
        let live: Vec<String> = cloud
            .live_instances()
            .into_iter()
            .map(|i| i.instance.instance_id)
            .collect();
        assert_eq!(live.len(), 3, "the control plane and two workers");
        assert!(!live.contains(&removed[0]));
        let record = &store.records()[0];
        assert_eq!(record.status, Status::Active);
        assert_eq!(record.spec.workers, 2);
        assert_eq!(record.updates[0].status, UpdateStatus::Failed);
        assert_eq!(
            record.updates[0].failure.as_ref().unwrap().stage,
            "remove-workers"
        );
    }
}
