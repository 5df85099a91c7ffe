//! Stage `begin-update`: the first step of the update state machine. It reads the record, checks
//! the cluster is `UPDATING` with the execution's update `InProgress` (the API wrote both before
//! it started the execution), and turns the record into the working state the provisioning stages
//! take: the spec with the update's `workers`, the security group and the join token parameter by
//! reference, the workers already members, and the update (id, its route for the machine's
//! Choice, and the plan of its kind: a scale's from and to, an upgrade's rollout, an add-on
//! change's disable and enable lists). Safe to run twice: it only records the execution on the update once.

use super::Ports;
use crate::change::Change;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::ClusterStore;
use crate::record::{NodeState, Phase, Role, Status, UpdateStatus};
use crate::resources;
use crate::spec::ValidationError;
use crate::state::{
    AddonPlan, BeginUpdateEvent, CreateState, Rollout, UpdateInfo, UpdateInput, UpdateRoute,
};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "begin-update";

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
    let change = Change::of(&update)?;
    records::enter(store, &record.id, STAGE).await?;

    let mut spec = record.spec.clone();
    let workers = spec.workers;
    let mut info = UpdateInfo {
        id: update.id.clone(),
        route: UpdateRoute::None,
        from: workers,
        to: workers,
        remove: None,
        removed: Vec::new(),
        upgrade: None,
        addons: None,
    };
    // The role the launch and join stages work on.
    let mut target = None;
    let what = match &change {
        Change::Scale { from, to } => {
            spec.workers = *to;
            target = Some(Role::Worker);
            (info.from, info.to) = (*from, *to);
            info.route = UpdateRoute::of_scale(*from, *to);
            let doing = match info.route {
                UpdateRoute::Up => "launching and joining",
                UpdateRoute::Down => "draining, removing and terminating",
                _ => "nothing to change for",
            };
            format!(
                "workers {from} -> {to}; {doing} {} worker(s)",
                from.abs_diff(*to)
            )
        }
        Change::Upgrade {
            from,
            to,
            max_unavailable,
        } => {
            info.route = UpdateRoute::Upgrade;
            info.upgrade = Some(Rollout {
                from: from.clone(),
                to: to.clone(),
                max_unavailable: (*max_unavailable).max(1),
                ..Rollout::default()
            });
            format!(
                "MicroK8s {from} -> {to}; control planes one at a time, then workers {max_unavailable} at a time"
            )
        }
        Change::Addons { from, to } => {
            let (disable, enable) = microk8s::addon_changes(from, to);
            info.route = if disable.is_empty() && enable.is_empty() {
                UpdateRoute::None
            } else {
                UpdateRoute::Addons
            };
            let detail = format!(
                "add-ons: disabling [{}], enabling [{}]",
                disable.join(", "),
                enable.join(", ")
            );
            info.addons = Some(AddonPlan { disable, enable });
            detail
        }
        Change::ReplaceNode {
            instance_id,
            role,
            index,
        } => {
            info.route = UpdateRoute::Replace;
            info.remove = Some(vec![instance_id.clone()]);
            target = Some(*role);
            format!(
                "replacing {} {index} ({instance_id}): remove it from the cluster, terminate it, launch and join a new one",
                role.as_str()
            )
        }
        Change::ExposedPorts { .. } => {
            change.apply(&mut spec);
            info.route = UpdateRoute::Ports;
            format!("{}: the security group's rules follow", change.describe())
        }
    };
    let mut state = CreateState::new(record.id.clone(), spec, timing);
    state.security_group_id = record.security_group_id.clone();
    state.target = target;
    // Nodes already members are not joined again; the join stages take tokens and the join
    // address from a control plane among them (a node being replaced is not one).
    state.joined = record
        .nodes
        .iter()
        .filter(|n| matches!(n.state, NodeState::Joined | NodeState::Ready))
        .filter(|n| {
            info.remove
                .as_ref()
                .is_none_or(|r| !r.contains(&n.instance_id))
        })
        .map(|n| n.instance_id.clone())
        .collect();
    state.update = Some(info);
    let detail = format!("update {}: {what}", update.id);
    records::note(store, &record.id, STAGE, Phase::Finished, detail).await?;
    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fakes::FakeStore;
    use crate::stages::fixtures;
    use serde_json::json;

    /// Puts the record in `UPDATING` with a scale update `InProgress`, as the API does.
    pub(crate) async fn start_update(store: &FakeStore, cluster_id: &str, from: u32, to: u32) {
        start_change(store, cluster_id, &Change::Scale { from, to }).await
    }

    /// Puts the record in `UPDATING` with `change` recorded as an update `InProgress`, as the
    /// API does.
    pub(crate) async fn start_change(store: &FakeStore, cluster_id: &str, change: &Change) {
        let mut r = store.get(cluster_id).await.unwrap().unwrap();
        r.status = Status::Updating;
        r.updates
            .push(change.in_progress("u-0000000000000001".into(), None, None));
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
        assert_eq!((info.from, info.to, info.route), (2, 4, UpdateRoute::Up));
        assert_eq!(first.join, None, "no join under way");
        let record = &store.records()[0];
        assert_eq!(
            record.updates[0].execution_arn.as_deref(),
            Some("arn:update")
        );
        // The Choice reads $.update.route.
        let v = serde_json::to_value(&first).unwrap();
        assert_eq!(v["update"]["route"], "up");
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

    #[tokio::test]
    async fn upgrades_and_addon_changes_take_their_routes() {
        let (_cloud, store, state) = fixtures::registered(1, 2).await;
        fixtures::set_status(&store, &state.cluster_id, Status::Active).await;
        let ports = fixtures::records(&store);
        let upgrade = Change::Upgrade {
            from: "1.32/stable".into(),
            to: "1.33/stable".into(),
            max_unavailable: 1,
        };
        start_change(&store, &state.cluster_id, &upgrade).await;
        let out = run(&ports, event(&state.cluster_id)).await.unwrap();
        let info = out.update.unwrap();
        assert_eq!(info.route, UpdateRoute::Upgrade);
        let rollout = info.upgrade.unwrap();
        assert_eq!(
            (rollout.from.as_str(), rollout.to.as_str()),
            ("1.32/stable", "1.33/stable")
        );
        assert_eq!(rollout.order, None, "upgrade-nodes chooses the order");
        assert_eq!(
            out.spec.microk8s_channel, "1.32/stable",
            "the spec changes when it is done"
        );

        let mut r = store.get(&state.cluster_id).await.unwrap().unwrap();
        r.updates.clear();
        store.update(&r).await.unwrap();
        let addons = Change::Addons {
            from: vec!["dns".into(), "ingress".into()],
            to: vec!["dns".into(), "metallb:10.0.0.1-10.0.0.9".into()],
        };
        start_change(&store, &state.cluster_id, &addons).await;
        let info = run(&ports, event(&state.cluster_id))
            .await
            .unwrap()
            .update
            .unwrap();
        assert_eq!(info.route, UpdateRoute::Addons);
        assert_eq!(
            info.addons.unwrap(),
            AddonPlan {
                disable: vec!["ingress".into()],
                enable: vec!["metallb:10.0.0.1-10.0.0.9".into()],
            }
        );
    }
}
