//! Stage `verify`: one poll of whether every node the spec asks for reports Ready, read from
//! `kubectl get nodes -o json` on a member control plane (the first, unless it is being replaced). Past `timing.ready_timeout_seconds` it
//! fails with `NodesNotReady`, naming the nodes that are not.

use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, Instances, NodeCommands};
use crate::record::{NodeState, Phase};
use crate::resources;
use crate::scripts::{self, Script};
use crate::state::CreateState;

use super::commands::{self, Wanted};
use super::{nodes, records, Ports};

/// The stage's name in events and the record.
pub const STAGE: &str = "verify";

/// Runs one poll.
pub async fn run<E: Instances, R: NodeCommands, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let now = clock::now_epoch();
    let expected = (state.spec.control_planes + state.spec.workers) as usize;
    let key = match &state.command {
        Some(p) if p.script == Script::Verify.name() => p.key.clone(),
        // An update's verify names the update: the create's verify commands (same instance,
        // same poll counts) must never be adopted as this one's answer.
        _ => match &state.update {
            Some(u) => resources::command_key(
                &state.cluster_id,
                "verify",
                format!("{} {}", u.id, state.poll.polls),
            ),
            None => resources::command_key(&state.cluster_id, "verify", state.poll.polls),
        },
    };
    state.poll.tick(now, state.timing.ready_timeout_seconds);
    let first = nodes::anchor(instances, &state).await?;
    let wanted = Wanted {
        cluster_id: state.cluster_id.clone(),
        instance_id: first.instance_id.clone(),
        script: Script::Verify,
        key,
        env: vec![("EXPECTED_NODES", expected.to_string())],
        timeout_seconds: 120.min(state.timing.command_timeout_seconds),
        secrets: Vec::new(),
    };
    let Some(stdout) = commands::poll(commands, instances, &mut state, wanted, now).await? else {
        return Ok(state);
    };
    let reports = scripts::nodes_of(&stdout);
    let ready: Vec<&scripts::NodeReport> = reports.iter().filter(|n| n.ready).collect();
    if ready.len() >= expected {
        records::modify(store, &state.cluster_id, |r| {
            for n in r
                .nodes
                .iter_mut()
                .filter(|n| n.state != NodeState::Terminated)
            {
                if ready
                    .iter()
                    .any(|rep| Some(&rep.internal_ip) == n.private_ip.as_ref())
                {
                    n.state = NodeState::Ready;
                }
            }
            Ok(true)
        })
        .await?;
        records::note(
            store,
            &state.cluster_id,
            STAGE,
            Phase::Finished,
            format!("{} of {expected} node(s) Ready", ready.len()),
        )
        .await?;
        state.poll.finish();
        return Ok(state);
    }
    if state.poll.expired(now) {
        let not_ready: Vec<String> = reports
            .iter()
            .filter(|n| !n.ready)
            .map(|n| format!("{} ({})", n.hostname, n.internal_ip))
            .collect();
        return Err(StageError::NodesNotReady(format!(
            "{} of {expected} node(s) Ready after {}s; not Ready: {}; {} node(s) missing from the cluster",
            ready.len(),
            state.timing.ready_timeout_seconds,
            if not_ready.is_empty() { "none".into() } else { not_ready.join(", ") },
            expected.saturating_sub(reports.len())
        )));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::CommandStatus;
    use crate::stages::fixtures;

    #[tokio::test]
    async fn all_ready_finishes_and_marks_nodes() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let sent = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        let out = run(&fixtures::ports(&cloud, &store), sent).await.unwrap();
        assert!(out.poll.done);
        assert_eq!(store.records()[0].nodes[0].state, NodeState::Ready);
    }

    #[tokio::test]
    async fn not_ready_polls_again_then_fails_naming_nodes() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        cloud.respond_with(|_, _| CommandStatus::Success { stdout: "NODE ip-10-0-0-9 NotReady 10.0.0.9 control-plane\nMECPLANE_RESULT nodes=1 ready=0\n".into() });
        let sent = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        let polled = run(&fixtures::ports(&cloud, &store), sent).await.unwrap();
        assert!(!polled.poll.done && polled.command.is_none());
        let mut resent = run(&fixtures::ports(&cloud, &store), polled).await.unwrap();
        resent.poll.deadline = Some(clock::now_epoch() - 1);
        let err = run(&fixtures::ports(&cloud, &store), resent)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "NodesNotReady");
        assert!(err.to_string().contains("ip-10-0-0-9"));
        assert_eq!(
            cloud.commands_of("verify").len(),
            2,
            "each poll asks afresh"
        );
    }

    #[tokio::test]
    async fn an_update_never_adopts_the_create_verify() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let sent = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        assert!(
            run(&fixtures::ports(&cloud, &store), sent)
                .await
                .unwrap()
                .poll
                .done
        );
        // The same poll count, later, in an update: a command of its own.
        let mut update = state;
        update.joined = vec![cloud.instances()[0].instance.instance_id.clone()];
        update.update = Some(crate::state::UpdateInfo {
            id: "u-0000000000000009".into(),
            route: crate::state::UpdateRoute::Replace,
            from: 0,
            to: 0,
            remove: None,
            removed: Vec::new(),
            upgrade: None,
            addons: None,
        });
        let update = run(&fixtures::ports(&cloud, &store), update).await.unwrap();
        assert!(!update.poll.done, "sent, not adopted");
        let verifies = cloud.commands_of("verify");
        assert_eq!(verifies.len(), 2);
        assert!(
            verifies[1].comment.contains("u-0000000000000009"),
            "{:?}",
            verifies[1].comment
        );
    }
}
