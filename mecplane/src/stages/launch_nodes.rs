//! Stage `launch-control-planes` / `launch-workers`: ensures the cluster has the instances of one
//! role it asked for. It counts what is already tagged for the cluster, launches only the
//! difference, and gives each new instance the lowest free index — so a retry after a launch that
//! succeeded but did not return launches nothing. Each index has its subnet
//! ([`ClusterSpec::subnet_for`](crate::spec::ClusterSpec::subnet_for): control planes one per
//! subnet, workers round-robin), so the instances of one subnet are launched together and an
//! instance left untagged by an interrupted launch takes a free index of its own subnet.
//!
//! Where a node goes decides how it is reached: the stage asks EC2 for the zones of the subnets it
//! launches into and of the instances it records (the fact is EC2's, read where it is needed, so
//! an update's launch knows it as a create's does). A launch into a Wavelength zone asks for
//! carrier IPs (Wavelength has no public IPv4), and each node's record carries its zone's type
//! and its carrier IP. The zone's type also decides the root volume's EBS type
//! ([`root_volume_type`]: gp3, gp2 in a Wavelength zone, which offers no gp3): the launch asks
//! for it, each node's record says it, and the stage's event names the zones that fell back.

use std::collections::HashMap;

use crate::error::StageError;
use crate::placement::{root_volume_type, volume_fallback, WAVELENGTH_ZONE};
use crate::ports::{ClusterStore, Instance, Instances, LaunchRequest, SecurityGroups, Zones};
use crate::record::{Node, NodeState, Phase, Role};
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

/// The zones of the subnets a plan launches into (subnet → zone name) and the types of those
/// zones and of the instances' own (zone name → type): one `DescribeSubnets` when the plan
/// launches into named subnets, one `DescribeAvailabilityZones` when there is any zone.
async fn zones_of<E: SecurityGroups + Zones>(
    ec2: &E,
    plan: &LaunchPlan,
    instances: &[Instance],
) -> Result<(HashMap<String, String>, HashMap<String, String>), StageError> {
    let mut subnet_ids: Vec<String> = plan
        .launches
        .iter()
        .filter_map(|l| l.subnet_id.clone())
        .collect();
    subnet_ids.sort();
    subnet_ids.dedup();
    let subnet_zones: HashMap<String, String> = if subnet_ids.is_empty() {
        HashMap::new()
    } else {
        ec2.subnets(&subnet_ids)
            .await?
            .into_iter()
            .map(|s| (s.subnet_id, s.zone))
            .collect()
    };
    let mut names: Vec<String> = subnet_zones
        .values()
        .cloned()
        .chain(instances.iter().filter_map(|i| i.zone.clone()))
        .collect();
    names.sort();
    names.dedup();
    let zone_types = if names.is_empty() {
        HashMap::new()
    } else {
        ec2.zones(&names)
            .await?
            .into_iter()
            .map(|z| (z.name, z.zone_type))
            .collect()
    };
    Ok((subnet_zones, zone_types))
}

