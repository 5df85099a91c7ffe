//! Stage `upgrade-nodes`: an upgrade's rollout, one command per poll. It orders the nodes once
//! (control planes first, then workers, each by index; nodes already on the new channel are left
//! out), then takes them one at a time through three steps: drain it from a control plane
//! (`manage-node`, `ACTION=drain`), refresh it to the new channel on the node (`upgrade`), uncordon
//! it and wait for Kubernetes to report it Ready on the new version (`manage-node`,
//! `ACTION=uncordon`). So never more than one node is out of service, and a control plane is never
//! drained by itself while another exists.
//!
//! A node whose refresh fails (snapd reverts it) is put back into service on its old version, and
//! then the rollout stops with `CommandFailed` naming it and the nodes already upgraded, which stay
//! upgraded (the record's nodes say which channel each runs). A node that dies or does not come
//! back Ready stops the rollout where it is, and fail-update marks the cluster `DEGRADED`.
//! Every poll reads the world again: a command already sent is adopted by its key.

use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, Instances, NodeCommands};
use crate::record::{Phase, Role};
use crate::resources;
use crate::scripts::{self, Script};
use crate::state::{CreateState, Rollout, RolloutStep};

use super::commands::{self, Wanted};
use super::remove_workers::drain_timeout;
use super::{nodes, records, Ports};

/// The stage's name in events and the record.
pub const STAGE: &str = "upgrade-nodes";

/// The rollout order (pure): control planes before workers, each by index, leaving out the nodes
/// already on `to`. `nodes` are `(instance id, role, index, channel)`.
pub fn order(nodes: &[(String, Role, u32, Option<String>)], to: &str) -> Vec<String> {
    let mut todo: Vec<&(String, Role, u32, Option<String>)> = nodes
        .iter()
        .filter(|(_, _, _, channel)| channel.as_deref() != Some(to))
        .collect();
    todo.sort_by_key(|(id, role, index, _)| (*role, *index, id.clone()));
    todo.into_iter().map(|(id, ..)| id.clone()).collect()
}

/// `v1.33.` for `1.33/stable`: the prefix of the kubelet version a node upgraded to it reports.
pub fn kubelet_prefix(channel: &str) -> String {
    format!("v{}.", channel.split('/').next().unwrap_or(channel))
}

/// The next batch (pure): the first node not done, alone if it is a control plane, else with the
/// workers after it, up to `max_unavailable`.
pub fn next_batch(
    order: &[String],
    done: &[String],
    roles: &[(String, Role)],
    max_unavailable: u32,
) -> Vec<String> {
    let role = |id: &String| roles.iter().find(|(i, _)| i == id).map(|(_, r)| *r);
    let todo: Vec<&String> = order.iter().filter(|id| !done.contains(id)).collect();
    match todo.first() {
        None => Vec::new(),
        Some(first) if role(first) != Some(Role::Worker) => vec![(*first).clone()],
        Some(_) => todo
            .into_iter()
            .take_while(|id| role(id) == Some(Role::Worker))
            .take(max_unavailable.max(1) as usize)
            .cloned()
            .collect(),
    }
}

