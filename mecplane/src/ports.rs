//! The ports: small traits shaped like the domain that the stages are written against. The AWS
//! adapters in [`crate::aws`] implement them for real; [`crate::fakes`] (feature `testing`)
//! implements them in memory for tests.

use async_trait::async_trait;

use crate::error::CloudError;
use crate::record::{ClusterRecord, Event, Role, Status};

/// An EC2 instance as the stages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    /// `None` when the instance carries no (or an unreadable) role tag.
    pub role: Option<Role>,
    /// `None` when the index tag is missing (a launch interrupted before tagging).
    pub index: Option<u32>,
    pub state: InstanceState,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    /// The carrier IP of a node in a Wavelength zone (its network interface's association):
    /// Wavelength has no public IPv4.
    pub carrier_ip: Option<String>,
    pub private_dns: Option<String>,
    /// The availability zone (or Local/Wavelength zone) it runs in, when EC2 said.
    pub zone: Option<String>,
    /// The subnet it was launched into, when EC2 said.
    pub subnet_id: Option<String>,
}

/// EC2 instance states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    /// Parses EC2's state name.
    pub fn parse(s: &str) -> InstanceState {
        match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            "stopping" => InstanceState::Stopping,
            _ => InstanceState::Stopped,
        }
    }

    /// EC2's state name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    /// Gone or going away for good.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

/// An instance carrying the project's cluster tag, as a fleet-wide listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedInstance {
    pub region: String,
    /// The value of its `mecplane:cluster` tag.
    pub cluster_id: String,
    pub instance: Instance,
    /// Epoch seconds (EC2's `LaunchTime`).
    pub launched_at: Option<i64>,
    /// The ids of the security groups it is in.
    pub security_groups: Vec<String>,
    /// Every tag it carries.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Its instance metadata options, when EC2 said.
    pub metadata: Option<MetadataOptions>,
}

/// IMDSv2 answers only within one network hop: a pod's packets cross a second (the CNI bridge),
/// so no pod reaches the node role's credentials. The launch role's IAM condition
/// (`ec2:MetadataHttpPutResponseHopLimit`) refuses any other value.
pub const METADATA_HOP_LIMIT: i32 = 1;

/// How an instance's metadata service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataOptions {
    /// IMDSv2 only (`HttpTokens` `required`).
    pub tokens_required: bool,
    /// `HttpPutResponseHopLimit`.
    pub hop_limit: Option<i32>,
}

impl MetadataOptions {
    /// What every launch sets: IMDSv2 only, [`METADATA_HOP_LIMIT`].
    pub const LAUNCH: MetadataOptions = MetadataOptions {
        tokens_required: true,
        hop_limit: Some(METADATA_HOP_LIMIT),
    };
}

/// A security group carrying the project's cluster tag, as a fleet-wide listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedGroup {
    pub region: String,
    pub group_id: String,
    /// The value of its `mecplane:cluster` tag.
    pub cluster_id: String,
    /// Epoch seconds, from its `mecplane:created-at` tag (EC2 keeps no creation time for a
    /// group); `None` when the tag is missing or unreadable.
    pub created_at: Option<i64>,
    /// Its ingress rules (as [`SecurityGroups::ingress`] reads them).
    pub ingress: Vec<IngressRule>,
}

/// A parameter's metadata (never its value), as a listing under a path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterInfo {
    pub name: String,
    /// Epoch seconds (`LastModifiedDate`).
    pub last_modified: Option<i64>,
}

/// Everything RunInstances needs for one node. Nodes are launched one per call so that every
/// tag, the index included, is set by RunInstances itself: the roles may not tag afterwards
/// (`ec2:CreateAction`), so nobody can turn an instance into a node by tagging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    pub cluster_id: String,
    pub role: Role,
    /// Its index within its role.
    pub index: u32,
    pub ami_id: String,
    pub instance_type: String,
    pub security_group_id: String,
    pub subnet_id: Option<String>,
    pub root_volume_gib: u32,
    /// The root volume's EBS type (`gp3`; `gp2` where gp3 is not offered:
    /// [`placement::root_volume_type`](crate::placement::root_volume_type)).
    pub root_volume_type: String,
    pub instance_profile: String,
    /// Every tag of the instance and its volume, set at creation: the deployment's node tags
    /// ([`Deployment::node_tags`](crate::resources::Deployment::node_tags)) and the spec's own.
    pub tags: Vec<(String, String)>,
    /// EC2 idempotency token.
    pub client_token: String,
    /// The subnet is in a Wavelength zone: the instances get a carrier IP (a network interface
    /// with `AssociateCarrierIpAddress`) instead of a public IPv4, which Wavelength does not have.
    pub carrier_ip: bool,
}

