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
/// Tag on everything a deployment creates (instances, volumes, security groups, load balancers,
/// target groups), set at creation: its value is the deployment's id ([`Deployment::id`]). With
/// the instance profile it is what makes a resource this deployment's ([`Deployment`]).
pub const TAG_DEPLOYMENT: &str = "mecplane:deployment";
/// The deployment id when `MECPLANE_DEPLOYMENT` is unset: the template's default `NamePrefix`,
/// whose names and parameter root are those of the deployments made before ids existed.
pub const DEFAULT_DEPLOYMENT: &str = "mecplane";
/// The node instance profile when `MECPLANE_NODE_INSTANCE_PROFILE` is unset.
pub const DEFAULT_NODE_PROFILE: &str = "mecplane-node";
/// The longest deployment id: `<id>-<cluster id>` must fit ELB's 32-character names.
pub const DEPLOYMENT_ID_MAX: usize = 32 - 1 - 18;

/// Who one mecplane deployment is, and so what it may act on.
///
/// Several deployments may share an account and region. Each one's id (the template's
/// `NamePrefix`) is in the name of everything it makes (security groups, load balancers, target
/// groups), in its parameter root, and in the [`TAG_DEPLOYMENT`] tag set when each resource is
/// created. Ownership is never a tag alone: an instance is this deployment's only when it carries
/// the deployment's tag *and* runs with the deployment's node instance profile, which nobody can
/// give an instance without `iam:PassRole` on the node role — so an instance someone tagged to
/// look like a node (another profile, or no deployment tag) is never listed, joined, replaced or
/// terminated. IAM checks the same (`infra/template.yaml`): the roles may act only on resources
/// whose deployment tag has this value, and may set the project's tags only at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    id: String,
    node_profile: String,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            id: DEFAULT_DEPLOYMENT.into(),
            node_profile: DEFAULT_NODE_PROFILE.into(),
        }
    }
}

