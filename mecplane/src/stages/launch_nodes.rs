//! Stage `launch-control-planes` / `launch-workers`: ensures the cluster has the instances of one
//! role it asked for. It counts what is already tagged for the cluster, launches only the
//! difference, and gives each new instance the lowest free index — so a retry after a launch that
//! succeeded but did not return launches nothing.

use crate::error::StageError;
use crate::ports::{ClusterStore, Instance, Instances, LaunchRequest};
use crate::record::{Node, NodeState, Phase, Role};
use crate::resources;
use crate::state::CreateState;

use super::{nodes, records, Ports};

/// The stage's name for a role.
pub fn stage(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "launch-control-planes",
        Role::Worker => "launch-workers",
    }
}

/// What to do about one role's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// How many instances to launch.
    pub launch: u32,
    /// Indexes to give instances that have none (existing untagged ones first, then new ones).
    pub free_indexes: Vec<u32>,
}

/// Plans a role's launch from the live instances it has (pure).
pub fn plan(wanted: u32, existing: &[Instance]) -> LaunchPlan {
    let taken: Vec<u32> = existing.iter().filter_map(|i| i.index).collect();
    let launch = wanted.saturating_sub(existing.len() as u32);
    let untagged = existing.iter().filter(|i| i.index.is_none()).count() as u32;
    let free_indexes = (0..)
        .filter(|i| !taken.contains(i))
        .take((untagged + launch) as usize)
        .collect();
    LaunchPlan {
        launch,
        free_indexes,
    }
}

/// Runs the stage for `state.target`.
pub async fn run<E: Instances, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, store, config) = (ports.ec2, ports.store, ports.config);
    let role = state.target_role();
    let stage = stage(role);
    records::enter(store, &state.cluster_id, stage).await?;
    let wanted = match role {
        Role::ControlPlane => state.spec.control_planes,
        Role::Worker => state.spec.workers,
    };
    let existing = nodes::live(instances, &state.cluster_id, role).await?;
    let plan = plan(wanted, &existing);
    let mut untagged: Vec<Instance> = existing
        .iter()
        .filter(|i| i.index.is_none())
        .cloned()
        .collect();
    if plan.launch > 0 {
        let ami_id = state
            .ami_id
            .clone()
            .ok_or_else(|| StageError::Internal("no AMI resolved".into()))?;
        let security_group_id = state
            .security_group_id
            .clone()
            .ok_or_else(|| StageError::Internal("no security group".into()))?;
        let request = LaunchRequest {
            cluster_id: state.cluster_id.clone(),
            cluster_name: state.spec.name.clone(),
            role,
            count: plan.launch,
            ami_id,
            instance_type: state.spec.instance_type.clone(),
            security_group_id,
            subnet_id: state.spec.subnet_id.clone(),
            root_volume_gib: state.spec.root_volume_gib,
            instance_profile: config.node_instance_profile.clone(),
            tags: state
                .spec
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            // The same world gives the same token: EC2 answers a repeated launch with the first.
            // An update's launch names the update: after a scale down the same count recurs.
            client_token: match &state.update {
                None => format!("{}-{}-{}", state.cluster_id, role.as_str(), existing.len()),
                Some(u) => format!(
                    "{}-{}-{}-{}",
                    state.cluster_id,
                    role.as_str(),
                    existing.len(),
                    u.id
                ),
            },
        };
        untagged.extend(instances.launch(&request).await?);
    }
    for (instance, index) in untagged.iter_mut().zip(plan.free_indexes.iter().copied()) {
        instances
            .tag(
                &instance.instance_id,
                &[
                    (resources::TAG_INDEX.to_string(), index.to_string()),
                    (
                        resources::TAG_NAME.to_string(),
                        resources::node_name(&state.spec.name, role, index),
                    ),
                ],
            )
            .await?;
        instance.index = Some(index);
    }
    let all: Vec<Instance> = existing
        .into_iter()
        .filter(|i| i.index.is_some())
        .chain(untagged)
        .collect();
    records::modify(store, &state.cluster_id, |r| {
        for i in &all {
            if !r.nodes.iter().any(|n| n.instance_id == i.instance_id) {
                r.upsert_node(Node {
                    instance_id: i.instance_id.clone(),
                    role,
                    index: i.index.unwrap_or_default(),
                    private_ip: i.private_ip.clone(),
                    public_ip: i.public_ip.clone(),
                    state: NodeState::Pending,
                    channel: Some(state.spec.microk8s_channel.clone()),
                });
            }
        }
        Ok(true)
    })
    .await?;
    let ids: Vec<&str> = all.iter().map(|i| i.instance_id.as_str()).collect();
    let detail = format!(
        "{} {} node(s): {} ({} launched now)",
        all.len(),
        role.as_str(),
        ids.join(", "),
        plan.launch
    );
    records::note(store, &state.cluster_id, stage, Phase::Finished, detail).await?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CloudError;
    use crate::ports::InstanceState;
    use crate::stages::fixtures;

    fn instance(id: &str, index: Option<u32>) -> Instance {
        Instance {
            instance_id: id.into(),
            role: Some(Role::Worker),
            index,
            state: InstanceState::Running,
            private_ip: None,
            public_ip: None,
            private_dns: None,
        }
    }

    #[test]
    fn plan_launches_the_difference_and_fills_index_gaps() {
        assert_eq!(
            plan(3, &[]),
            LaunchPlan {
                launch: 3,
                free_indexes: vec![0, 1, 2]
            }
        );
        assert_eq!(
            plan(3, &[instance("a", Some(1))]),
            LaunchPlan {
                launch: 2,
                free_indexes: vec![0, 2]
            }
        );
        assert_eq!(
            plan(2, &[instance("a", Some(0)), instance("b", None)]),
            LaunchPlan {
                launch: 0,
                free_indexes: vec![1]
            }
        );
        assert_eq!(
            plan(1, &[instance("a", Some(0)), instance("b", Some(1))]),
            LaunchPlan {
                launch: 0,
                free_indexes: vec![]
            }
        );
    }

    #[tokio::test]
    async fn running_twice_launches_once_with_secure_defaults() {
        let (cloud, store, state) = fixtures::ready_to_launch(1, 2).await;
        let mut workers = state.clone();
        workers.target = Some(Role::Worker);
        run(&fixtures::ports(&cloud, &store), workers.clone())
            .await
            .unwrap();
        run(&fixtures::ports(&cloud, &store), workers)
            .await
            .unwrap();
        let launched = cloud.live_instances();
        assert_eq!(launched.len(), 2);
        let mut indexes: Vec<_> = launched
            .iter()
            .map(|i| i.tags[resources::TAG_INDEX].clone())
            .collect();
        indexes.sort();
        assert_eq!(indexes, vec!["0", "1"]);
        assert!(launched
            .iter()
            .all(|i| i.tags[resources::TAG_ROLE] == "worker" && i.tags["team"] == "edge"));
        assert_eq!(store.records()[0].nodes.len(), 2);
    }

    #[tokio::test]
    async fn capacity_errors_are_named_and_not_transient() {
        let (cloud, store, state) = fixtures::ready_to_launch(1, 0).await;
        cloud.fail_next_launch(CloudError::InsufficientCapacity(
            "no t4g.medium in us-east-1a".into(),
        ));
        let err = run(&fixtures::ports(&cloud, &store), state)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "InsufficientCapacity");
        assert!(cloud.live_instances().is_empty());
    }
}