/// EC2 instances of clusters. An adapter lists only the instances its deployment owns
/// ([`Deployment::owns_instance`](crate::resources::Deployment::owns_instance)): the deployment's
/// tag and its node instance profile, whatever else an instance is tagged with.
#[async_trait]
pub trait Instances: Send + Sync {
    /// Every instance of this deployment tagged for the cluster, in any state (paginated to
    /// the end).
    async fn find(&self, cluster_id: &str) -> Result<Vec<Instance>, CloudError>;
    /// Launches one instance with IMDSv2 required, an encrypted root volume of the request's
    /// type, the node instance profile, and every tag of the request.
    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>, CloudError>;
    /// Terminates instances; already terminated or unknown ones are not an error.
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError>;
    /// Every instance of this deployment in the region carrying the project's cluster tag,
    /// whatever the cluster (pages of 1,000: one call per 1,000 instances), stamped with `region`.
    async fn find_tagged(&self, region: &str) -> Result<Vec<TaggedInstance>, CloudError>;
}

/// One ingress rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressSource {
    /// From members of the same security group.
    SameGroup,
    /// From an IPv4 CIDR.
    Cidr(String),
}

/// An ingress rule: protocol (`tcp`/`udp`), ports (`from_port..=to_port`), source, description.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct IngressRule {
    pub protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    pub source: IngressSource,
    pub description: String,
}

impl IngressRule {
    /// Whether two rules open the same thing (protocol, ports, source; not the description).
    pub fn same_as(&self, other: &IngressRule) -> bool {
        self.protocol.eq_ignore_ascii_case(&other.protocol)
            && (self.from_port, self.to_port) == (other.from_port, other.to_port)
            && self.source == other.source
    }
}

/// A subnet as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub subnet_id: String,
    pub vpc_id: String,
    /// Its availability zone (or Local / Wavelength zone).
    pub zone: String,
}

/// A zone as placement sees it (`DescribeAvailabilityZones` with every zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    /// `availability-zone`, `local-zone` or `wavelength-zone`.
    pub zone_type: String,
    /// `opt-in-not-required` or `opted-in`: instances may be launched there.
    pub usable: bool,
    /// Its zone group (what an opt-in names).
    pub group: String,
    /// The zone it hangs off (Local and Wavelength zones).
    pub parent: Option<String>,
}

/// Zones and the instance types offered in them.
#[async_trait]
pub trait Zones: Send + Sync {
    /// The zones named that exist, opted in or not (one call).
    async fn zones(&self, names: &[String]) -> Result<Vec<Zone>, CloudError>;
    /// The (zone, instance type) pairs offered among `zones`, of `instance_type` alone when named
    /// (`DescribeInstanceTypeOfferings`, location type availability-zone, all pages).
    async fn offerings(
        &self,
        zones: &[String],
        instance_type: Option<&str>,
    ) -> Result<Vec<(String, String)>, CloudError>;
}

/// One route of a route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The IPv4 destination (`0.0.0.0/0`).
    pub destination: String,
    /// Where it goes: `local`, a gateway (`igw-…`, `cagw-…`, `nat-…`, `tgw-…`), an interface…
    pub target: String,
}

/// The route table a subnet uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    pub route_table_id: String,
    /// Whether it is its VPC's main table (the subnet has no table of its own).
    pub main: bool,
    pub routes: Vec<Route>,
}

/// Route tables: what a Wavelength subnet needs (`0.0.0.0/0` to a carrier gateway) is checked
/// before anything is made.
#[async_trait]
pub trait Routes: Send + Sync {
    /// The table `subnet_id` uses: the one associated with it, else the main table of its VPC
    /// `vpc_id` (`DescribeRouteTables`, one or two calls); `None` when there is neither.
    async fn route_table(
        &self,
        subnet_id: &str,
        vpc_id: &str,
    ) -> Result<Option<RouteTable>, CloudError>;
}

/// A machine image as a launch sees it (`DescribeImages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub image_id: String,
    /// EC2's name for it: `x86_64`, `arm64`, `i386`, `x86_64_mac`, `arm64_mac`.
    pub architecture: String,
    /// The owning account.
    pub owner_id: String,
    /// The owner's alias, when it has one (`amazon`, `aws-marketplace`).
    pub owner_alias: Option<String>,
    /// `available`, `pending`, `failed`, …
    pub state: String,
}