impl Deployment {
    /// A deployment `id` (`^[a-z][a-z0-9-]{0,12}$`, the template's `NamePrefix` pattern) whose
    /// nodes run with the instance profile named `node_profile`.
    pub fn new(id: &str, node_profile: &str) -> Result<Self, String> {
        let valid = id.len() <= DEPLOYMENT_ID_MAX
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "deployment id '{id}' must match ^[a-z][a-z0-9-]{{0,{}}}$",
                DEPLOYMENT_ID_MAX - 1
            ));
        }
        if node_profile.trim().is_empty() {
            return Err("the node instance profile name is empty".into());
        }
        Ok(Deployment {
            id: id.into(),
            node_profile: node_profile.into(),
        })
    }

    /// From `MECPLANE_DEPLOYMENT` and `MECPLANE_NODE_INSTANCE_PROFILE` (the defaults when unset).
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Deployment::new(
            &var("MECPLANE_DEPLOYMENT").unwrap_or_else(|| DEFAULT_DEPLOYMENT.into()),
            &var("MECPLANE_NODE_INSTANCE_PROFILE").unwrap_or_else(|| DEFAULT_NODE_PROFILE.into()),
        )
    }

    /// The id: the value of every [`TAG_DEPLOYMENT`] tag this deployment sets.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name of the instance profile its nodes are launched with.
    pub fn node_profile(&self) -> &str {
        &self.node_profile
    }

    /// Whether an instance is this deployment's: its [`TAG_DEPLOYMENT`] tag is this id and its
    /// instance profile (`IamInstanceProfile.Arn`, `arn:…:instance-profile/<path/><name>`) is
    /// the node profile. A look-alike with the project's tags but another profile, or a node of
    /// another deployment, is not.
    pub fn owns_instance(&self, deployment_tag: Option<&str>, profile_arn: Option<&str>) -> bool {
        self.owns_tagged(deployment_tag)
            && profile_arn
                .and_then(|arn| arn.rsplit_once(":instance-profile/"))
                .and_then(|(_, path)| path.rsplit('/').next())
                .is_some_and(|name| name == self.node_profile)
    }

    /// Whether a security group, load balancer or target group is this deployment's: its
    /// [`TAG_DEPLOYMENT`] tag is this id.
    pub fn owns_tagged(&self, deployment_tag: Option<&str>) -> bool {
        deployment_tag == Some(self.id.as_str())
    }

    /// The security group name of a cluster: `<deployment>-<cluster id>`.
    pub fn security_group_name(&self, cluster_id: &str) -> String {
        format!("{}{cluster_id}", self.name_prefix())
    }

    /// The name of a cluster's API load balancer and of its target group (each unique per
    /// region, at most 32 characters): `<deployment>-<cluster id>`.
    pub fn balancer_name(&self, cluster_id: &str) -> String {
        format!("{}{cluster_id}", self.name_prefix())
    }

    /// How the name of each of its groups, load balancers and target groups starts (what the
    /// reconcile narrows its search by before it reads tags).
    pub fn name_prefix(&self) -> String {
        format!("{}-", self.id)
    }

    /// The prefix of every parameter it writes: `/<deployment>/clusters`.
    pub fn parameter_root(&self) -> String {
        format!("/{}/clusters", self.id)
    }

    /// The SecureString parameter where a cluster made before join tokens were sealed per join
    /// kept its token; nothing writes it now, and teardown still deletes it.
    pub fn join_token_parameter(&self, cluster_id: &str) -> String {
        format!("{}/{cluster_id}/join-token", self.parameter_root())
    }

    /// The SecureString parameter holding a cluster's kubeconfig.
    pub fn kubeconfig_parameter(&self, cluster_id: &str) -> String {
        format!("{}/{cluster_id}/kubeconfig", self.parameter_root())
    }

    /// The SecureString parameter holding the private half of the one-time key the kubeconfig
    /// is sealed to on its way out of the node (`sealed`); deleted once the kubeconfig is stored.
    pub fn transport_key_parameter(&self, cluster_id: &str) -> String {
        format!("{}/{cluster_id}/transport-key", self.parameter_root())
    }

    /// Every parameter a cluster may own (what teardown deletes).
    pub fn cluster_parameters(&self, cluster_id: &str) -> Vec<String> {
        vec![
            self.join_token_parameter(cluster_id),
            self.kubeconfig_parameter(cluster_id),
            self.transport_key_parameter(cluster_id),
        ]
    }

    /// The cluster a parameter under [`Deployment::parameter_root`] belongs to
    /// (`<root>/<cluster id>/…`); `None` for anything else, another deployment's included.
    pub fn cluster_of_parameter<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name
            .strip_prefix(&self.parameter_root())?
            .strip_prefix('/')?;
        let (cluster_id, leaf) = rest.split_once('/')?;
        (!cluster_id.is_empty() && !leaf.is_empty()).then_some(cluster_id)
    }

    /// The tags a node is launched with, every one set at creation: the deployment, cluster,
    /// role, index and console name (the roles may not tag afterwards).
    pub fn node_tags(
        &self,
        cluster_id: &str,
        cluster_name: &str,
        role: Role,
        index: u32,
    ) -> Vec<(String, String)> {
        vec![
            (TAG_DEPLOYMENT.into(), self.id.clone()),
            (TAG_CLUSTER.into(), cluster_id.into()),
            (TAG_CLUSTER_NAME.into(), cluster_name.into()),
            (TAG_ROLE.into(), role.as_str().into()),
            (TAG_INDEX.into(), index.to_string()),
            (TAG_NAME.into(), node_name(cluster_name, role, index)),
        ]
    }
}

/// The `Name` tag of a node.
pub fn node_name(cluster_name: &str, role: Role, index: u32) -> String {
    let short = match role {
        Role::ControlPlane => "cp",
        Role::Worker => "worker",
    };
    format!("{cluster_name}-{short}-{index}")
}

