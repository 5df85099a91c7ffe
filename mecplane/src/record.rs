//! The cluster record kept in DynamoDB — spec, status, nodes, the execution that owns it, failure —
//! its status lifecycle, and the events each stage appends to a cluster's history.

use serde::{Deserialize, Serialize};

use crate::spec::ClusterSpec;

/// Where a cluster is in its life. `CREATING → ACTIVE | FAILED`,
/// `ACTIVE | DEGRADED → UPDATING → ACTIVE | DEGRADED`, `DEGRADED → ACTIVE`,
/// `ACTIVE | DEGRADED | FAILED → DELETING → DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Creating,
    Active,
    /// A change (an [`Update`]) runs on the live cluster; back to `Active` when it ends, whether
    /// it succeeded or failed.
    Updating,
    /// Serving, with a node known unhealthy (a change failed on it): it can still change (a
    /// replacement of that node, say) and be deleted.
    Degraded,
    Failed,
    Deleting,
    Deleted,
}

impl Status {
    /// Every status, for listings and validation.
    pub const ALL: [Status; 7] = [
        Status::Creating,
        Status::Active,
        Status::Updating,
        Status::Degraded,
        Status::Failed,
        Status::Deleting,
        Status::Deleted,
    ];

    /// The name stored and shown (`ACTIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "CREATING",
            Status::Active => "ACTIVE",
            Status::Updating => "UPDATING",
            Status::Degraded => "DEGRADED",
            Status::Failed => "FAILED",
            Status::Deleting => "DELETING",
            Status::Deleted => "DELETED",
        }
    }

    /// Parses a stored or requested status name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a record in this status may move to `next`. Staying put is always allowed (a
    /// retried stage writes the status it already wrote).
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        self == next
            || matches!(
                (self, next),
                (Creating, Active)
                    | (Creating, Failed)
                    | (Active, Updating)
                    | (Updating, Active)
                    | (Updating, Degraded)
                    | (Degraded, Updating)
                    | (Degraded, Active)
                    | (Degraded, Deleting)
                    | (Active, Deleting)
                    | (Failed, Deleting)
                    | (Deleting, Deleted)
            )
    }

    /// Whether the cluster still owns (or may own) cloud resources.
    pub fn is_live(self) -> bool {
        self != Status::Deleted
    }

    /// Whether the cluster serves and may take a change: `ACTIVE`, or `DEGRADED`.
    pub fn is_serving(self) -> bool {
        matches!(self, Status::Active | Status::Degraded)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    /// The tag value and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }

    /// Parses a tag value.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "control-plane" => Some(Role::ControlPlane),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// How far a node has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Launched, not yet running with its agent online.
    Pending,
    /// Running and reachable through SSM.
    Running,
    /// MicroK8s installed and part of the cluster.
    Joined,
    /// Reported Ready by Kubernetes.
    Ready,
    /// Terminated.
    Terminated,
}

/// One EC2 instance of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub instance_id: String,
    pub role: Role,
    pub index: u32,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub state: NodeState,
    /// The MicroK8s channel installed on the node (the spec's at launch; an upgrade moves it node
    /// by node, so a rollout that stopped shows which nodes it reached). Absent in records
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The zone the node runs in (availability, Local or Wavelength zone). Absent in records
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Its zone's type: `availability-zone`, `local-zone` or `wavelength-zone`. Absent in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_type: Option<String>,
    /// Its carrier IP (a node in a Wavelength zone, which has no public IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_ip: Option<String>,
    /// Its root volume's EBS type: `gp3`, or `gp2` in a Wavelength zone, which offers no gp3
    /// ([`placement::root_volume_type`](crate::placement::root_volume_type)). Absent in records
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

/// Why a cluster failed: the stage, the error name Step Functions saw, and a readable reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub stage: String,
    pub error: String,
    pub reason: String,
}

/// Why a cluster is `DEGRADED`: the nodes known unhealthy and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degradation {
    /// Instance ids.
    pub nodes: Vec<String>,
    pub reason: String,
    /// RFC 3339 UTC.
    pub since: String,
}

/// What kind of change an [`Update`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateKind {
    /// `workers` changes: nodes launched and joined, or drained, removed and terminated.
    Scale,
    /// `microk8s_channel` moves one minor up, node by node.
    Upgrade,
    /// `addons` enabled or disabled.
    Addons,
    /// One node replaced by a new one with the same role and index.
    ReplaceNode,
    /// `exposed_ports` changes: the security group's workload rules added and revoked.
    ExposedPorts,
}

/// How an [`Update`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum UpdateStatus {
    InProgress,
    Successful,
    Failed,
}

/// One change to a live cluster, as EKS records its updates: what was asked, by whom, how it
/// went. A failed update never destroys the cluster: the record returns to `ACTIVE` and the
/// update says `Failed` with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// `u-` and 16 lowercase hex characters.
    pub id: String,
    pub kind: UpdateKind,
    /// What was asked, e.g. `{"workers": {"from": 2, "to": 4}}`.
    pub params: serde_json::Value,
    pub status: UpdateStatus,
    /// The update execution (`<cluster id>-update-<update id>`).
    #[serde(default)]
    pub execution_arn: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub failure: Option<Failure>,
}

/// The most updates a record keeps (the oldest go first).
pub const MAX_UPDATES_KEPT: usize = 50;