/// Machine images.
#[async_trait]
pub trait Images: Send + Sync {
    /// The image, if it exists in the region and may be seen (one `DescribeImages` filtered by
    /// the id: an unknown id is `None`, not an error).
    async fn image(&self, image_id: &str) -> Result<Option<Image>, CloudError>;
}

/// Security groups of clusters.
#[async_trait]
pub trait SecurityGroups: Send + Sync {
    /// The cluster's security group, found by its tag, if it exists.
    async fn find_group(&self, cluster_id: &str) -> Result<Option<String>, CloudError>;
    /// Creates the group (in the subnet's VPC, or the default VPC) with the cluster tags.
    async fn create_group(
        &self,
        cluster_id: &str,
        cluster_name: &str,
        subnet_id: Option<&str>,
    ) -> Result<String, CloudError>;
    /// The group's ingress rules now.
    async fn ingress(&self, group_id: &str) -> Result<Vec<IngressRule>, CloudError>;
    /// Adds rules; a rule that already exists is not an error.
    async fn authorize(&self, group_id: &str, rules: &[IngressRule]) -> Result<(), CloudError>;
    /// Removes rules; a rule that is not there is not an error.
    async fn revoke(&self, group_id: &str, rules: &[IngressRule]) -> Result<(), CloudError>;
    /// The subnets among `subnet_ids` that exist (one DescribeSubnets; the others are left out).
    async fn subnets(&self, subnet_ids: &[String]) -> Result<Vec<Subnet>, CloudError>;
    /// Every subnet of a VPC (DescribeSubnets filtered by VPC, all pages; none when the VPC
    /// does not exist).
    async fn vpc_subnets(&self, vpc_id: &str) -> Result<Vec<Subnet>, CloudError>;
    /// Deletes the group; a missing group is not an error, one still in use is `DependencyViolation`.
    async fn delete_group(&self, group_id: &str) -> Result<(), CloudError>;
    /// Every security group in the region carrying the project's cluster tag, whatever the
    /// cluster, with its rules (pages of 1,000), stamped with `region`.
    async fn find_tagged_groups(&self, region: &str) -> Result<Vec<TaggedGroup>, CloudError>;
}

/// A network load balancer as the stages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    pub arn: String,
    /// Its DNS name: the cluster's API endpoint (`api_endpoint: "nlb"`).
    pub dns_name: String,
}

/// What a cluster's API load balancer is made of; every part named by the cluster
/// ([`crate::resources::balancer_name`]) and tagged with the cluster tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerRequest {
    /// The name of the load balancer and of its target group (unique per region).
    pub name: String,
    /// The subnets it spans (the control planes', one per zone).
    pub subnet_ids: Vec<String>,
    /// The security groups it is in (the cluster's: its rules are the balancer's too).
    pub security_group_ids: Vec<String>,
    /// The VPC of its target group.
    pub vpc_id: String,
    /// The TCP port it listens on, forwards to and health checks.
    pub port: u16,
    /// The tags of every part: the cluster tags and the spec's own.
    pub tags: Vec<(String, String)>,
}

/// Which part of a cluster's API load balancing a [`TaggedBalancing`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BalancingPart {
    LoadBalancer,
    TargetGroup,
}

impl BalancingPart {
    /// `load balancer`, `target group`.
    pub fn as_str(self) -> &'static str {
        match self {
            BalancingPart::LoadBalancer => "load balancer",
            BalancingPart::TargetGroup => "target group",
        }
    }
}

/// A load balancer or target group carrying the project's cluster tag, as the reconcile finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedBalancing {
    pub region: String,
    pub part: BalancingPart,
    pub arn: String,
    pub name: String,
    /// The value of its `mecplane:cluster` tag.
    pub cluster_id: String,
    /// Epoch seconds: a load balancer's `CreatedTime`; a target group's `mecplane:created-at`
    /// tag (ELB keeps no creation time for a target group). `None` when unknown.
    pub created_at: Option<i64>,
}

