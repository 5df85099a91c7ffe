//! Stage `await-control-planes` / `await-workers`: one poll of whether every instance of the role
//! is running with its SSM agent online. The state machine waits `timing.poll_seconds` between
//! polls; past `timing.nodes_timeout_seconds` the stage fails with `NodesNotReady`, naming the
//! instances that never came up. An instance that terminated fails it at once.

use super::Ports;
use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, InstanceState, Instances, NodeCommands};
use crate::record::{NodeState, Phase, Role};
use crate::state::CreateState;

use super::records;

/// The stage's name for a role.
pub fn stage(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "await-control-planes",
        Role::Worker => "await-workers",
    }
}

/// Runs one poll for `state.target`.
pub async fn run<E: Instances, R: NodeCommands, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    let role = state.target_role();
    let stage = stage(role);
    let record = records::enter(store, &state.cluster_id, stage).await?;
    let now = clock::now_epoch();
    state.poll.tick(now, state.timing.nodes_timeout_seconds);
    // A gone instance the record does not count as a node (a worker removed by an earlier scale
    // down, terminated on purpose) is history, not a failure.
    let counted = |id: &str| {
        record
            .nodes
            .iter()
            .any(|n| n.instance_id == id && n.state != NodeState::Terminated)
    };
    let mine: Vec<_> = instances
        .find(&state.cluster_id)
        .await?
        .into_iter()
        .filter(|i| i.role == Some(role))
        .filter(|i| !i.state.is_gone() || counted(&i.instance_id))
        .collect();
    if let Some(gone) = mine.iter().find(|i| i.state.is_gone()) {
        return Err(StageError::InstanceTerminated(format!(
            "{} {} was terminated while the cluster was being created or updated",
            role.as_str(),
            gone.instance_id
        )));
    }
    let running: Vec<String> = mine
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .map(|i| i.instance_id.clone())
        .collect();
    let online = if running.is_empty() {
        Vec::new()
    } else {
        commands.online(&running).await?
    };
    let waiting: Vec<String> = mine
        .iter()
        .filter(|i| !online.contains(&i.instance_id))
        .map(|i| {
            let why = if i.state == InstanceState::Running {
                "SSM agent not online"
            } else {
                "not running"
            };
            format!("{} ({why})", i.instance_id)
        })
        .collect();
    if waiting.is_empty() && !mine.is_empty() {
        records::modify(store, &state.cluster_id, |r| {
            for i in &mine {
                if let Some(n) = r.nodes.iter_mut().find(|n| n.instance_id == i.instance_id) {
                    n.private_ip = i.private_ip.clone();
                    n.public_ip = i.public_ip.clone();
                    n.carrier_ip = i.carrier_ip.clone();
                    if n.state == NodeState::Pending {
                        n.state = NodeState::Running;
                    }
                }
            }
            Ok(true)
        })
        .await?;
        let detail = format!(
            "{} {} node(s) running with SSM online after {} poll(s)",
            mine.len(),
            role.as_str(),
            state.poll.polls
        );
        records::note(store, &state.cluster_id, stage, Phase::Finished, detail).await?;
        state.poll.finish();
        return Ok(state);
    }
    if state.poll.expired(now) {
        return Err(StageError::NodesNotReady(format!(
            "{} of {} {} node(s) not ready after {}s: {}",
            waiting.len(),
            mine.len(),
            role.as_str(),
            state.timing.nodes_timeout_seconds,
            waiting.join(", ")
        )));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures;

    #[tokio::test]
    async fn waits_for_agents_then_finishes() {
        let (cloud, store, state) = fixtures::launched(1, 0).await;
        let id = cloud.live_instances()[0].instance.instance_id.clone();
        cloud.set_online(&id, false);
        let polled = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert!(!polled.poll.done);
        assert!(polled.poll.deadline.is_some());
        cloud.set_online(&id, true);
        let done = run(&fixtures::ports(&cloud, &store), polled).await.unwrap();
        assert!(done.poll.done && done.poll.deadline.is_none());
        assert_eq!(store.records()[0].nodes[0].state, NodeState::Running);
    }

    #[tokio::test]
    async fn an_agent_that_never_comes_online_fails_at_the_deadline() {
        let (cloud, store, mut state) = fixtures::launched(1, 0).await;
        let id = cloud.live_instances()[0].instance.instance_id.clone();
        cloud.set_online(&id, false);
        state.poll.deadline = Some(clock::now_epoch() - 1);
        let err = run(&fixtures::ports(&cloud, &store), state)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "NodesNotReady");
        assert!(err.to_string().contains(&id) && err.to_string().contains("SSM agent not online"));
    }

    #[tokio::test]
    async fn a_terminated_instance_fails_at_once() {
        let (cloud, store, state) = fixtures::launched(1, 0).await;
        let id = cloud.live_instances()[0].instance.instance_id.clone();
        cloud.set_state(&id, crate::ports::InstanceState::Terminated);
        assert_eq!(
            run(&fixtures::ports(&cloud, &store), state)
                .await
                .unwrap_err()
                .name(),
            "InstanceTerminated"
        );
    }
}
