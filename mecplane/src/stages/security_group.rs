//! Stage `security-group`: ensures the cluster's security group with exactly the rules MicroK8s
//! needs — its ports open between the cluster's own nodes (self-referencing rules), the API
//! (16443) open only to the CIDRs the user named, the `exposed_ports` the user asked for to the
//! CIDRs named with each, and nothing else: never 22. Missing rules are added first, then rules
//! the spec no longer has are revoked, so a port that stays open never closes in between. The
//! create runs it once; an `exposed_ports` change runs it again with the new spec (route
//! `ports` of the update state machine).
//!
//! Before the group exists it checks the placement ([`placement::check`]) and that every
//! Wavelength subnet routes `0.0.0.0/0` to a carrier gateway ([`check_carrier_route`]): without
//! one its nodes' carrier IPs reach nothing, so the create fails here, naming the subnet's entry
//! and what to add, with nothing made.

use super::Ports;
use crate::error::StageError;
use crate::microk8s;
use crate::placement::{self, Placement, WAVELENGTH_ZONE};
use crate::ports::{
    ClusterStore, IngressRule, IngressSource, RouteTable, Routes, SecurityGroups, Subnet, Zones,
};
use crate::record::Phase;
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

/// The prefix of a carrier gateway's id.
const CARRIER_GATEWAY: &str = "cagw-";

/// Checks that a Wavelength subnet's route table sends `0.0.0.0/0` to a carrier gateway (pure).
/// `at` is the subnet's entry in the spec (`subnet_ids[0]`), `zone` its Wavelength zone, `table`
/// the table it uses (`None`: none found). The refusal names the entry and the commands that
/// add what is missing.
pub fn check_carrier_route(
    at: &str,
    subnet: &Subnet,
    table: Option<&RouteTable>,
) -> Result<(), ValidationError> {
    let default_route = table.and_then(|t| t.routes.iter().find(|r| r.destination == "0.0.0.0/0"));
    if default_route.is_some_and(|r| r.target.starts_with(CARRIER_GATEWAY)) {
        return Ok(());
    }
    let (id, vpc) = (&subnet.subnet_id, &subnet.vpc_id);
    let now = match (table, default_route) {
        (None, _) => "it has no route table".to_string(),
        (Some(t), Some(r)) => format!(
            "{} sends 0.0.0.0/0 to {}, not to a carrier gateway",
            table_name(t),
            r.target
        ),
        (Some(t), None) => format!(
            "{} has no 0.0.0.0/0 route to a carrier gateway",
            table_name(t)
        ),
    };
    // The route goes into the subnet's own table. A main table whose 0.0.0.0/0 serves the VPC's
    // other subnets (or no table at all) is left alone: the subnet gets a table of its own first.
    let (first, table_id, verb) = match table {
        Some(t) if !t.main && default_route.is_some() => {
            (String::new(), t.route_table_id.as_str(), "replace-route")
        }
        Some(t) if default_route.is_none() => {
            (String::new(), t.route_table_id.as_str(), "create-route")
        }
        _ => (
            format!(
                "give {id} a route table of its own (aws ec2 create-route-table --vpc-id {vpc}; aws ec2 associate-route-table --route-table-id <rtb-id> --subnet-id {id}), "
            ),
            "<rtb-id>",
            "create-route",
        ),
    };
    Err(ValidationError {
        field: at.to_string(),
        message: format!(
            "{id} is in Wavelength zone {zone} and {now}: its nodes are reached only through their carrier IPs. Add a carrier gateway to the VPC (aws ec2 create-carrier-gateway --vpc-id {vpc}), {first}then the route (aws ec2 {verb} --route-table-id {table_id} --destination-cidr-block 0.0.0.0/0 --carrier-gateway-id <cagw-id>)",
            zone = subnet.zone,
        ),
    })
}

/// `its route table rtb-…` or `its VPC's main route table rtb-…`.
fn table_name(t: &RouteTable) -> String {
    if t.main {
        format!("its VPC's main route table {}", t.route_table_id)
    } else {
        format!("its route table {}", t.route_table_id)
    }
}

/// [`check_carrier_route`] for every Wavelength subnet the spec names (one route-table lookup
/// each, none for a placement without Wavelength).
pub async fn check_carrier_routes<E: Routes + ?Sized>(
    ec2: &E,
    spec: &ClusterSpec,
    found: &Placement,
) -> Result<(), StageError> {
    let mut seen: Vec<&str> = Vec::new();
    for (at, id) in placement::named_subnets(spec) {
        if seen.contains(&id.as_str()) {
            continue;
        }
        seen.push(id);
        let wavelength = found
            .zone_of(id)
            .is_some_and(|z| z.zone_type == WAVELENGTH_ZONE);
        let Some(subnet) = found.subnets.iter().find(|s| s.subnet_id == *id) else {
            continue;
        };
        if wavelength {
            let table = ec2.route_table(id, &subnet.vpc_id).await?;
            check_carrier_route(&at, subnet, table.as_ref())?;
        }
    }
    Ok(())
}

/// A create started without the API (from the console) whose spec names only its VPC gets the
/// subnets the API would have chosen ([`placement::choose_subnets`]). The record keeps them, and
/// whatever the record holds wins, so a retry puts the nodes where the record says. Answers what
/// the choice saw, for the placement check.
async fn choose_subnets<E: SecurityGroups + Zones, S: ClusterStore>(
    ec2: &E,
    store: &S,
    state: &mut CreateState,
) -> Result<Option<placement::Seen>, StageError> {
    let Some(seen) = placement::choose_subnets(ec2, &mut state.spec).await? else {
        return Ok(None);
    };
    let chosen = state.spec.clone();
    let record = records::modify(store, &state.cluster_id, |r| {
        let changed = r.spec.subnets(crate::record::Role::ControlPlane).is_empty();
        if changed {
            r.spec.subnet_id = chosen.subnet_id.clone();
            r.spec.subnet_ids = chosen.subnet_ids.clone();
        }
        Ok(changed)
    })
    .await?;
    state.spec.subnet_id = record.spec.subnet_id;
    state.spec.subnet_ids = record.spec.subnet_ids;
    Ok(Some(seen))
}