/// Elastic Load Balancing (v2): the network load balancer in front of an HA cluster's control
/// planes, its TCP listener and its target group of instances.
#[async_trait]
pub trait LoadBalancers: Send + Sync {
    /// The load balancer named `name`, if one exists.
    async fn find_balancer(&self, name: &str) -> Result<Option<Balancer>, CloudError>;
    /// Creates an internet-facing network load balancer over the request's subnets, in its
    /// security groups, with its tags.
    async fn create_balancer(&self, request: &BalancerRequest) -> Result<Balancer, CloudError>;
    /// Deletes a load balancer (and so its listeners); a missing one is not an error.
    async fn delete_balancer(&self, arn: &str) -> Result<(), CloudError>;
    /// The ARN of the target group named `name`, if one exists.
    async fn find_target_group(&self, name: &str) -> Result<Option<String>, CloudError>;
    /// Creates a TCP target group of instances on the request's port and VPC, health checked
    /// over TCP on that port, with its tags.
    async fn create_target_group(&self, request: &BalancerRequest) -> Result<String, CloudError>;
    /// Deletes a target group; a missing one is not an error, one a listener still forwards to
    /// is `DependencyViolation`.
    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError>;
    /// The listeners of a load balancer as (listener ARN, port, target group forwarded to).
    async fn listeners(
        &self,
        balancer_arn: &str,
    ) -> Result<Vec<(String, u16, Option<String>)>, CloudError>;
    /// Creates a TCP listener forwarding to the target group, with the request's tags.
    async fn create_listener(
        &self,
        balancer_arn: &str,
        target_group_arn: &str,
        request: &BalancerRequest,
    ) -> Result<String, CloudError>;
    /// Deletes a listener; a missing one is not an error.
    async fn delete_listener(&self, arn: &str) -> Result<(), CloudError>;
    /// The instance ids registered in a target group.
    async fn targets(&self, target_group_arn: &str) -> Result<Vec<String>, CloudError>;
    /// Registers instances (on the target group's port); one already registered is not an error.
    async fn register(
        &self,
        target_group_arn: &str,
        instance_ids: &[String],
    ) -> Result<(), CloudError>;
    /// Deregisters instances; one not registered is not an error.
    async fn deregister(
        &self,
        target_group_arn: &str,
        instance_ids: &[String],
    ) -> Result<(), CloudError>;
    /// Every load balancer and target group of the region named like a cluster's
    /// ([`crate::resources::BALANCER_NAME_PREFIX`]) and carrying the project's cluster tag,
    /// whatever the cluster, stamped with `region`.
    async fn find_tagged_balancing(&self, region: &str)
        -> Result<Vec<TaggedBalancing>, CloudError>;
}

/// Where a node command is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    /// Not finished yet.
    Running,
    /// Exit 0, with the (possibly cut) standard output.
    Success { stdout: String },
    /// Finished otherwise.
    Failed {
        status: String,
        exit_code: i32,
        stdout: String,
        stderr: String,
    },
    /// The execution timeout passed.
    TimedOut,
}

/// A command already sent to an instance (found by its comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    pub command_id: String,
    pub comment: String,
    /// When SSM received it (epoch seconds), if it says.
    pub requested_at: Option<i64>,
}

/// SSM Run Command: scripts on the nodes.
#[async_trait]
pub trait NodeCommands: Send + Sync {
    /// Which of `instance_ids` have an SSM agent online.
    async fn online(&self, instance_ids: &[String]) -> Result<Vec<String>, CloudError>;
    /// Sends `script` to one instance through `AWS-RunShellScript`. `comment` is the idempotency
    /// key (at most 100 characters, never a secret).
    async fn send(
        &self,
        instance_id: &str,
        script: &str,
        comment: &str,
        timeout_seconds: u32,
    ) -> Result<String, CloudError>;
    /// Commands recently sent to the instance, newest first.
    async fn sent(&self, instance_id: &str) -> Result<Vec<SentCommand>, CloudError>;
    /// The command's status on the instance.
    async fn status(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> Result<CommandStatus, CloudError>;
    /// The SSM agent of each of `instance_ids` that SSM knows (`DescribeInstanceInformation`,
    /// batched); an instance SSM does not know is absent.
    async fn pings(&self, instance_ids: &[String]) -> Result<Vec<AgentPing>, CloudError>;
    /// The agents of `instance_ids` that SSM knows and that are not `Online`
    /// (`DescribeInstanceInformation` filtered by ping status: calls grow with the lost agents,
    /// not with the fleet). An instance SSM does not know at all is not answered.
    async fn lost_agents(&self, instance_ids: &[String]) -> Result<Vec<AgentPing>, CloudError>;
}

/// An SSM agent as `DescribeInstanceInformation` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPing {
    pub instance_id: String,
    /// `Online`, `ConnectionLost`, `Inactive`.
    pub status: String,
    /// Its last successful ping (epoch seconds), if SSM says.
    pub last_ping: Option<i64>,
}

impl AgentPing {
    pub fn is_online(&self) -> bool {
        self.status == "Online"
    }
}