/// Runs one poll: moves the rollout on until a command has to wait.
pub async fn run<E: Instances, R: NodeCommands, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    let mut record = records::enter(store, &state.cluster_id, STAGE).await?;
    let now = clock::now_epoch();
    let mut info = state
        .update
        .clone()
        .ok_or_else(|| StageError::Internal("upgrade-nodes runs on an update".into()))?;
    let mut rollout: Rollout = info
        .upgrade
        .clone()
        .ok_or_else(|| StageError::Internal("upgrade-nodes runs on an upgrade".into()))?;
    let update_id = info.id.clone();
    let timing = state.timing.clone();
    let roles: Vec<(String, Role)> = record
        .nodes
        .iter()
        .map(|n| (n.instance_id.clone(), n.role))
        .collect();

    let order = match rollout.order.clone() {
        Some(order) => order,
        None => {
            let known: Vec<(String, Role, u32, Option<String>)> = record
                .nodes
                .iter()
                .filter(|n| n.state != crate::record::NodeState::Terminated)
                .map(|n| (n.instance_id.clone(), n.role, n.index, n.channel.clone()))
                .collect();
            let order = order(&known, &rollout.to);
            records::note(
                store,
                &state.cluster_id,
                STAGE,
                Phase::Progress,
                format!(
                    "upgrading {} node(s) from {} to {}: control planes one at a time, then workers {} at a time: {}",
                    order.len(),
                    rollout.from,
                    rollout.to,
                    rollout.max_unavailable,
                    order.join(", ")
                ),
            )
            .await?;
            rollout.order = Some(order.clone());
            order
        }
    };
    // Each node: three commands, a drain, a refresh and a wait for Ready.
    let per_node = timing
        .command_timeout_seconds
        .saturating_mul(3)
        .saturating_add(timing.ready_timeout_seconds);
    state
        .poll
        .tick(now, per_node.saturating_mul(order.len().max(1) as u32));

    // Bounded: every pass either sends or waits on a command, or moves the rollout one step.
    for _ in 0..(4 * order.len() + 8) {
        if rollout.batch.is_empty() {
            rollout.batch = next_batch(&order, &rollout.done, &roles, rollout.max_unavailable);
            rollout.step = RolloutStep::Drain;
            rollout.stepped.clear();
            if rollout.batch.is_empty() {
                let detail = format!("{} node(s) upgraded to {}", rollout.done.len(), rollout.to);
                records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
                info.upgrade = Some(rollout);
                state.update = Some(info);
                state.poll.finish();
                return Ok(state);
            }
        }
        let Some(current) = rollout.current().cloned() else {
            // The whole batch is through the step.
            match rollout.step {
                RolloutStep::Drain => rollout.step = RolloutStep::Refresh,
                RolloutStep::Refresh => rollout.step = RolloutStep::Uncordon,
                RolloutStep::Uncordon => {
                    if let Some((node, reason)) = rollout.failed.clone() {
                        let upgraded: Vec<&String> = order
                            .iter()
                            .filter(|id| on_channel(&record, id, &rollout.to))
                            .collect();
                        let upgraded = if upgraded.is_empty() {
                            "none".to_string()
                        } else {
                            upgraded
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        return Err(StageError::CommandFailed(format!(
                            "the rollout stopped at {node} ({}), back in service on {}: {reason}; upgraded to {}: {upgraded}",
                            position(&order, &node),
                            rollout.from,
                            rollout.to
                        )));
                    }
                    let batch = std::mem::take(&mut rollout.batch);
                    rollout.done.extend(batch);
                }
            }
            rollout.stepped.clear();
            continue;
        };
        let node = record
            .nodes
            .iter()
            .find(|n| n.instance_id == current)
            .cloned()
            .ok_or_else(|| {
                StageError::InvalidState(format!("node {current} is no longer in the record"))
            })?;
        let ip = node
            .private_ip
            .clone()
            .ok_or_else(|| StageError::Internal(format!("{current} has no private IP")))?;
        let at = position(&order, &current);
        // Another control plane acts on the node, unless it is the only one.
        let operator = nodes::operator(instances, &state.cluster_id, Some(&current)).await?;
        let step = rollout.step;
        // Every command of the rollout: its key names the step, the update and the node.
        let command = |on: &str, script, what: &str, env, timeout_seconds| Wanted {
            cluster_id: state.cluster_id.clone(),
            instance_id: on.to_string(),
            script,
            key: resources::command_key(
                &state.cluster_id,
                &format!("{what} {update_id}"),
                &current,
            ),
            env,
            timeout_seconds,
            secrets: Vec::new(),
        };
        let wanted = match step {
            RolloutStep::Drain => command(
                &operator.instance_id,
                Script::ManageNode,
                "drain",
                vec![
                    ("ACTION", "drain".into()),
                    ("NODE_IP", ip.clone()),
                    (
                        "DRAIN_TIMEOUT",
                        drain_timeout(timing.command_timeout_seconds).to_string(),
                    ),
                ],
                timing.command_timeout_seconds,
            ),
            RolloutStep::Refresh => command(
                &current,
                Script::Upgrade,
                "upgrade",
                vec![
                    ("MK8S_CHANNEL", rollout.to.clone()),
                    ("ROLE", node.role.as_str().into()),
                    ("WAIT_TIMEOUT", timing.ready_timeout_seconds.to_string()),
                ],
                timing.command_timeout_seconds,
            ),
            RolloutStep::Uncordon => {
                // Back on the version it now runs: the new one, or the old one when its refresh
                // failed or was skipped after another's failed.
                let expect = if on_channel(&record, &current, &rollout.to) {
                    &rollout.to
                } else {
                    &rollout.from
                };
                command(
                    &operator.instance_id,
                    Script::ManageNode,
                    "uncordon",
                    vec![
                        ("ACTION", "uncordon".into()),
                        ("NODE_IP", ip.clone()),
                        ("WAIT_TIMEOUT", timing.ready_timeout_seconds.to_string()),
                        ("EXPECT_VERSION", kubelet_prefix(expect)),
                    ],
                    timing
                        .command_timeout_seconds
                        .max(timing.ready_timeout_seconds + 60),
                )
            }
        };
        let polled = commands::poll(commands, instances, &mut state, wanted, now).await;
        let stdout = match polled {
            Ok(Some(stdout)) => stdout,
            Ok(None) => {
                if state.poll.expired(now) {
                    return Err(StageError::CommandTimedOut(format!(
                        "the upgrade of {current} did not finish in time"
                    )));
                }
                break;
            }
            // The refresh failed and snapd reverted it: the node is healthy on its old version. The
            // batch goes back into service (those not refreshed yet are left as they are) before
            // the rollout stops.
            Err(StageError::CommandFailed(reason)) if step == RolloutStep::Refresh => {
                records::note(
                    store,
                    &state.cluster_id,
                    STAGE,
                    Phase::Progress,
                    format!(
                        "{current} ({at}) was not upgraded: {reason}; putting the batch back into service"
                    ),
                )
                .await?;
                state.command = None;
                rollout.failed = Some((current.clone(), reason));
                rollout.step = RolloutStep::Uncordon;
                rollout.stepped.clear();
                continue;
            }
            Err(e) => return Err(e),
        };
        let result = scripts::result_of(&stdout).unwrap_or_default();
        let detail = match step {
            RolloutStep::Drain => {
                let drain = result
                    .get("drain")
                    .cloned()
                    .unwrap_or_else(|| "drained".into());
                let notes: Vec<&str> = stdout
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("note: "))
                    .collect();
                let mut detail = format!(
                    "{current} ({} {}, {at}) {drain} by {}",
                    node.role.as_str(),
                    node.index,
                    operator.instance_id
                );
                if !notes.is_empty() {
                    detail.push_str(&format!(" ({})", notes.join("; ")));
                }
                detail
            }
            RolloutStep::Refresh => {
                let to = rollout.to.clone();
                record = records::modify(store, &state.cluster_id, |r| {
                    let Some(n) = r.nodes.iter_mut().find(|n| n.instance_id == current) else {
                        return Ok(false);
                    };
                    let changed = n.channel.as_deref() != Some(to.as_str());
                    n.channel = Some(to.clone());
                    Ok(changed)
                })
                .await?;
                format!("{current} ({at}) refreshed to {to}")
            }
            RolloutStep::Uncordon => {
                let version = result.get("version").cloned().unwrap_or_default();
                format!("{current} ({at}) Ready on {version}, uncordoned")
            }
        };
        records::note(store, &state.cluster_id, STAGE, Phase::Progress, detail).await?;
        rollout.stepped.push(current);
    }
    info.upgrade = Some(rollout);
    state.update = Some(info);
    Ok(state)
}

