//! Stage `security-group`: ensures the cluster's security group with exactly the rules MicroK8s
//! needs — its ports open between the cluster's own nodes (self-referencing rules), the API
//! (16443) open only to the CIDRs the user named, the `exposed_ports` the user asked for to the
//! CIDRs named with each, and nothing else: never 22. Missing rules are added first, then rules
//! the spec no longer has are revoked, so a port that stays open never closes in between. The
//! create runs it once; an `exposed_ports` change runs it again with the new spec (route
//! `ports` of the update state machine).

use super::Ports;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{ClusterStore, IngressRule, IngressSource, SecurityGroups, Subnet, Zone, Zones};
use crate::record::Phase;
use crate::record::Role;
use crate::spec::ClusterSpec;
use crate::spec::ValidationError;
use crate::state::CreateState;

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "security-group";

/// The rules the cluster's group must have.
pub fn desired_rules(spec: &ClusterSpec) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for port in microk8s::INTRA_CLUSTER_TCP {
        rules.push(IngressRule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            source: IngressSource::SameGroup,
            description: "MicroK8s, between cluster nodes".into(),
        });
    }
    for port in microk8s::INTRA_CLUSTER_UDP {
        rules.push(IngressRule {
            protocol: "udp".into(),
            from_port: port,
            to_port: port,
            source: IngressSource::SameGroup,
            description: "MicroK8s VXLAN, between cluster nodes".into(),
        });
    }
    for cidr in &spec.api_allowed_cidrs {
        rules.push(IngressRule {
            protocol: "tcp".into(),
            from_port: microk8s::PORT_API,
            to_port: microk8s::PORT_API,
            source: IngressSource::Cidr(cidr.clone()),
            description: "Kubernetes API, from a CIDR the user named".into(),
        });
    }
    for exposed in &spec.exposed_ports {
        // Validated with the spec: a well-formed range, never 22 nor a MicroK8s port.
        let Ok((from_port, to_port)) = exposed.port.range() else {
            continue;
        };
        for cidr in &exposed.cidrs {
            rules.push(IngressRule {
                protocol: exposed.protocol.clone(),
                from_port,
                to_port,
                source: IngressSource::Cidr(cidr.clone()),
                description: "a workload port the user exposed".into(),
            });
        }
    }
    rules
}

/// The subnets a spec names, each with its entry (`subnet_ids[1]`, `worker_subnet_ids[0]`):
/// the control planes' (a lone `subnet_id` of an older record as `subnet_ids[0]`), then the
/// workers' own.
fn named_subnets(spec: &ClusterSpec) -> impl Iterator<Item = (String, &String)> {
    spec.subnets(Role::ControlPlane)
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("subnet_ids[{i}]"), id))
        .chain(
            spec.worker_subnet_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (format!("worker_subnet_ids[{i}]"), id)),
        )
}

/// Checks the spec's subnets against those EC2 found (pure): each exists, all in one VPC. The
/// error names the list entry (`subnet_ids[1]`, `worker_subnet_ids[0]`).
pub fn check_subnets(spec: &ClusterSpec, found: &[Subnet]) -> Result<(), ValidationError> {
    let mut first: Option<&Subnet> = None;
    for (at, id) in named_subnets(spec) {
        let Some(subnet) = found.iter().find(|s| s.subnet_id == *id) else {
            return Err(ValidationError {
                field: at,
                message: format!("no subnet {id} in {}", spec.region),
            });
        };
        match first {
            Some(f) if f.vpc_id != subnet.vpc_id => {
                return Err(ValidationError {
                    field: at,
                    message: format!(
                        "{id} is in {}, {} in {}: a cluster's subnets share one VPC",
                        subnet.vpc_id, f.subnet_id, f.vpc_id
                    ),
                })
            }
            Some(_) => {}
            None => first = Some(subnet),
        }
    }
    Ok(())
}

/// Why [`check_zones`] refused a placement.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRefusal {
    pub error: ValidationError,
    /// The zone that lacks the instance type: its offerings complete the message.
    pub lacking_type: Option<String>,
}

