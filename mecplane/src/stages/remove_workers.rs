//! Stage `remove-workers`: a scale down (or the first half of a node replacement), one poll at a
//! time. It chooses the workers beyond the update's `to` (the highest indexes; never below 0
//! workers) once — a replacement comes with its node chosen — then removes them one at a time
//! from a control plane (another than the node) (`manage-node` script, `ACTION=remove`: drain with a bounded
//! timeout, forced with a note when it times out, then `microk8s remove-node`), then terminates their instances and polls
//! until they have terminated. Each poll reads the world again: a command already sent is adopted
//! by its key, a node already gone from the cluster is fine, a terminated instance stays so.

use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, InstanceState, Instances, NodeCommands};
use crate::record::{NodeState, Phase, Role};
use crate::resources;
use crate::scripts::{self, Script};
use crate::state::{CreateState, UpdateRoute};

use super::commands::{self, Wanted};
use super::{nodes, records, Ports};

/// The stage's name in events and the record.
pub const STAGE: &str = "remove-workers";

/// The workers to remove so that `to` remain: those beyond the lowest `to` indexes, highest index
/// first (pure). `workers` are live workers ordered by index (untagged ones last).
pub fn choose(workers: &[crate::ports::Instance], to: u32) -> Vec<String> {
    workers
        .iter()
        .skip(to as usize)
        .rev()
        .map(|i| i.instance_id.clone())
        .collect()
}

/// How long the script lets one drain run: a third of the command's time, within 10 s..300 s.
pub fn drain_timeout(command_timeout_seconds: u32) -> u32 {
    (command_timeout_seconds / 3).clamp(10, 300)
}

