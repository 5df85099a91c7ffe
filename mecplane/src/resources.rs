//! How mecplane names and tags what it creates in an AWS account: tag keys, security group names,
//! parameter paths and cluster ids. Every other module asks here; nothing else spells these strings.

use crate::record::Role;

/// Tag on every instance and security group of a cluster; its value is the cluster id.
pub const TAG_CLUSTER: &str = "mecplane:cluster";
/// Tag carrying the cluster's name (what a person and the node simulator's fault rules match on).
pub const TAG_CLUSTER_NAME: &str = "mecplane:cluster-name";
/// Tag carrying the node's role: [`Role::as_str`].
pub const TAG_ROLE: &str = "mecplane:role";
/// Tag carrying the node's 0-based index within its role.
pub const TAG_INDEX: &str = "mecplane:index";
/// The EC2 console's name tag.
pub const TAG_NAME: &str = "Name";
/// Tag on a cluster's security group: when it was created (RFC 3339), since EC2 keeps no
/// creation time for a group; the reconcile ages orphan groups by it.
pub const TAG_CREATED_AT: &str = "mecplane:created-at";
/// The prefix of every parameter mecplane writes.
pub const PARAMETER_ROOT: &str = "/mecplane/clusters";

/// The security group name of a cluster.
pub fn security_group_name(cluster_id: &str) -> String {
    format!("mecplane-{cluster_id}")
}

/// The name of a cluster's API load balancer and of its target group (each unique per region,
/// at most 32 characters: `mecplane-` and the 18 of the id).
pub fn balancer_name(cluster_id: &str) -> String {
    format!("{BALANCER_NAME_PREFIX}{cluster_id}")
}

/// How the name of every cluster's load balancer and target group starts (what the reconcile
/// narrows its search by before it reads tags).
pub const BALANCER_NAME_PREFIX: &str = "mecplane-";

/// The `Name` tag of a node.
pub fn node_name(cluster_name: &str, role: Role, index: u32) -> String {
    let short = match role {
        Role::ControlPlane => "cp",
        Role::Worker => "worker",
    };
    format!("{cluster_name}-{short}-{index}")
}

/// The SecureString parameter holding the cluster's join token.
pub fn join_token_parameter(cluster_id: &str) -> String {
    format!("{PARAMETER_ROOT}/{cluster_id}/join-token")
}

/// The SecureString parameter holding the cluster's kubeconfig.
pub fn kubeconfig_parameter(cluster_id: &str) -> String {
    format!("{PARAMETER_ROOT}/{cluster_id}/kubeconfig")
}

/// The SecureString parameter holding the private half of the one-time key the kubeconfig is
/// sealed to on its way out of the node (`sealed`); deleted once the kubeconfig is stored.
pub fn transport_key_parameter(cluster_id: &str) -> String {
    format!("{PARAMETER_ROOT}/{cluster_id}/transport-key")
}

/// The idempotency key of a node command, sent as its SSM comment: the same key means the same
/// command, so a retried stage adopts the command it already sent instead of sending another.
/// `step` names what the command does (`bootstrap`, `join`, …), `of` what makes it unique (the
/// instance it runs on, or the poll it belongs to).
pub fn command_key(cluster_id: &str, step: &str, of: impl std::fmt::Display) -> String {
    format!("mecplane {cluster_id} {step} {of}")
}

/// Every parameter a cluster may own (what teardown deletes).
pub fn cluster_parameters(cluster_id: &str) -> Vec<String> {
    vec![
        join_token_parameter(cluster_id),
        kubeconfig_parameter(cluster_id),
        transport_key_parameter(cluster_id),
    ]
}

/// The cluster a parameter under [`PARAMETER_ROOT`] belongs to (`<root>/<cluster id>/…`).
pub fn cluster_of_parameter(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PARAMETER_ROOT)?.strip_prefix('/')?;
    let (cluster_id, leaf) = rest.split_once('/')?;
    (!cluster_id.is_empty() && !leaf.is_empty()).then_some(cluster_id)
}

/// A new random cluster id: `c-` and 16 lowercase hex characters.
pub fn new_cluster_id() -> String {
    format!("c-{:016x}", rand::random::<u64>())
}

/// A new random update id: `u-` and 16 lowercase hex characters.
pub fn new_update_id() -> String {
    format!("u-{:016x}", rand::random::<u64>())
}

/// Whether `id` has the shape of an update id.
pub fn is_update_id(id: &str) -> bool {
    id.len() == 18
        && id.starts_with("u-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The name of the update execution of one update: `<cluster id>-update-<update id>`.
pub fn update_execution_name(cluster_id: &str, update_id: &str) -> String {
    format!("{cluster_id}-update-{update_id}")
}

/// The ARN of execution `name` of a state machine:
/// `arn:<partition>:states:<region>:<account>:stateMachine:<machine>` →
/// `arn:<partition>:states:<region>:<account>:execution:<machine>:<name>`.
pub fn execution_arn(state_machine_arn: &str, name: &str) -> Option<String> {
    let parts: Vec<&str> = state_machine_arn.splitn(7, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "states", region, account, "stateMachine", machine]
            if !machine.contains(':') =>
        {
            Some(format!(
                "arn:{partition}:states:{region}:{account}:execution:{machine}:{name}"
            ))
        }
        _ => None,
    }
}

/// A cluster id derived from a seed (a Step Functions execution ARN), so that a retried stage
/// derives the same id and registers the same cluster.
pub fn cluster_id_from_seed(seed: &str) -> String {
    // FNV-1a, 64 bit: stable across releases, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("c-{hash:016x}")
}

/// Whether `id` has the shape of a cluster id.
pub fn is_cluster_id(id: &str) -> bool {
    id.len() == 18
        && id.starts_with("c-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The standard tags of a node.
pub fn node_tags(
    cluster_id: &str,
    cluster_name: &str,
    role: Role,
    index: u32,
) -> Vec<(String, String)> {
    vec![
        (TAG_CLUSTER.into(), cluster_id.into()),
        (TAG_CLUSTER_NAME.into(), cluster_name.into()),
        (TAG_ROLE.into(), role.as_str().into()),
        (TAG_INDEX.into(), index.to_string()),
        (TAG_NAME.into(), node_name(cluster_name, role, index)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        assert!(is_cluster_id(&new_cluster_id()));
        let seeded = cluster_id_from_seed("arn:aws:states:us-east-1:1:execution:m:e");
        assert!(is_cluster_id(&seeded));
        assert_eq!(
            seeded,
            cluster_id_from_seed("arn:aws:states:us-east-1:1:execution:m:e")
        );
        assert_ne!(
            seeded,
            cluster_id_from_seed("arn:aws:states:us-east-1:1:execution:m:f")
        );
        assert!(!is_cluster_id("c-XYZ"));
        assert!(!is_cluster_id("edge-1"));
    }

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(node_name("edge", Role::ControlPlane, 0), "edge-cp-0");
        assert_eq!(node_name("edge", Role::Worker, 3), "edge-worker-3");
        assert_eq!(
            join_token_parameter("c-1"),
            "/mecplane/clusters/c-1/join-token"
        );
        assert_eq!(security_group_name("c-1"), "mecplane-c-1");
        for name in cluster_parameters("c-1") {
            assert_eq!(cluster_of_parameter(&name), Some("c-1"));
        }
        assert_eq!(cluster_of_parameter("/mecplane/clusters/c-1"), None);
        assert_eq!(cluster_of_parameter("/mecplane/clustersx/c-1/a"), None);
        assert_eq!(cluster_of_parameter("/other/c-1/kubeconfig"), None);
    }
}
