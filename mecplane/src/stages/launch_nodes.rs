//! Stage `launch-control-planes` / `launch-workers`: ensures the cluster has the instances of one
//! role it asked for. It counts what is already tagged for the cluster, launches only the
//! difference, and gives each new instance the lowest free index — so a retry after a launch that
//! succeeded but did not return launches nothing. Each index has its subnet
//! ([`ClusterSpec::subnet_for`](crate::spec::ClusterSpec::subnet_for): control planes one per
//! subnet, workers round-robin), so the instances of one subnet are launched together and an
//! instance left untagged by an interrupted launch takes a free index of its own subnet.

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
    /// Live instances without an index (an interrupted launch) and the index each takes.
    pub adopt: Vec<(String, u32)>,
    /// What to launch: one request per subnet.
    pub launches: Vec<Launch>,
}

/// Instances to launch into one subnet, and the indexes they take, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `None`: the default subnet.
    pub subnet_id: Option<String>,
    pub indexes: Vec<u32>,
}

impl LaunchPlan {
    /// How many instances it launches.
    pub fn launching(&self) -> usize {
        self.launches.iter().map(|l| l.indexes.len()).sum()
    }
}

/// Plans a role's launch from the live instances it has (pure): the lowest free indexes, each
/// in the subnet `subnet_for` gives it.
pub fn plan(
    wanted: u32,
    existing: &[Instance],
    subnet_for: impl Fn(u32) -> Option<String>,
) -> LaunchPlan {
    let taken: Vec<u32> = existing.iter().filter_map(|i| i.index).collect();
    let launch = wanted.saturating_sub(existing.len() as u32);
    let untagged: Vec<&Instance> = existing.iter().filter(|i| i.index.is_none()).collect();
    let mut free: Vec<u32> = (0..)
        .filter(|i| !taken.contains(i))
        .take(untagged.len() + launch as usize)
        .collect();
    let mut adopt = Vec::new();
    for instance in untagged {
        let at = free
            .iter()
            .position(|i| subnet_for(*i) == instance.subnet_id)
            .unwrap_or(0);
        if at < free.len() {
            adopt.push((instance.instance_id.clone(), free.remove(at)));
        }
    }
    let mut launches: Vec<Launch> = Vec::new();
    for index in free {
        let subnet_id = subnet_for(index);
        match launches.iter_mut().find(|l| l.subnet_id == subnet_id) {
            Some(l) => l.indexes.push(index),
            None => launches.push(Launch {
                subnet_id,
                indexes: vec![index],
            }),
        }
    }
    LaunchPlan { adopt, launches }
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
    let plan = plan(wanted, &existing, |index| {
        state.spec.subnet_for(role, index).map(String::from)
    });
    // Instances given their index now: adopted ones, then each launch's.
    let mut indexed: Vec<(Instance, u32)> = plan
        .adopt
        .iter()
        .filter_map(|(id, index)| {
            existing
                .iter()
                .find(|i| i.instance_id == *id)
                .map(|i| (i.clone(), *index))
        })
        .collect();
    if !plan.launches.is_empty() {
        let ami_id = state
            .ami_id
            .clone()
            .ok_or_else(|| StageError::Internal("no AMI resolved".into()))?;
        let security_group_id = state
            .security_group_id
            .clone()
            .ok_or_else(|| StageError::Internal("no security group".into()))?;
        for (k, launch) in plan.launches.iter().enumerate() {
            let request = LaunchRequest {
                cluster_id: state.cluster_id.clone(),
                cluster_name: state.spec.name.clone(),
                role,
                count: launch.indexes.len() as u32,
                ami_id: ami_id.clone(),
                instance_type: state.spec.instance_type.clone(),
                security_group_id: security_group_id.clone(),
                subnet_id: launch.subnet_id.clone(),
                root_volume_gib: state.spec.root_volume_gib,
                instance_profile: config.node_instance_profile.clone(),
                tags: state
                    .spec
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                // The same world gives the same token: EC2 answers a repeated launch with the
                // first. An update's launch names the update: after a scale down the same count
                // recurs. One token per subnet's launch (`k`, its place in the plan).
                client_token: match &state.update {
                    None => format!(
                        "{}-{}-{}-{k}",
                        state.cluster_id,
                        role.as_str(),
                        existing.len()
                    ),
                    Some(u) => format!(
                        "{}-{}-{}-{k}-{}",
                        state.cluster_id,
                        role.as_str(),
                        existing.len(),
                        u.id
                    ),
                },
            };
            let launched = instances.launch(&request).await?;
            indexed.extend(launched.into_iter().zip(launch.indexes.iter().copied()));
        }
    }
    for (instance, index) in &mut indexed {
        instances
            .tag(
                &instance.instance_id,
                &[
                    (resources::TAG_INDEX.to_string(), index.to_string()),
                    (
                        resources::TAG_NAME.to_string(),
                        resources::node_name(&state.spec.name, role, *index),
                    ),
                ],
            )
            .await?;
        instance.index = Some(*index);
    }
    let all: Vec<Instance> = existing
        .into_iter()
        .filter(|i| i.index.is_some())
        .chain(indexed.into_iter().map(|(i, _)| i))
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
                    zone: i.zone.clone(),
                });
            }
        }
        Ok(true)
    })
    .await?;
    let mut zones: Vec<&str> = all.iter().filter_map(|i| i.zone.as_deref()).collect();
    zones.sort_unstable();
    zones.dedup();
    let ids: Vec<&str> = all.iter().map(|i| i.instance_id.as_str()).collect();
    let detail = format!(
        "{} {} node(s): {} ({} launched now){}",
        all.len(),
        role.as_str(),
        ids.join(", "),
        plan.launching(),
        if zones.is_empty() {
            String::new()
        } else {
            format!(" in {}", zones.join(", "))
        }
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
            carrier_ip: None,
            private_dns: None,
            zone: None,
            subnet_id: None,
        }
    }

    /// One launch of `indexes` into the default subnet.
    fn default_subnet(adopt: Vec<(String, u32)>, indexes: Vec<u32>) -> LaunchPlan {
        let launches = if indexes.is_empty() {
            vec![]
        } else {
            vec![Launch {
                subnet_id: None,
                indexes,
            }]
        };
        LaunchPlan { adopt, launches }
    }

    #[test]
    fn plan_launches_the_difference_and_fills_index_gaps() {
        let anywhere = |_| None;
        assert_eq!(
            plan(3, &[], anywhere),
            default_subnet(vec![], vec![0, 1, 2])
        );
        assert_eq!(
            plan(3, &[instance("a", Some(1))], anywhere),
            default_subnet(vec![], vec![0, 2])
        );
        assert_eq!(
            plan(2, &[instance("a", Some(0)), instance("b", None)], anywhere),
            default_subnet(vec![("b".into(), 1)], vec![])
        );
        assert_eq!(
            plan(
                1,
                &[instance("a", Some(0)), instance("b", Some(1))],
                anywhere
            ),
            default_subnet(vec![], vec![])
        );
    }

    #[test]
    fn plan_puts_each_index_in_its_subnet_and_adopts_by_subnet() {
        let subnets = ["subnet-a", "subnet-b", "subnet-c"];
        let subnet_for = |i: u32| Some(subnets[i as usize % 3].to_string());
        let launch = |subnet: &str, indexes: Vec<u32>| Launch {
            subnet_id: Some(subnet.into()),
            indexes,
        };
        assert_eq!(
            plan(4, &[], subnet_for).launches,
            [
                launch("subnet-a", vec![0, 3]),
                launch("subnet-b", vec![1]),
                launch("subnet-c", vec![2])
            ]
        );
        // An untagged instance in subnet-c takes index 2 (its subnet's), not the lowest free.
        let mut stray = instance("s", None);
        stray.subnet_id = Some("subnet-c".into());
        let p = plan(3, &[instance("a", Some(0)), stray], subnet_for);
        assert_eq!(p.adopt, [("s".to_string(), 2)]);
        assert_eq!(p.launches, [launch("subnet-b", vec![1])]);
        assert_eq!(p.launching(), 1);
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
    async fn workers_go_round_robin_over_their_subnets_however_often_it_runs() {
        let (cloud, store, mut state) = fixtures::ready_to_launch(1, 3).await;
        state.spec.subnet_ids = vec!["subnet-0000000a".into(), "subnet-0000000b".into()];
        state.target = Some(Role::Worker);
        for _ in 0..2 {
            run(&fixtures::ports(&cloud, &store), state.clone())
                .await
                .unwrap();
        }
        let mut placed: Vec<(String, Option<String>)> = cloud
            .live_instances()
            .iter()
            .map(|i| {
                (
                    i.tags[resources::TAG_INDEX].clone(),
                    i.request.subnet_id.clone(),
                )
            })
            .collect();
        placed.sort();
        let at = |i: &str, s: &str| (i.to_string(), Some(s.to_string()));
        assert_eq!(
            placed,
            [
                at("0", "subnet-0000000a"),
                at("1", "subnet-0000000b"),
                at("2", "subnet-0000000a")
            ]
        );
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