/// The cluster record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub id: String,
    pub spec: ClusterSpec,
    pub status: Status,
    /// The stage running now, or the last one that ran.
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// The create execution that owns the cluster.
    #[serde(default)]
    pub execution_arn: Option<String>,
    /// The delete execution, once one started.
    #[serde(default)]
    pub delete_execution_arn: Option<String>,
    /// Which delete attempt `delete_execution_arn` is: 1 for the first delete execution the API
    /// started (`<id>-delete`), one more each time a `DELETE` resumes a delete whose execution
    /// ended without finishing (`<id>-delete-<n>`); 0 before the API started any.
    #[serde(default)]
    pub delete_attempt: u32,
    #[serde(default)]
    pub failure: Option<Failure>,
    /// While `DEGRADED`: which nodes and why.
    #[serde(default)]
    pub degraded: Option<Degradation>,
    /// The changes made to the live cluster, oldest first (at most [`MAX_UPDATES_KEPT`]).
    #[serde(default)]
    pub updates: Vec<Update>,
    /// The API endpoint written into the kubeconfig.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The SecureString parameter holding the kubeconfig (a reference, never the content).
    #[serde(default)]
    pub kubeconfig_parameter: Option<String>,
    #[serde(default)]
    pub security_group_id: Option<String>,
    /// The network load balancer in front of the control planes (`api_endpoint: "nlb"`), once
    /// made. Names and ARNs, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<ApiBalancer>,
    /// The IAM principal that asked for the cluster through the API (API Gateway's
    /// `authorizer.iam.userArn`; for an assumed role, the role without its session:
    /// [`crate::api::principal`]); absent for a cluster started from the console. Records from
    /// before the split may hold a whole session ARN: compare with
    /// [`crate::api::principal::same_owner`].
    #[serde(default)]
    pub created_by: Option<String>,
    /// The session name of the assumed-role session that asked for it, for the audit trail
    /// (`created_by` is the role: the caller chooses its session name, so it owns nothing).
    #[serde(default)]
    pub created_by_session: Option<String>,
    /// The reconcile's sampled Kubernetes node check (absent until the first sample).
    #[serde(default, skip_serializing_if = "NodeCheck::is_empty")]
    pub node_check: NodeCheck,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
    /// Incremented by every write; every write is conditional on the version it read.
    pub version: u64,
}

/// A cluster's API load balancer: the network load balancer, its TCP 16443 listener and the
/// target group of the control planes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiBalancer {
    /// Its DNS name: the host of the kubeconfig's server and a name in every API certificate.
    pub dns_name: String,
    pub load_balancer_arn: String,
    pub listener_arn: String,
    pub target_group_arn: String,
}

/// The reconcile's sampled Kubernetes node check of a serving cluster: a command sent to a
/// control plane by one run, read by a later run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCheck {
    /// When the last answer read was asked (epoch seconds); absent: never sampled (the cluster's
    /// own verify, when it became `ACTIVE`, counts as its last check).
    #[serde(default)]
    pub checked_at: Option<i64>,
    /// The command sent and not read yet.
    #[serde(default)]
    pub pending: Option<PendingCheck>,
}

impl NodeCheck {
    pub fn is_empty(&self) -> bool {
        self.checked_at.is_none() && self.pending.is_none()
    }
}

/// A node check sent and not read yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCheck {
    pub command_id: String,
    /// The control plane it runs on.
    pub instance_id: String,
    /// Epoch seconds.
    pub sent_at: i64,
}

impl ClusterRecord {
    /// A new record in `CREATING`.
    pub fn new(id: String, spec: ClusterSpec, execution_arn: Option<String>) -> Self {
        let now = crate::clock::now_rfc3339();
        ClusterRecord {
            id,
            spec,
            status: Status::Creating,
            stage: None,
            nodes: Vec::new(),
            execution_arn,
            delete_execution_arn: None,
            delete_attempt: 0,
            failure: None,
            degraded: None,
            updates: Vec::new(),
            endpoint: None,
            kubeconfig_parameter: None,
            security_group_id: None,
            balancer: None,
            created_by: None,
            created_by_session: None,
            node_check: NodeCheck::default(),
            created_at: now.clone(),
            updated_at: now,
            version: 1,
        }
    }

    /// Records an instance, or updates the one already recorded with the same id.
    pub fn upsert_node(&mut self, node: Node) {
        match self
            .nodes
            .iter_mut()
            .find(|n| n.instance_id == node.instance_id)
        {
            Some(existing) => *existing = node,
            None => {
                self.nodes.push(node);
                self.nodes.sort_by_key(|n| (n.role, n.index));
            }
        }
    }

    /// Sets the state of a recorded node.
    pub fn set_node_state(&mut self, instance_id: &str, state: NodeState) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.instance_id == instance_id) {
            node.state = state;
        }
    }
}

/// What happened in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Started,
    Progress,
    Finished,
    Failed,
}

/// One entry of a cluster's history. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub cluster_id: String,
    /// RFC 3339 UTC with nanoseconds: events sort by time.
    pub time: String,
    pub stage: String,
    pub phase: Phase,
    pub detail: String,
}

impl Event {
    /// An event stamped now.
    pub fn now(cluster_id: &str, stage: &str, phase: Phase, detail: impl Into<String>) -> Self {
        Event {
            cluster_id: cluster_id.into(),
            time: crate::clock::now_rfc3339(),
            stage: stage.into(),
            phase,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_allows_only_documented_moves() {
        use Status::*;
        for from in Status::ALL {
            for to in Status::ALL {
                let expected = from == to
                    || [
                        (Creating, Active),
                        (Creating, Failed),
                        (Active, Updating),
                        (Updating, Active),
                        (Updating, Degraded),
                        (Degraded, Updating),
                        (Degraded, Active),
                        (Degraded, Deleting),
                        (Active, Deleting),
                        (Failed, Deleting),
                        (Deleting, Deleted),
                    ]
                    .contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
            }
        }
        assert_eq!(Status::parse("ACTIVE"), Some(Active));
        assert_eq!(serde_json::to_string(&Deleting).unwrap(), "\"DELETING\"");
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::ControlPlane, Role::Worker] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
    }
}
