//! The provisioning stages: one plain async function per Step Functions task, generic over the
//! ports, each safe to run twice. A stage reads the world (the record, instances by tag, commands
//! by their comment), compares it with what the state asks for, and acts on the difference.
//!
//! Create: [`register`] → [`resolve_ami`] → [`security_group`] → [`launch_nodes`] (control planes)
//! → [`await_nodes`] → [`load_balancer`] (`api_endpoint: "nlb"`) → [`bootstrap`] → [`join_nodes`] (control planes) → [`launch_nodes`] (workers)
//! → [`await_nodes`] → [`join_nodes`] (workers) → [`verify`] → [`store_kubeconfig`] → [`activate`];
//! any failure → [`mark_failed`] → teardown.
//! Teardown (delete, or after a failed create): [`begin_delete`] → [`terminate_nodes`] →
//! [`await_terminated`] → [`delete_load_balancer`] → [`delete_security_group`] →
//! [`delete_parameters`] → [`finish_delete`].
//! Update (scale a live cluster): [`begin_update`] → up: [`resolve_ami`] → [`launch_nodes`] →
//! [`await_nodes`] → [`join_nodes`] → [`verify`] → [`load_balancer`]; down: [`remove_workers`] → [`finish_update`];
//! any failure → [`fail_update`] (the cluster stays `ACTIVE`).

pub mod activate;
pub mod apply_addons;
pub mod await_nodes;
pub mod await_terminated;
pub mod begin_delete;
pub mod begin_update;
pub mod bootstrap;
pub mod delete_load_balancer;
pub mod delete_parameters;
pub mod delete_security_group;
pub mod fail_update;
pub mod finish_delete;
pub mod finish_update;
pub mod join_nodes;
pub mod launch_nodes;
pub mod load_balancer;
pub mod mark_failed;
pub mod register;
pub mod remove_workers;
pub mod resolve_ami;
pub mod security_group;
pub mod store_kubeconfig;
pub mod terminate_nodes;
pub mod upgrade_nodes;
pub mod verify;

mod commands;
mod nodes;
pub(crate) mod records;

use crate::config::StageConfig;

/// What a stage works with, as one value: the ports of the cluster's region, the control plane's
/// own secrets and records, and the deployment settings. A Lambda builds its clients once per
/// cold start and lends them here per invocation (the regional ones for the cluster's region);
/// tests lend the fakes. A stage names bounds only for the ports it uses.
pub struct Ports<'a, E, R, P, S> {
    /// EC2 in the cluster's region: instances ([`crate::ports::Instances`]) and the security
    /// group ([`crate::ports::SecurityGroups`]).
    pub ec2: &'a E,
    /// SSM in the cluster's region: Run Command on the nodes ([`crate::ports::NodeCommands`]) and
    /// the public AMI parameters ([`crate::ports::Parameters`]).
    pub ssm: &'a R,
    /// Parameter Store in the control plane's region: the cluster's secrets (the kubeconfig and
    /// its one-time transport key; join tokens are never stored, see `join_nodes`).
    pub secrets: &'a P,
    /// The cluster records ([`crate::ports::ClusterStore`]).
    pub store: &'a S,
    /// The deployment settings.
    pub config: &'a StageConfig,
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod pipeline_tests {
    //! The whole create and teardown, stage after stage as the state machines chain them, with
    //! every stage invoked twice on the same input (as a Step Functions retry would).

    use super::fixtures::{poll_until_done, twice};
    use super::*;
    use crate::fakes::{FakeCloud, FakeStore};
    use crate::record::{Role, Status};
    use crate::state::{BeginDeleteEvent, RegisterEvent, TeardownState};
    use serde_json::json;

    #[tokio::test]
    async fn create_then_delete_with_every_stage_run_twice() {
        let cloud = FakeCloud::new();
        let store = FakeStore::default();
        let config = fixtures::config();
        let ports = fixtures::ports(&cloud, &store);
        let input = json!({"name": "edge", "control_planes": 3, "workers": 2});
        let ev = || RegisterEvent {
            input: input.clone(),
            execution_arn: "arn:create".into(),
        };
        let state = twice(|| register::run(&ports, ev())).await;
        cloud.put_public(
            &resolve_ami::ami_parameter(&config.ami_parameter_prefix, &state.spec),
            "ami-1",
        );
        let state = twice(|| resolve_ami::run(&ports, state.clone())).await;
        let state = twice(|| security_group::run(&ports, state.clone())).await;
        let mut state = state;
        for role in [Role::ControlPlane, Role::Worker] {
            state.target = Some(role);
            state = twice(|| launch_nodes::run(&ports, state.clone())).await;
            state = poll_until_done(state, |s| async { await_nodes::run(&ports, s).await }).await;
            if role == Role::ControlPlane {
                state = poll_until_done(state, |s| async { bootstrap::run(&ports, s).await }).await;
            }
            state = poll_until_done(state, |s| async { join_nodes::run(&ports, s).await }).await;
        }
        state = poll_until_done(state, |s| async { verify::run(&ports, s).await }).await;
        state = poll_until_done(state, |s| async { store_kubeconfig::run(&ports, s).await }).await;
        let out = twice(|| activate::run(&ports, state.clone())).await;
        assert_eq!(out.status, Status::Active);
        assert_eq!(out.nodes, 5);
        assert_eq!(cloud.live_instances().len(), 5, "one instance set");
        assert_eq!(cloud.commands_of("bootstrap").len(), 1, "one bootstrap");
        let mut joined: Vec<String> = cloud
            .commands_of("join")
            .iter()
            .map(|c| c.instance_id.clone())
            .collect();
        joined.sort();
        let before = joined.len();
        joined.dedup();
        assert_eq!(
            (before, joined.len()),
            (4, 4),
            "one join per node but the first"
        );
        assert!(
            cloud
                .commands_of("join")
                .iter()
                .filter(|c| c.text.contains("NODE_ROLE='worker'"))
                .count()
                == 2
        );
        let record = store.records()[0].clone();
        assert_eq!(record.status, Status::Active);
        assert!(record
            .nodes
            .iter()
            .all(|n| n.state == crate::record::NodeState::Ready));

        let del = || BeginDeleteEvent {
            input: json!({"name": "edge", "timing": {"poll_seconds": 1}}),
            execution_arn: "arn:delete".into(),
        };
        let t: TeardownState = twice(|| begin_delete::run(&ports, del())).await;
        let t = twice(|| terminate_nodes::run(&ports, t.clone())).await;
        let t = twice(|| await_terminated::run(&ports, t.clone())).await;
        assert!(t.poll.done);
        let t = twice(|| delete_security_group::run(&ports, t.clone())).await;
        let t = twice(|| delete_parameters::run(&ports, t.clone())).await;
        let done = twice(|| finish_delete::run(&ports, t.clone())).await;
        assert_eq!(done.status, Status::Deleted);
        assert!(cloud.live_instances().is_empty());
        assert!(cloud.groups().is_empty());
        assert!(cloud
            .parameters()
            .keys()
            .all(|k| !k.starts_with(&config.deployment.parameter_root())));
        // The name is free again.
        let again = register::run(
            &ports,
            RegisterEvent {
                input: input.clone(),
                execution_arn: "arn:create-2".into(),
            },
        )
        .await
        .unwrap();
        assert_ne!(again.cluster_id, record.id);
    }
}