/// Checks the zones of the spec's subnets (pure): each usable (a Local or Wavelength zone's
/// group opted in to), each offering the instance type (`offered`: the zones that do). The error
/// names the subnet's entry, or `instance_type`; a zone EC2 did not describe is left to EC2.
pub fn check_zones(
    spec: &ClusterSpec,
    subnets: &[Subnet],
    zones: &[Zone],
    offered: &[String],
) -> Result<Vec<(String, String)>, ZoneRefusal> {
    let mut placed = Vec::new();
    for (at, id) in named_subnets(spec) {
        let Some(subnet) = subnets.iter().find(|s| s.subnet_id == *id) else {
            continue;
        };
        let Some(zone) = zones.iter().find(|z| z.name == subnet.zone) else {
            continue;
        };
        if !zone.usable {
            return Err(ZoneRefusal {
                    error: ValidationError {
                        field: at,
                        message: format!(
                            "{id} is in {}, a {} of zone group {} the account has not opted in to: aws ec2 modify-availability-zone-group --group-name {} --opt-in-status opted-in",
                            zone.name, zone.zone_type, zone.group, zone.group
                        ),
                    },
                    lacking_type: None,
                });
        }
        if !offered.contains(&zone.name) {
            return Err(ZoneRefusal {
                error: ValidationError {
                    field: "instance_type".into(),
                    message: format!(
                        "{} is not offered in {} ({}, subnet {id})",
                        spec.instance_type, zone.name, zone.zone_type
                    ),
                },
                lacking_type: Some(zone.name.clone()),
            });
        }
        placed.push((zone.name.clone(), zone.zone_type.clone()));
    }
    placed.sort();
    placed.dedup();
    Ok(placed)
}

/// The desired rules the group does not have yet (descriptions do not matter).
pub fn missing_rules(desired: &[IngressRule], current: &[IngressRule]) -> Vec<IngressRule> {
    absent_from(desired, current)
}

/// The group's rules that are not desired: what a change of the spec (or drift) must revoke.
pub fn extra_rules(desired: &[IngressRule], current: &[IngressRule]) -> Vec<IngressRule> {
    absent_from(current, desired)
}

/// The rules of `these` that `those` lacks.
fn absent_from(these: &[IngressRule], those: &[IngressRule]) -> Vec<IngressRule> {
    these
        .iter()
        .filter(|d| !those.iter().any(|c| c.same_as(d)))
        .cloned()
        .collect()
}

/// Looks up the zones of the subnets and the instance type's offerings there, then
/// [`check_zones`]; a zone that does not offer the type is named with what it does offer.
async fn check_placement<E: Zones>(
    ec2: &E,
    spec: &ClusterSpec,
    subnets: &[Subnet],
) -> Result<Vec<(String, String)>, StageError> {
    let mut names: Vec<String> = subnets.iter().map(|s| s.zone.clone()).collect();
    names.sort();
    names.dedup();
    let zones = ec2.zones(&names).await?;
    let offered: Vec<String> = ec2
        .offerings(&names, Some(&spec.instance_type))
        .await?
        .into_iter()
        .map(|(zone, _)| zone)
        .collect();
    match check_zones(spec, subnets, &zones, &offered) {
        Ok(placed) => Ok(placed),
        Err(ZoneRefusal {
            error: mut e,
            lacking_type: Some(zone),
        }) => {
            let mut types: Vec<String> = ec2
                .offerings(std::slice::from_ref(&zone), None)
                .await?
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            types.sort();
            let shown = types.len().min(MAX_OFFERED_SHOWN);
            e.message = format!(
                "{}; offered there: {}{}",
                e.message,
                if types.is_empty() {
                    "none".to_string()
                } else {
                    types[..shown].join(", ")
                },
                if types.len() > shown {
                    format!(" and {} more", types.len() - shown)
                } else {
                    String::new()
                }
            );
            Err(e.into())
        }
        Err(ZoneRefusal { error, .. }) => Err(error.into()),
    }
}

/// How many of a zone's instance types a placement error lists.
const MAX_OFFERED_SHOWN: usize = 20;