/// Runs one poll.
pub async fn run<E: Instances, R: NodeCommands, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    let record = records::enter(store, &state.cluster_id, STAGE).await?;
    let now = clock::now_epoch();
    let mut info = state
        .update
        .clone()
        .ok_or_else(|| StageError::Internal("remove-workers runs on an update".into()))?;
    let count = info.from.saturating_sub(info.to);
    state.poll.tick(
        now,
        state
            .timing
            .command_timeout_seconds
            .saturating_mul(count + 1)
            .saturating_add(state.timing.terminate_timeout_seconds),
    );
    let all = instances.find(&state.cluster_id).await?;
    let victims = match info.remove.clone() {
        Some(chosen) => chosen,
        None => {
            let live = nodes::live(instances, &state.cluster_id, Role::Worker).await?;
            let chosen = choose(&live, info.to);
            let detail = if chosen.is_empty() {
                "no worker to remove".to_string()
            } else {
                format!("removing {} worker(s): {}", chosen.len(), chosen.join(", "))
            };
            records::note(store, &state.cluster_id, STAGE, Phase::Progress, detail).await?;
            info.remove = Some(chosen.clone());
            chosen
        }
    };
    state.update = Some(info.clone());

    // 1. Out of the cluster, one at a time.
    let pending: Vec<&String> = victims
        .iter()
        .filter(|id| !info.removed.contains(id))
        .collect();
    if let Some(victim) = pending.first() {
        let victim = (*victim).clone();
        let ip = all
            .iter()
            .find(|i| i.instance_id == victim)
            .and_then(|i| i.private_ip.clone())
            .or_else(|| {
                record
                    .nodes
                    .iter()
                    .find(|n| n.instance_id == victim)
                    .and_then(|n| n.private_ip.clone())
            });
        let Some(ip) = ip else {
            // Never had an address: it never joined, there is nothing to remove.
            info.removed.push(victim);
            state.update = Some(info);
            return Ok(state);
        };
        // A control plane leaves dqlite only with --force when it cannot leave by itself (it is
        // being replaced because it is dead or unwell); another control plane removes it.
        let force = record
            .nodes
            .iter()
            .any(|n| n.instance_id == victim && n.role == Role::ControlPlane);
        let operator = nodes::operator(instances, &state.cluster_id, Some(&victim)).await?;
        let wanted = Wanted {
            cluster_id: state.cluster_id.clone(),
            instance_id: operator.instance_id.clone(),
            script: Script::ManageNode,
            key: resources::command_key(&state.cluster_id, "remove", &victim),
            env: vec![
                ("ACTION", "remove".into()),
                ("NODE_IP", ip.clone()),
                (
                    "DRAIN_TIMEOUT",
                    drain_timeout(state.timing.command_timeout_seconds).to_string(),
                ),
                ("FORCE", if force { "1" } else { "0" }.into()),
            ],
            timeout_seconds: state.timing.command_timeout_seconds,
            secrets: Vec::new(),
        };
        let Some(stdout) = commands::poll(commands, instances, &mut state, wanted, now).await?
        else {
            return Ok(state);
        };
        let result = scripts::result_of(&stdout).unwrap_or_default();
        let how = result
            .get("remove")
            .cloned()
            .unwrap_or_else(|| "removed".into());
        let mut detail = format!("{victim} ({ip}) {how}");
        if let Some(drain) = result.get("drain") {
            detail.push_str(&format!(", drain {drain}"));
        }
        let notes: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("note: "))
            .collect();
        if !notes.is_empty() {
            detail.push_str(&format!(" ({})", notes.join("; ")));
        }
        records::note(store, &state.cluster_id, STAGE, Phase::Progress, detail).await?;
        info.removed.push(victim);
        state.update = Some(info);
        // The next worker (or the termination) on the next poll: one command per poll.
        return Ok(state);
    }

    // 2. Terminate what was removed, then wait for it.
    let live: Vec<String> = all
        .iter()
        .filter(|i| victims.contains(&i.instance_id) && !i.state.is_gone())
        .map(|i| i.instance_id.clone())
        .collect();
    if !live.is_empty() {
        instances.terminate(&live).await?;
    }
    records::modify(store, &state.cluster_id, |r| {
        let before = r.nodes.clone();
        for n in r
            .nodes
            .iter_mut()
            .filter(|n| victims.contains(&n.instance_id))
        {
            n.state = NodeState::Terminated;
        }
        Ok(before != r.nodes)
    })
    .await?;
    let remaining: Vec<String> = instances
        .find(&state.cluster_id)
        .await?
        .into_iter()
        .filter(|i| victims.contains(&i.instance_id) && i.state != InstanceState::Terminated)
        .map(|i| i.instance_id)
        .collect();
    if remaining.is_empty() {
        let detail = if info.route == UpdateRoute::Replace {
            format!("{} removed and terminated", victims.join(", "))
        } else {
            format!(
                "{} worker(s) removed and terminated; {} remain",
                victims.len(),
                info.to
            )
        };
        records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
        state.poll.finish();
        return Ok(state);
    }
    if state.poll.expired(now) {
        return Err(StageError::TeardownTimedOut(format!(
            "{} removed worker(s) not terminated in time: {}",
            remaining.len(),
            remaining.join(", ")
        )));
    }
    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ports::ClusterStore;
    use crate::record::{Status, UpdateStatus};
    use crate::stages::{begin_update, fixtures};

    /// A 1+`workers` cluster, ACTIVE, with a scale update to `to` begun.
    pub(crate) async fn scaling(
        workers: u32,
        to: u32,
    ) -> (
        crate::fakes::FakeCloud,
        crate::fakes::FakeStore,
        CreateState,
    ) {
        let (cloud, store, mut state) = fixtures::online(1, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, workers).await;
        fixtures::set_status(&store, &state.cluster_id, Status::Active).await;
        // Every node Ready, as the create's verify left them.
        let mut r = store.get(&state.cluster_id).await.unwrap().unwrap();
        r.nodes.iter_mut().for_each(|n| n.state = NodeState::Ready);
        store.update(&r).await.unwrap();
        // The bootstrap left the join token behind.
        crate::ports::Parameters::put_secret(
            &cloud,
            &resources::Deployment::default().join_token_parameter(&state.cluster_id),
            &"t".repeat(32),
        )
        .await
        .unwrap();
        begin_update::tests::start_update(&store, &state.cluster_id, workers, to).await;
        let state = begin_update::run(
            &fixtures::records(&store),
            begin_update::tests::event(&state.cluster_id),
        )
        .await
        .unwrap();
        (cloud, store, state)
    }

    #[test]
    fn chooses_the_highest_indexes_and_never_below_zero() {
        let w = |id: &str, index: u32| crate::ports::Instance {
            instance_id: id.into(),
            role: Some(Role::Worker),
            index: Some(index),
            state: InstanceState::Running,
            private_ip: None,
            public_ip: None,
            carrier_ip: None,
            private_dns: None,
            zone: None,
            subnet_id: None,
        };
        let workers = [w("a", 0), w("b", 1), w("c", 3)];
        assert_eq!(choose(&workers, 1), vec!["c", "b"]);
        assert_eq!(choose(&workers, 0), vec!["c", "b", "a"]);
        assert!(choose(&workers, 3).is_empty());
        assert!(choose(&workers, 5).is_empty());
        assert_eq!(drain_timeout(900), 300);
        assert_eq!(drain_timeout(12), 10);
    }

    #[tokio::test]
    async fn removes_then_terminates_with_every_poll_run_twice() {
        let (cloud, store, mut state) = scaling(3, 1).await;
        let workers: Vec<_> = cloud
            .live_instances()
            .into_iter()
            .filter(|i| i.instance.role == Some(Role::Worker))
            .collect();
        let keep = workers
            .iter()
            .find(|i| i.instance.index == Some(0))
            .unwrap()
            .instance
            .instance_id
            .clone();
        for _ in 0..20 {
            let _ = run(&fixtures::ports(&cloud, &store), state.clone())
                .await
                .unwrap();
            state = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
            if state.poll.done {
                break;
            }
        }
        assert!(state.poll.done);
        let removals = cloud.commands_of("manage-node");
        assert_eq!(removals.len(), 2, "one command per removed worker");
        let live_workers: Vec<String> = cloud
            .live_instances()
            .into_iter()
            .filter(|i| i.instance.role == Some(Role::Worker))
            .map(|i| i.instance.instance_id)
            .collect();
        assert_eq!(live_workers, vec![keep]);
        assert!(removals
            .iter()
            .all(|c| c.text.contains("export DRAIN_TIMEOUT='300'")));
        let record = &store.records()[0];
        assert_eq!(
            record
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Terminated)
                .count(),
            2
        );
        assert_eq!(record.updates[0].status, UpdateStatus::InProgress);
    }

    #[tokio::test]
    async fn a_failed_removal_names_the_node() {
        let (cloud, store, state) = scaling(2, 1).await;
        fixtures::fail_script(
            &cloud,
            "manage-node",
            "manage-node: microk8s remove-node ip-x failed\n",
        );
        let ports = fixtures::ports(&cloud, &store);
        let err = fixtures::until_failure(state, 5, |s| run(&ports, s)).await;
        assert_eq!(err.name(), "CommandFailed");
        assert!(err.to_string().contains("manage-node on i-"), "{err}");
        assert_eq!(
            cloud
                .live_instances()
                .iter()
                .filter(|i| i.instance.role == Some(Role::Worker))
                .count(),
            2,
            "nothing terminated before it left the cluster"
        );
    }
}