/// Runs the stage for `state.target`.
pub async fn run<E: Instances + SecurityGroups + Zones, R, P, S: ClusterStore>(
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
    let (subnet_zones, mut zone_types) = zones_of(instances, &plan, &existing).await?;
    if !plan.launches.is_empty() {
        let ami_id = state
            .ami_id
            .clone()
            .ok_or_else(|| StageError::Internal("no AMI resolved".into()))?;
        let security_group_id = state
            .security_group_id
            .clone()
            .ok_or_else(|| StageError::Internal("no security group".into()))?;
        for launch in &plan.launches {
            let zone_type = launch
                .subnet_id
                .as_ref()
                .and_then(|s| subnet_zones.get(s))
                .and_then(|zone| zone_types.get(zone))
                .map(String::as_str);
            // One RunInstances per node: every tag, the index included, is set at creation.
            for &index in &launch.indexes {
                let deployment = &config.deployment;
                let mut tags =
                    deployment.node_tags(&state.cluster_id, &state.spec.name, role, index);
                // The spec's own tags never stand in for the project's.
                tags.extend(
                    state
                        .spec
                        .tags
                        .iter()
                        .filter(|(k, _)| !tags.iter().any(|(own, _)| own == *k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>(),
                );
                let request = LaunchRequest {
                    cluster_id: state.cluster_id.clone(),
                    role,
                    index,
                    ami_id: ami_id.clone(),
                    instance_type: state.spec.instance_type.clone(),
                    security_group_id: security_group_id.clone(),
                    subnet_id: launch.subnet_id.clone(),
                    carrier_ip: zone_type == Some(WAVELENGTH_ZONE),
                    root_volume_gib: state.spec.root_volume_gib,
                    root_volume_type: root_volume_type(zone_type).into(),
                    instance_profile: deployment.node_profile().into(),
                    tags,
                    // The same world gives the same token: EC2 answers a repeated launch with
                    // the first. An update's launch names the update: after a scale down the
                    // same index recurs.
                    client_token: match &state.update {
                        None => format!("{}-{}-{index}", state.cluster_id, role.as_str()),
                        Some(u) => {
                            format!("{}-{}-{index}-{}", state.cluster_id, role.as_str(), u.id)
                        }
                    },
                };
                let launched = instances.launch(&request).await?;
                indexed.extend(launched.into_iter().map(|i| (i, index)));
            }
        }
    }
    // Adopted instances (an interrupted launch of an earlier release, before every tag was
    // set at creation) take their index on the record only: the roles may not tag afterwards.
    for (instance, index) in &mut indexed {
        instance.index = Some(*index);
    }
    let all: Vec<Instance> = existing
        .into_iter()
        .filter(|i| i.index.is_some())
        .chain(indexed.into_iter().map(|(i, _)| i))
        .collect();
    // A launch into the default subnet learns its zone only now.
    let mut unknown: Vec<String> = all
        .iter()
        .filter_map(|i| i.zone.clone())
        .filter(|z| !zone_types.contains_key(z))
        .collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        zone_types.extend(
            instances
                .zones(&unknown)
                .await?
                .into_iter()
                .map(|z| (z.name, z.zone_type)),
        );
    }
    records::modify(store, &state.cluster_id, |r| {
        for i in &all {
            if !r.nodes.iter().any(|n| n.instance_id == i.instance_id) {
                let zone_type = i.zone.as_ref().and_then(|z| zone_types.get(z)).cloned();
                r.upsert_node(Node {
                    instance_id: i.instance_id.clone(),
                    role,
                    index: i.index.unwrap_or_default(),
                    private_ip: i.private_ip.clone(),
                    public_ip: i.public_ip.clone(),
                    state: NodeState::Pending,
                    channel: Some(state.spec.microk8s_channel.clone()),
                    zone: i.zone.clone(),
                    // As its launch chose it: by the type of its subnet's zone, which is its own.
                    volume_type: Some(root_volume_type(zone_type.as_deref()).into()),
                    zone_type,
                    carrier_ip: i.carrier_ip.clone(),
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
    let fallbacks: Vec<String> = zones
        .iter()
        .filter_map(|z| volume_fallback(z, zone_types.get(*z).map(String::as_str)))
        .collect();
    let detail = format!(
        "{} {} node(s): {} ({} launched now){}{}",
        all.len(),
        role.as_str(),
        ids.join(", "),
        plan.launching(),
        if zones.is_empty() {
            String::new()
        } else {
            format!(" in {}", zones.join(", "))
        },
        if fallbacks.is_empty() {
            String::new()
        } else {
            format!("; {}", fallbacks.join("; "))
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
    use crate::resources;
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
        // Every tag came with RunInstances (one per node): nothing was tagged afterwards, and
        // each node carries the deployment's tag and runs with its node profile.
        for i in &launched {
            assert_eq!(
                i.request
                    .tags
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>(),
                i.tags
            );
            assert_eq!(i.tags[resources::TAG_DEPLOYMENT], "mecplane");
            assert!(i.owned_by(&crate::resources::Deployment::default()));
        }
    }

    #[tokio::test]
    async fn a_look_alike_tagged_for_the_cluster_takes_no_node_s_place() {
        // GIVEN an instance made outside the deployment with the cluster's node tags (another
        // instance profile), and one with the node profile but no deployment tag
        let (cloud, store, state) = fixtures::ready_to_launch(1, 2).await;
        let cluster = state.cluster_id.clone();
        let foreign = cloud.add_look_alike(
            &cluster,
            Role::Worker,
            0,
            Some("mecplane"),
            Some("prod-app"),
        );
        let untagged = cloud.add_look_alike(&cluster, Role::Worker, 1, None, Some("mecplane-node"));
        // WHEN the workers are launched (twice)
        let mut workers = state.clone();
        workers.target = Some(Role::Worker);
        for _ in 0..2 {
            run(&fixtures::ports(&cloud, &store), workers.clone())
                .await
                .unwrap();
        }
        // THEN two nodes of its own were launched, and neither look-alike is on the record
        let nodes = &store.records()[0].nodes;
        assert_eq!(nodes.len(), 2);
        assert!(nodes
            .iter()
            .all(|n| n.instance_id != foreign && n.instance_id != untagged));
        assert_eq!(cloud.live_instances().len(), 4);
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
    async fn ec2_refuses_a_gp3_root_in_a_wavelength_zone_and_launches_nothing() {
        let (cloud, _store, state) = fixtures::ready_to_launch(1, 0).await;
        with_wavelength_subnet(&cloud);
        let request = |volume: &str| LaunchRequest {
            cluster_id: state.cluster_id.clone(),
            role: Role::ControlPlane,
            index: 0,
            ami_id: "ami-0abc".into(),
            instance_type: "t3.medium".into(),
            security_group_id: "sg-1".into(),
            subnet_id: Some("subnet-000000w1".into()),
            root_volume_gib: 20,
            root_volume_type: volume.into(),
            instance_profile: "mecplane-node".into(),
            tags: Vec::new(),
            client_token: format!("t-{volume}"),
            carrier_ip: true,
        };
        for volume in ["gp3", "io2", "st1"] {
            match cloud.launch(&request(volume)).await {
                Err(CloudError::Rejected(m)) => {
                    assert!(m.starts_with("InvalidParameterCombination"), "{m}");
                    assert!(
                        m.contains(volume) && m.contains("us-east-1-wl1-bos-wlz-1"),
                        "{m}"
                    );
                }
                other => panic!("{volume}: {other:?}"),
            }
        }
        assert!(cloud.live_instances().is_empty(), "nothing launched");
        assert_eq!(cloud.launch(&request("gp2")).await.unwrap().len(), 1);
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

    /// A cloud with a Wavelength zone and a subnet there (`subnet-000000w1`).
    fn with_wavelength_subnet(cloud: &crate::fakes::FakeCloud) {
        cloud.add_zone(
            crate::ports::Zone {
                name: "us-east-1-wl1-bos-wlz-1".into(),
                zone_type: WAVELENGTH_ZONE.into(),
                usable: true,
                group: "us-east-1-wl1".into(),
                parent: Some("us-east-1a".into()),
            },
            &["t3.medium"],
        );
        cloud.add_subnet("subnet-000000w1", "vpc-1", "us-east-1-wl1-bos-wlz-1");
    }

    #[tokio::test]
    async fn a_wavelength_subnet_gets_carrier_ips_and_its_zone_type_however_often_it_runs() {
        let (cloud, store, mut state) = fixtures::registered(1, 2).await;
        with_wavelength_subnet(&cloud);
        cloud.add_subnet("subnet-0000000a", "vpc-1", "us-east-1a");
        cloud.set_route_table("subnet-000000w1", &[("0.0.0.0/0", "cagw-0001")]);
        cloud.put_public(
            &super::super::resolve_ami::ami_parameter(
                &fixtures::config().ami_parameter_prefix,
                &state.spec,
            ),
            "ami-0abc",
        );
        // Control planes in the Wavelength zone, workers in a standard zone.
        state.spec.instance_type = "t3.medium".into();
        state.spec.subnet_ids = vec!["subnet-000000w1".into()];
        state.spec.worker_subnet_ids = vec!["subnet-0000000a".into()];
        let ports = fixtures::ports(&cloud, &store);
        let state = super::super::resolve_ami::run(&ports, state).await.unwrap();
        let mut state = super::super::security_group::run(&ports, state)
            .await
            .unwrap();
        for role in [Role::ControlPlane, Role::Worker] {
            state.target = Some(role);
            for _ in 0..2 {
                run(&ports, state.clone()).await.unwrap();
            }
        }

        let launched = cloud.live_instances();
        assert_eq!(launched.len(), 3, "launched once however often it ran");
        for i in &launched {
            let wavelength = i.request.role == Role::ControlPlane;
            // The interface form with a carrier IP in Wavelength, no public IPv4 there.
            assert_eq!(i.request.carrier_ip, wavelength, "{i:?}");
            // A gp2 root where gp3 is not offered (the fake refuses gp3 there), gp3 elsewhere.
            let volume = if wavelength { "gp2" } else { "gp3" };
            assert_eq!(i.request.root_volume_type, volume, "{i:?}");
            assert_eq!(i.instance.carrier_ip.is_some(), wavelength, "{i:?}");
            assert_eq!(i.instance.public_ip.is_none(), wavelength, "{i:?}");
        }
        let nodes = store.records()[0].nodes.clone();
        assert_eq!(nodes.len(), 3);
        for n in &nodes {
            let (zone, kind) = match n.role {
                Role::ControlPlane => ("us-east-1-wl1-bos-wlz-1", WAVELENGTH_ZONE),
                Role::Worker => ("us-east-1a", "availability-zone"),
            };
            assert_eq!(
                (n.zone.as_deref(), n.zone_type.as_deref()),
                (Some(zone), Some(kind)),
                "{n:?}"
            );
            assert_eq!(
                n.carrier_ip.is_some(),
                n.role == Role::ControlPlane,
                "{n:?}"
            );
            let volume = match n.role {
                Role::ControlPlane => "gp2",
                Role::Worker => "gp3",
            };
            assert_eq!(n.volume_type.as_deref(), Some(volume), "{n:?}");
        }
        // The control planes' launch says their root volumes fell back, the workers' does not.
        let events = store.events(&state.cluster_id).await.unwrap();
        let finished = |stage_name: &str| -> Vec<String> {
            events
                .iter()
                .filter(|e| e.stage == stage_name && e.phase == Phase::Finished)
                .map(|e| e.detail.clone())
                .collect()
        };
        let said =
            "root volume gp2 in us-east-1-wl1-bos-wlz-1 (gp3 is not offered in Wavelength zones)";
        let control_planes = finished(stage(Role::ControlPlane));
        assert_eq!(control_planes.len(), 2, "{events:?}");
        assert!(
            control_planes.iter().all(|d| d.ends_with(said)),
            "{control_planes:?}"
        );
        let workers = finished(stage(Role::Worker));
        assert_eq!(workers.len(), 2, "{events:?}");
        assert!(
            workers.iter().all(|d| !d.contains("root volume")),
            "{workers:?}"
        );
        // The kubeconfig's host and the certificate's names: the carrier IP.
        let first = launched
            .iter()
            .find(|i| i.request.role == Role::ControlPlane)
            .unwrap();
        let carrier = first.instance.carrier_ip.clone().unwrap();
        assert_eq!(
            nodes::api_host(&first.instance, None),
            Some(carrier.clone())
        );
        assert!(nodes::api_sans(&first.instance, None, &[]).contains(&carrier));
    }
}