/// Runs the stage.
pub async fn run<E: SecurityGroups + Zones, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (groups, store) = (ports.ec2, ports.store);
    let mut placement = Vec::new();
    records::enter(store, &state.cluster_id, STAGE).await?;
    let group_id = match groups.find_group(&state.cluster_id).await? {
        Some(id) => id,
        None => {
            // Before anything exists: a subnet that is not there, or one of another VPC, fails
            // the create here, naming it, with nothing to clean up.
            let ids: Vec<String> = named_subnets(&state.spec)
                .map(|(_, id)| id.clone())
                .collect();
            if !ids.is_empty() {
                let subnets = groups.subnets(&ids).await?;
                check_subnets(&state.spec, &subnets)?;
                placement = check_placement(groups, &state.spec, &subnets).await?;
            }
            groups
                .create_group(&state.cluster_id, &state.spec.name, state.spec.vpc_subnet())
                .await?
        }
    };
    let desired = desired_rules(&state.spec);
    let current = groups.ingress(&group_id).await?;
    let (missing, extra) = (
        missing_rules(&desired, &current),
        extra_rules(&desired, &current),
    );
    if !missing.is_empty() {
        groups.authorize(&group_id, &missing).await?;
    }
    if !extra.is_empty() {
        groups.revoke(&group_id, &extra).await?;
    }
    records::modify(store, &state.cluster_id, |r| {
        let changed = r.security_group_id.as_deref() != Some(group_id.as_str());
        r.security_group_id = Some(group_id.clone());
        Ok(changed)
    })
    .await?;
    let api = if state.spec.api_allowed_cidrs.is_empty() {
        "API closed to the outside".to_string()
    } else {
        format!("API open to {}", state.spec.api_allowed_cidrs.join(", "))
    };
    let zones: Vec<String> = placement
        .iter()
        .map(|(zone, kind)| format!("{zone} ({kind})"))
        .collect();
    let zones = if zones.is_empty() {
        String::new()
    } else {
        format!("; the subnets' zones: {}", zones.join(", "))
    };
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!(
            "{group_id}: {} rule(s) added, {} revoked; {api}{zones}",
            missing.len(),
            extra.len()
        ),
    )
    .await?;
    state.security_group_id = Some(group_id);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures;

    #[tokio::test]
    async fn rules_are_exact_and_never_open_ssh() {
        let (cloud, store, mut state) = fixtures::registered(1, 0).await;
        state.spec.api_allowed_cidrs = vec!["203.0.113.0/24".into()];
        let out = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        let again = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert_eq!(out.security_group_id, again.security_group_id);
        let groups = cloud.groups();
        assert_eq!(groups.len(), 1, "one group however often the stage runs");
        let (_, rules) = groups.values().next().unwrap();
        assert_eq!(rules.len(), 6);
        assert!(rules
            .iter()
            .all(|r| !(r.from_port..=r.to_port).contains(&22)));
        let outside: Vec<_> = rules
            .iter()
            .filter(|r| r.source != IngressSource::SameGroup)
            .collect();
        assert_eq!(outside.len(), 1);
        assert_eq!(
            (outside[0].from_port, outside[0].to_port),
            (microk8s::PORT_API, microk8s::PORT_API)
        );
        assert_eq!(
            outside[0].source,
            IngressSource::Cidr("203.0.113.0/24".into())
        );
    }

    #[tokio::test]
    async fn exposed_ports_open_exactly_what_was_asked() {
        use crate::spec::{ExposedPort, PortValue};
        let (cloud, store, mut state) = fixtures::registered(1, 0).await;
        state.spec.exposed_ports = vec![
            ExposedPort {
                port: PortValue::Number(443),
                protocol: "tcp".into(),
                cidrs: vec!["198.51.100.0/24".into(), "203.0.113.7/32".into()],
                allow_anywhere: false,
            },
            ExposedPort {
                port: PortValue::Text("30000-32767".into()),
                protocol: "udp".into(),
                cidrs: vec!["10.0.0.0/8".into()],
                allow_anywhere: false,
            },
        ];
        run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        let (_, rules) = cloud.groups().into_values().next().unwrap();
        let outside: Vec<_> = rules
            .iter()
            .filter_map(|r| match &r.source {
                IngressSource::Cidr(c) => {
                    Some((r.protocol.as_str(), r.from_port, r.to_port, c.as_str()))
                }
                IngressSource::SameGroup => None,
            })
            .collect();
        assert_eq!(
            outside,
            [
                ("tcp", 443, 443, "198.51.100.0/24"),
                ("tcp", 443, 443, "203.0.113.7/32"),
                ("udp", 30000, 32767, "10.0.0.0/8"),
            ]
        );
    }

    #[tokio::test]
    async fn a_changed_spec_adds_the_new_rules_and_revokes_the_old() {
        use crate::spec::{ExposedPort, PortValue};
        let entry = |port: u32, cidr: &str| ExposedPort {
            port: PortValue::Number(port),
            protocol: "tcp".into(),
            cidrs: vec![cidr.into()],
            allow_anywhere: false,
        };
        let (cloud, store, mut state) = fixtures::registered(1, 0).await;
        state.spec.exposed_ports = vec![entry(443, "198.51.100.0/24"), entry(8080, "10.0.0.0/8")];
        run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        // 8080 closes, 443 moves to another CIDR, 9000 opens.
        state.spec.exposed_ports = vec![entry(443, "203.0.113.0/24"), entry(9000, "10.0.0.0/8")];
        for _ in 0..2 {
            run(&fixtures::ports(&cloud, &store), state.clone())
                .await
                .unwrap();
        }
        let (_, rules) = cloud.groups().into_values().next().unwrap();
        let mut outside: Vec<_> = rules
            .iter()
            .filter_map(|r| match &r.source {
                IngressSource::Cidr(c) => Some((r.from_port, c.clone())),
                IngressSource::SameGroup => None,
            })
            .collect();
        outside.sort();
        assert_eq!(
            outside,
            [(443, "203.0.113.0/24".into()), (9000, "10.0.0.0/8".into())]
        );
        assert_eq!(
            rules.len(),
            desired_rules(&state.spec).len(),
            "MicroK8s' own rules stay"
        );
    }

    #[tokio::test]
    async fn subnets_that_are_missing_or_in_another_vpc_fail_before_anything_exists() {
        let (cloud, store, mut state) = fixtures::registered(3, 1).await;
        cloud.add_subnet("subnet-0000000a", "vpc-1", "us-east-1a");
        cloud.add_subnet("subnet-0000000b", "vpc-1", "us-east-1b");
        cloud.add_subnet("subnet-000000ff", "vpc-2", "us-east-1-bos-1a");
        state.spec.subnet_ids = vec!["subnet-0000000a".into(), "subnet-0000000b".into()];
        state.spec.worker_subnet_ids = vec!["subnet-000000ff".into()];
        let err = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap_err();
        assert_eq!(err.name(), "ValidationError");
        assert!(
            err.to_string().contains("worker_subnet_ids[0]")
                && err.to_string().contains("share one VPC"),
            "{err}"
        );
        state.spec.worker_subnet_ids = vec!["subnet-0000000c".into()];
        let err = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no subnet subnet-0000000c"),
            "{err}"
        );
        assert!(cloud.groups().is_empty(), "no group made");
        state.spec.worker_subnet_ids = vec![];
        run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert_eq!(cloud.groups().len(), 1);
    }

    #[tokio::test]
    async fn a_zone_not_opted_in_or_without_the_instance_type_fails_naming_it() {
        let zone = |name: &str, zone_type: &str, usable: bool| Zone {
            name: name.into(),
            zone_type: zone_type.into(),
            usable,
            group: name
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .into(),
            parent: Some("us-east-1a".into()),
        };
        let (cloud, store, mut state) = fixtures::registered(1, 2).await;
        cloud.add_subnet("subnet-0000000a", "vpc-1", "us-east-1a");
        cloud.add_zone(
            zone("us-east-1-bos-1a", "local-zone", true),
            &["t3.medium", "c5.2xlarge"],
        );
        cloud.add_subnet("subnet-000000b0", "vpc-1", "us-east-1-bos-1a");
        cloud.add_zone(
            zone("us-east-1-wl1-bos-wlz-1", "wavelength-zone", false),
            &["t3.medium"],
        );
        cloud.add_subnet("subnet-000000c0", "vpc-1", "us-east-1-wl1-bos-wlz-1");
        state.spec.subnet_ids = vec!["subnet-0000000a".into()];
        state.spec.instance_type = "t4g.medium".into();

        // Workers in a Local Zone that offers no t4g.medium: named, with what it offers.
        state.spec.worker_subnet_ids = vec!["subnet-000000b0".into()];
        let err = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instance_type")
                && err.contains("t4g.medium is not offered in us-east-1-bos-1a (local-zone")
                && err.contains("offered there: c5.2xlarge, t3.medium"),
            "{err}"
        );
        // A Wavelength zone whose group is not opted in: the subnet's entry, and how to opt in.
        state.spec.worker_subnet_ids = vec!["subnet-000000c0".into()];
        let err = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("worker_subnet_ids[0]") && err.contains("modify-availability-zone-group"),
            "{err}"
        );
        assert!(cloud.groups().is_empty(), "nothing made");
        // Offered there: the group is made, the event names the zones.
        state.spec.instance_type = "t3.medium".into();
        state.spec.worker_subnet_ids = vec!["subnet-000000b0".into()];
        run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        assert_eq!(cloud.groups().len(), 1);
        let events = store.events(&state.cluster_id).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.contains("us-east-1-bos-1a (local-zone)")),
            "{events:?}"
        );
    }

    #[test]
    fn extra_rules_are_what_the_spec_no_longer_has() {
        let spec = fixtures::spec(1, 0);
        let desired = desired_rules(&spec);
        assert_eq!(extra_rules(&desired, &desired), vec![]);
        assert_eq!(
            extra_rules(&desired[1..], &desired),
            vec![desired[0].clone()]
        );
    }

    #[test]
    fn only_missing_rules_are_added() {
        let spec = fixtures::spec(1, 0);
        let desired = desired_rules(&spec);
        assert_eq!(missing_rules(&desired, &desired), vec![]);
        assert_eq!(missing_rules(&desired, &desired[1..]).len(), 1);
    }
}
