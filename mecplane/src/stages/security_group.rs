//! Stage `security-group`: ensures the cluster's security group with exactly the rules MicroK8s
//! needs — its ports open between the cluster's own nodes (self-referencing rules), the API
//! (16443) open only to the CIDRs the user named, the `exposed_ports` the user asked for to the
//! CIDRs named with each, and nothing else: never 22.

use super::Ports;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{ClusterStore, IngressRule, IngressSource, SecurityGroups};
use crate::record::Phase;
use crate::spec::ClusterSpec;
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
    desired
        .iter()
        .filter(|d| {
            !current.iter().any(|c| {
                c.protocol == d.protocol
                    && (c.from_port, c.to_port) == (d.from_port, d.to_port)
                    && c.source == d.source
            })
        })
        .cloned()
        .collect()
}

/// Runs the stage.
pub async fn run<E: SecurityGroups, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (groups, store) = (ports.ec2, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let group_id = match groups.find_group(&state.cluster_id).await? {
        Some(id) => id,
        None => {
            groups
                .create_group(
                    &state.cluster_id,
                    &state.spec.name,
                    state.spec.subnet_id.as_deref(),
                )
                .await?
        }
    };
    let missing = missing_rules(
        &desired_rules(&state.spec),
        &groups.ingress(&group_id).await?,
    );
    if !missing.is_empty() {
        groups.authorize(&group_id, &missing).await?;
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
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!("{group_id}: {} rules added; {api}", missing.len()),
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

    #[test]
    fn only_missing_rules_are_added() {
        let spec = fixtures::spec(1, 0);
        let desired = desired_rules(&spec);
        assert_eq!(missing_rules(&desired, &desired), vec![]);
        assert_eq!(missing_rules(&desired, &desired[1..]).len(), 1);
    }
}