/// Runs the stage.
pub async fn run<E: SecurityGroups + Zones + Routes, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (groups, store) = (ports.ec2, ports.store);
    let mut placement = Vec::new();
    records::enter(store, &state.cluster_id, STAGE).await?;
    let seen = choose_subnets(groups, store, &mut state).await?;
    let group_id = match groups.find_group(&state.cluster_id).await? {
        Some(id) => id,
        None => {
            // Before anything exists: a subnet that is not there (any more), one of another VPC
            // or a zone that cannot take the nodes fails the create here, naming it, with
            // nothing to clean up (the API refused all this already, at the request).
            let found = placement::check(groups, &state.spec, seen.as_ref()).await?;
            check_carrier_routes(groups, &state.spec, &found).await?;
            placement = found.placed;
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
    async fn a_vpc_alone_started_from_the_console_gets_the_subnets_the_record_keeps() {
        let (cloud, store, mut state) = fixtures::registered(3, 1).await;
        cloud.add_subnet("subnet-0000000b0", "vpc-0000000a", "us-east-1b");
        cloud.add_subnet("subnet-0000000a0", "vpc-0000000a", "us-east-1a");
        state.spec.vpc_id = Some("vpc-0000000a".into());
        let out = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        let chosen = ["subnet-0000000a0", "subnet-0000000b0"];
        assert_eq!(out.spec.subnet_ids, chosen);
        let record = store.get(&state.cluster_id).await.unwrap().unwrap();
        assert_eq!(record.spec.subnet_ids, chosen);
        // A retry from the same input, after the VPC gained a subnet in an earlier zone: the
        // record's choice stands.
        cloud.add_subnet("subnet-000000009", "vpc-0000000a", "us-east-0a");
        let again = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert_eq!(again.spec.subnet_ids, chosen);
        assert_eq!(cloud.groups().len(), 1);
    }

    #[tokio::test]
    async fn a_zone_not_opted_in_or_without_the_instance_type_fails_naming_it() {
        use fixtures::zone;
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

    #[tokio::test]
    async fn a_wavelength_subnet_without_a_carrier_gateway_route_fails_naming_it_and_what_to_add() {
        let (cloud, store, mut state) = fixtures::registered(1, 2).await;
        cloud.add_zone(
            fixtures::zone("us-east-1-wl1-bos-wlz-1", WAVELENGTH_ZONE, true),
            &["t3.medium"],
        );
        cloud.add_subnet("subnet-0000000a", "vpc-1", "us-east-1a");
        cloud.add_subnet("subnet-000000w1", "vpc-1", "us-east-1-wl1-bos-wlz-1");
        state.spec.instance_type = "t3.medium".into();
        state.spec.subnet_ids = vec!["subnet-0000000a".into()];
        state.spec.worker_subnet_ids = vec!["subnet-000000w1".into()];
        // A standard subnet needs no carrier gateway. The VPC's main table reaches the internet
        // gateway: the subnet is told to get a table of its own, and the route to add there.
        cloud.set_route_table("vpc-1", &[("0.0.0.0/0", "igw-0001")]);
        for _ in 0..2 {
            let err = run(&fixtures::ports(&cloud, &store), state.clone())
                .await
                .unwrap_err();
            assert_eq!(err.name(), "ValidationError");
            let err = err.to_string();
            assert!(
                err.contains("worker_subnet_ids[0]")
                    && err.contains("subnet-000000w1 is in Wavelength zone us-east-1-wl1-bos-wlz-1")
                    && err.contains("main route table rtb-1 sends 0.0.0.0/0 to igw-0001")
                    && err.contains("aws ec2 create-carrier-gateway --vpc-id vpc-1")
                    && err.contains("aws ec2 associate-route-table --route-table-id <rtb-id> --subnet-id subnet-000000w1")
                    && err.contains("aws ec2 create-route --route-table-id <rtb-id> --destination-cidr-block 0.0.0.0/0 --carrier-gateway-id"),
                "{err}"
            );
        }
        // Its own table without a default route: the route to create there.
        cloud.set_route_table("subnet-000000w1", &[("172.31.0.0/16", "local")]);
        let err = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("its route table rtb-000000w1 has no 0.0.0.0/0 route")
                && err.contains("aws ec2 create-route --route-table-id rtb-000000w1")
                && !err.contains("associate-route-table"),
            "{err}"
        );
        // Its own table sending 0.0.0.0/0 elsewhere: the route to replace.
        cloud.set_route_table("subnet-000000w1", &[("0.0.0.0/0", "nat-0001")]);
        let err = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sends 0.0.0.0/0 to nat-0001")
                && err.contains("aws ec2 replace-route --route-table-id rtb-000000w1"),
            "{err}"
        );
        assert!(cloud.groups().is_empty(), "nothing made");
        assert_eq!(cloud.mutating_calls(), 0, "nothing changed in EC2");

        // With the route: the group is made, once however often the stage runs.
        cloud.set_route_table(
            "subnet-000000w1",
            &[("172.31.0.0/16", "local"), ("0.0.0.0/0", "cagw-0001")],
        );
        for _ in 0..2 {
            run(&fixtures::ports(&cloud, &store), state.clone())
                .await
                .unwrap();
        }
        assert_eq!(cloud.groups().len(), 1);
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