/// `3 of 5`: where a node is in the rollout.
fn position(order: &[String], id: &str) -> String {
    let at = order.iter().position(|o| o == id).map_or(0, |i| i + 1);
    format!("{at} of {}", order.len())
}

/// Whether the record says the node runs `channel`.
fn on_channel(record: &crate::record::ClusterRecord, id: &str, channel: &str) -> bool {
    record
        .nodes
        .iter()
        .any(|n| n.instance_id == id && n.channel.as_deref() == Some(channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Change;
    use crate::ports::{ClusterStore, CommandStatus};
    use crate::record::{NodeState, Status};
    use crate::stages::{begin_update, fixtures};

    /// A `control_planes`+`workers` cluster on 1.32/stable, ACTIVE, with an upgrade to
    /// 1.33/stable begun.
    async fn upgrading(
        control_planes: u32,
        workers: u32,
        max_unavailable: u32,
    ) -> (
        crate::fakes::FakeCloud,
        crate::fakes::FakeStore,
        CreateState,
    ) {
        let (cloud, store, mut state) = fixtures::online(control_planes, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, workers).await;
        fixtures::set_status(&store, &state.cluster_id, Status::Active).await;
        let mut r = store.get(&state.cluster_id).await.unwrap().unwrap();
        r.nodes.iter_mut().for_each(|n| n.state = NodeState::Ready);
        store.update(&r).await.unwrap();
        let change = Change::Upgrade {
            from: "1.32/stable".into(),
            to: "1.33/stable".into(),
            max_unavailable,
        };
        begin_update::tests::start_change(&store, &state.cluster_id, &change).await;
        let state = begin_update::run(
            &fixtures::records(&store),
            begin_update::tests::event(&state.cluster_id),
        )
        .await
        .unwrap();
        (cloud, store, state)
    }

    /// Polls (each poll run twice) until the stage is done or fails.
    async fn roll(
        cloud: &crate::fakes::FakeCloud,
        store: &crate::fakes::FakeStore,
        mut state: CreateState,
    ) -> Result<CreateState, StageError> {
        for _ in 0..60 {
            let _ = run(&fixtures::ports(cloud, store), state.clone()).await?;
            state = run(&fixtures::ports(cloud, store), state).await?;
            if state.poll.done {
                return Ok(state);
            }
        }
        panic!("the rollout did not end");
    }

    #[test]
    fn control_planes_go_first_and_upgraded_nodes_are_left_out() {
        let n = |id: &str, role, index, channel: &str| {
            (id.to_string(), role, index, Some(channel.to_string()))
        };
        let nodes = [
            n("w1", Role::Worker, 1, "1.32/stable"),
            n("cp1", Role::ControlPlane, 1, "1.32/stable"),
            n("w0", Role::Worker, 0, "1.33/stable"),
            n("cp0", Role::ControlPlane, 0, "1.32/stable"),
        ];
        assert_eq!(order(&nodes, "1.33/stable"), vec!["cp0", "cp1", "w1"]);
        assert_eq!(kubelet_prefix("1.33/stable"), "v1.33.");
    }

    #[tokio::test]
    async fn one_node_at_a_time_drained_refreshed_uncordoned() {
        let (cloud, store, state) = upgrading(3, 2, 1).await;
        let out = roll(&cloud, &store, state).await.unwrap();
        let rollout = out.update.unwrap().upgrade.unwrap();
        assert_eq!(rollout.done.len(), 5);
        let record = store.get(&out.cluster_id).await.unwrap().unwrap();
        assert!(record
            .nodes
            .iter()
            .all(|n| n.channel.as_deref() == Some("1.33/stable")));
        // Three commands per node, in order; each sent once however often a poll ran.
        let sent: Vec<(String, String)> = cloud
            .commands()
            .into_iter()
            .filter(|c| c.script == "manage-node" || c.script == "upgrade")
            .map(|c| {
                let action = if c.script == "upgrade" {
                    "upgrade".to_string()
                } else if c.text.contains("ACTION='drain'") {
                    "drain".to_string()
                } else {
                    "uncordon".to_string()
                };
                (action, c.instance_id)
            })
            .collect();
        assert_eq!(sent.len(), 15);
        let order = rollout.order.unwrap();
        for (i, node) in order.iter().enumerate() {
            let steps: Vec<&str> = sent[i * 3..i * 3 + 3]
                .iter()
                .map(|(a, _)| a.as_str())
                .collect();
            assert_eq!(steps, ["drain", "upgrade", "uncordon"]);
            assert_eq!(&sent[i * 3 + 1].1, node, "the refresh runs on the node");
            assert_ne!(&sent[i * 3].1, node, "another control plane drains it");
        }
        let roles: Vec<Role> = order
            .iter()
            .map(|id| {
                record
                    .nodes
                    .iter()
                    .find(|n| &n.instance_id == id)
                    .unwrap()
                    .role
            })
            .collect();
        assert_eq!(roles[..3], [Role::ControlPlane; 3]);
        assert_eq!(roles[3..], [Role::Worker; 2]);
    }

    #[tokio::test]
    async fn a_failed_refresh_puts_the_node_back_and_stops_the_rollout() {
        let (cloud, store, state) = upgrading(1, 2, 1).await;
        let record = store.get(&state.cluster_id).await.unwrap().unwrap();
        let second_worker = record
            .nodes
            .iter()
            .find(|n| n.role == Role::Worker && n.index == 1)
            .unwrap()
            .instance_id
            .clone();
        let failing = second_worker.clone();
        cloud.respond_with(move |cmd, all| {
            if cmd.script == "upgrade" && cmd.instance_id == failing {
                CommandStatus::Failed {
                    status: "Failed".into(),
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: "upgrade: snap refresh microk8s --channel=1.33/stable failed on 1.32/stable (snapd keeps the node on it)\n".into(),
                }
            } else {
                crate::fakes::default_outcome(cmd, all)
            }
        });
        let err = roll(&cloud, &store, state).await.unwrap_err();
        assert_eq!(err.name(), "CommandFailed");
        let text = err.to_string();
        assert!(
            text.contains(&format!("stopped at {second_worker} (3 of 3)")),
            "{text}"
        );
        assert!(text.contains("back in service on 1.32/stable"), "{text}");
        // Put back into service: uncordoned, waiting for its old version.
        let uncordons: Vec<_> = cloud
            .commands_of("manage-node")
            .into_iter()
            .filter(|c| c.text.contains("ACTION='uncordon'"))
            .collect();
        assert_eq!(uncordons.len(), 3);
        assert!(uncordons[2].text.contains("EXPECT_VERSION='v1.32.'"));
        let record = store.get(&record.id).await.unwrap().unwrap();
        let upgraded: Vec<_> = record
            .nodes
            .iter()
            .filter(|n| n.channel.as_deref() == Some("1.33/stable"))
            .collect();
        assert_eq!(upgraded.len(), 2, "finished nodes stay upgraded");
        assert!(upgraded.iter().all(|n| n.instance_id != second_worker));
    }

    #[test]
    fn batches_hold_one_control_plane_or_up_to_max_unavailable_workers() {
        let ids = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let order = ids(&["cp0", "cp1", "w0", "w1", "w2"]);
        let roles: Vec<(String, Role)> = order
            .iter()
            .map(|id| {
                let role = if id.starts_with("cp") {
                    Role::ControlPlane
                } else {
                    Role::Worker
                };
                (id.clone(), role)
            })
            .collect();
        assert_eq!(next_batch(&order, &[], &roles, 2), ids(&["cp0"]));
        assert_eq!(
            next_batch(&order, &ids(&["cp0", "cp1"]), &roles, 2),
            ids(&["w0", "w1"])
        );
        assert_eq!(
            next_batch(&order, &ids(&["cp0", "cp1", "w0", "w1"]), &roles, 2),
            ids(&["w2"])
        );
        assert_eq!(
            next_batch(&order, &ids(&["cp0", "cp1"]), &roles, 0),
            ids(&["w0"])
        );
        assert!(next_batch(&order, &order, &roles, 2).is_empty());
    }

    #[tokio::test]
    async fn workers_go_max_unavailable_at_a_time_control_planes_alone() {
        let (cloud, store, state) = upgrading(1, 4, 2).await;
        let out = roll(&cloud, &store, state).await.unwrap();
        let record = store.get(&out.cluster_id).await.unwrap().unwrap();
        let worker = |i: u32| {
            record
                .nodes
                .iter()
                .find(|n| n.role == Role::Worker && n.index == i)
                .unwrap()
                .instance_id
                .clone()
        };
        let steps: Vec<(String, String)> = cloud
            .commands()
            .into_iter()
            .filter(|c| c.script == "manage-node" || c.script == "upgrade")
            .map(|c| {
                let step = if c.script == "upgrade" {
                    "upgrade"
                } else if c.text.contains("ACTION='drain'") {
                    "drain"
                } else {
                    "uncordon"
                };
                let node = if c.script == "upgrade" {
                    c.instance_id.clone()
                } else {
                    record
                        .nodes
                        .iter()
                        .find(|n| {
                            c.text.contains(&format!(
                                "NODE_IP='{}'",
                                n.private_ip.as_deref().unwrap_or("-")
                            ))
                        })
                        .unwrap()
                        .instance_id
                        .clone()
                };
                (step.to_string(), node)
            })
            .collect();
        let cp = record
            .nodes
            .iter()
            .find(|n| n.role == Role::ControlPlane)
            .unwrap();
        let s = |step: &str, node: &String| (step.to_string(), node.clone());
        let (w0, w1, w2, w3) = (worker(0), worker(1), worker(2), worker(3));
        assert_eq!(
            steps,
            vec![
                s("drain", &cp.instance_id),
                s("upgrade", &cp.instance_id),
                s("uncordon", &cp.instance_id),
                s("drain", &w0),
                s("drain", &w1),
                s("upgrade", &w0),
                s("upgrade", &w1),
                s("uncordon", &w0),
                s("uncordon", &w1),
                s("drain", &w2),
                s("drain", &w3),
                s("upgrade", &w2),
                s("upgrade", &w3),
                s("uncordon", &w2),
                s("uncordon", &w3),
            ]
        );
        assert!(record
            .nodes
            .iter()
            .all(|n| n.channel.as_deref() == Some("1.33/stable")));
    }
}