/// An instance's failing EC2 status checks, as `DescribeInstanceStatus` reports a running one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCheck {
    pub instance_id: String,
    /// The impaired checks: `system`, `instance` (empty: none impaired).
    pub impaired: Vec<String>,
    /// Since when (epoch seconds) the earliest impaired check has failed (EC2's `ImpairedSince`).
    pub impaired_since: Option<i64>,
}

/// EC2 status checks of instances.
#[async_trait]
pub trait StatusChecks: Send + Sync {
    /// The status checks of the running ones of `instance_ids`; only instances with an impaired
    /// check are answered (`DescribeInstanceStatus` over the region's running instances, pages of
    /// 1,000: one call per 1,000 instances).
    async fn impaired(&self, instance_ids: &[String]) -> Result<Vec<StatusCheck>, CloudError>;
}

/// SSM Parameter Store.
#[async_trait]
pub trait Parameters: Send + Sync {
    /// A plain (public) parameter such as an AMI id; `None` when it does not exist.
    async fn get(&self, name: &str) -> Result<Option<String>, CloudError>;
    /// A SecureString, decrypted; `None` when it does not exist.
    async fn get_secret(&self, name: &str) -> Result<Option<String>, CloudError>;
    /// Writes a SecureString (overwriting); the advanced tier when the value exceeds 4 KB.
    async fn put_secret(&self, name: &str, value: &str) -> Result<(), CloudError>;
    /// Deletes parameters; missing ones are not an error.
    async fn delete(&self, names: &[String]) -> Result<(), CloudError>;
    /// The metadata of every parameter under `path` (recursively, paged), never a value.
    async fn list_under(&self, path: &str) -> Result<Vec<ParameterInfo>, CloudError>;
}

/// A page of cluster records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    pub records: Vec<ClusterRecord>,
    /// Opaque; pass back to get the next page.
    pub next_token: Option<String>,
}

/// Which records a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub region: Option<String>,
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new and now belongs to this request.
    Claimed,
    /// The key was used before for `cluster_id` with a request whose hash was `request_hash`.
    Existing {
        cluster_id: String,
        request_hash: String,
    },
}

/// The cluster records and their events (DynamoDB). Every write is conditional.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Stores a new record and claims its name in one transaction. A name claimed by another live
    /// cluster: `Ok(false)` — the caller decides whether it is the same cluster (a retry).
    async fn create(&self, record: &ClusterRecord) -> Result<bool, CloudError>;
    async fn get(&self, cluster_id: &str) -> Result<Option<ClusterRecord>, CloudError>;
    /// The live (not `DELETED`) cluster holding the name.
    async fn find_by_name(&self, name: &str) -> Result<Option<ClusterRecord>, CloudError>;
    /// Writes `record` with `version + 1` if the stored version is still `record.version`
    /// (`ConditionFailed` otherwise) and returns what was written. Moving to `DELETED` releases the name.
    async fn update(&self, record: &ClusterRecord) -> Result<ClusterRecord, CloudError>;
    /// Newest first, filtered, paginated. Reads a bounded part of the table per call, so a page
    /// may hold fewer than `limit` records (even none) and still carry a `next_token`.
    async fn list(
        &self,
        filter: &ListFilter,
        next_token: Option<&str>,
        limit: u32,
    ) -> Result<RecordPage, CloudError>;
    async fn append_event(&self, event: &Event) -> Result<(), CloudError>;
    /// A cluster's events, oldest first.
    async fn events(&self, cluster_id: &str) -> Result<Vec<Event>, CloudError>;
    /// Claims an API idempotency key for a cluster (conditional put).
    async fn claim_key(
        &self,
        key: &str,
        cluster_id: &str,
        request_hash: &str,
    ) -> Result<KeyClaim, CloudError>;
    /// The cluster an unexpired idempotency key was claimed for, and the hash of the request
    /// that claimed it (`KeyClaim::Existing`); `None` when the key is free. A read: nothing is
    /// claimed.
    async fn find_key(&self, key: &str) -> Result<Option<KeyClaim>, CloudError>;
}

/// The state of a Step Functions execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
}

/// Step Functions executions.
#[async_trait]
pub trait Executions: Send + Sync {
    /// Starts a named execution and returns its ARN. Starting the same name with the same input
    /// again returns the first execution's ARN (as Step Functions does while it runs, and also after).
    async fn start(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<String, CloudError>;
    async fn status(&self, execution_arn: &str) -> Result<ExecutionStatus, CloudError>;
}