/// The idempotency key of a node command, sent as its SSM comment: the same key means the same
/// command, so a retried stage adopts the command it already sent instead of sending another.
/// `step` names what the command does (`bootstrap`, `join`, …), `of` what makes it unique (the
/// instance it runs on, or the poll it belongs to).
pub fn command_key(cluster_id: &str, step: &str, of: impl std::fmt::Display) -> String {
    format!("mecplane {cluster_id} {step} {of}")
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
        let d = Deployment::default();
        assert_eq!(node_name("edge", Role::ControlPlane, 0), "edge-cp-0");
        assert_eq!(node_name("edge", Role::Worker, 3), "edge-worker-3");
        // The default deployment keeps the names of the deployments made before ids existed.
        assert_eq!(
            d.join_token_parameter("c-1"),
            "/mecplane/clusters/c-1/join-token"
        );
        assert_eq!(d.security_group_name("c-1"), "mecplane-c-1");
        assert_eq!(d.balancer_name("c-1"), "mecplane-c-1");
        for name in d.cluster_parameters("c-1") {
            assert_eq!(d.cluster_of_parameter(&name), Some("c-1"));
        }
        assert_eq!(d.cluster_of_parameter("/mecplane/clusters/c-1"), None);
        assert_eq!(d.cluster_of_parameter("/mecplane/clustersx/c-1/a"), None);
        assert_eq!(d.cluster_of_parameter("/other/c-1/kubeconfig"), None);
    }

    #[test]
    fn each_deployment_names_and_finds_only_its_own() {
        let a = Deployment::default();
        let b = Deployment::new("beta", "beta-node").unwrap();
        assert_eq!(b.security_group_name("c-1"), "beta-c-1");
        assert_eq!(
            b.kubeconfig_parameter("c-1"),
            "/beta/clusters/c-1/kubeconfig"
        );
        assert_eq!(a.cluster_of_parameter(&b.kubeconfig_parameter("c-1")), None);
        assert_eq!(b.cluster_of_parameter(&a.kubeconfig_parameter("c-1")), None);
        // The longest id still gives an ELB name of at most 32 characters.
        let longest = Deployment::new("a23456789012-", "p").unwrap();
        assert_eq!(longest.balancer_name(&new_cluster_id()).len(), 32);
        for bad in ["", "1abc", "Abc", "a_b", "a23456789012-x"] {
            assert!(Deployment::new(bad, "p").is_err(), "{bad}");
        }
        assert!(Deployment::new("ok", " ").is_err());
    }

    #[test]
    fn an_instance_is_ours_only_with_our_tag_and_our_node_profile() {
        let d = Deployment::new("beta", "beta-node").unwrap();
        let ours = Some("arn:aws:iam::123456789012:instance-profile/beta-node");
        let with_path = Some("arn:aws:iam::123456789012:instance-profile/edge/beta-node");
        assert!(d.owns_instance(Some("beta"), ours));
        assert!(d.owns_instance(Some("beta"), with_path));
        // A look-alike: the right tags but another profile, or none.
        let other = Some("arn:aws:iam::123456789012:instance-profile/prod-app");
        assert!(!d.owns_instance(Some("beta"), other));
        assert!(!d.owns_instance(Some("beta"), None));
        let suffix = Some("arn:aws:iam::123456789012:instance-profile/xbeta-node");
        assert!(!d.owns_instance(Some("beta"), suffix));
        // Our profile but another deployment's tag, or none (made before ids existed).
        assert!(!d.owns_instance(Some("mecplane"), ours));
        assert!(!d.owns_instance(None, ours));
        assert!(d.owns_tagged(Some("beta")));
        assert!(!d.owns_tagged(Some("betax")) && !d.owns_tagged(None));
    }

    #[test]
    fn nodes_carry_every_project_tag_from_creation() {
        let d = Deployment::new("beta", "beta-node").unwrap();
        let tags = d.node_tags("c-1", "edge", Role::Worker, 2);
        let get = |k: &str| {
            tags.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(TAG_DEPLOYMENT), Some("beta"));
        assert_eq!(get(TAG_CLUSTER), Some("c-1"));
        assert_eq!(get(TAG_ROLE), Some("worker"));
        assert_eq!(get(TAG_INDEX), Some("2"));
        assert_eq!(get(TAG_NAME), Some("edge-worker-2"));
    }
}
