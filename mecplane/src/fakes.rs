//! In-memory fakes of every port (feature `testing`), for stage and API tests. They keep enough
//! of AWS's behaviour to catch real mistakes: conditional writes on versions, name claims, tags,
//! idempotent deletes, injected failures; a command finishes when it is first polled, with an
//! outcome a test chooses per script.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::CloudError;
use crate::ports::*;
use crate::record::{ClusterRecord, Event, Role, Status};
use crate::resources::{self, Deployment};

/// A command the fake SSM received.
#[derive(Debug, Clone)]
pub struct FakeCommand {
    pub command_id: String,
    pub instance_id: String,
    /// From the script's `# mecplane-script: <name>` header.
    pub script: String,
    pub comment: String,
    pub text: String,
    pub status: CommandStatus,
    /// When it was sent (epoch seconds).
    pub requested_at: i64,
}

/// An instance the fake EC2 launched, with what it was launched with.
#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub instance: Instance,
    pub cluster_id: String,
    /// Epoch seconds.
    pub launched_at: i64,
    pub tags: BTreeMap<String, String>,
    pub request: LaunchRequest,
    /// Its metadata options ([`MetadataOptions::LAUNCH`] until a test changes them).
    pub metadata: MetadataOptions,
    /// The ARN of its instance profile, as EC2 answers it (`IamInstanceProfile.Arn`).
    pub profile_arn: Option<String>,
}

impl FakeInstance {
    /// Whether `deployment` owns it, by the same rule as the EC2 adapter.
    pub fn owned_by(&self, deployment: &Deployment) -> bool {
        deployment.owns_instance(
            self.tags.get(resources::TAG_DEPLOYMENT).map(String::as_str),
            self.profile_arn.as_deref(),
        )
    }
}

/// The ARN EC2 answers for the instance profile named `name`.
fn profile_arn(name: &str) -> String {
    format!("arn:aws:iam::123456789012:instance-profile/{name}")
}

type Responder = Arc<dyn Fn(&FakeCommand, &[FakeInstance]) -> CommandStatus + Send + Sync>;

#[derive(Default)]
struct CloudState {
    instances: Vec<FakeInstance>,
    groups: BTreeMap<String, (String, Vec<IngressRule>)>,
    /// The deployment tag each group was created with.
    group_deployment: HashMap<String, String>,
    offline: HashSet<String>,
    /// The last ping of an agent taken offline (epoch seconds).
    last_ping: HashMap<String, i64>,
    /// Impaired status checks: instance → (checks, since).
    impaired: HashMap<String, (Vec<String>, i64)>,
    /// DescribeInstanceStatus and DescribeInstanceInformation calls answered.
    health_calls: usize,
    commands: Vec<FakeCommand>,
    parameters: BTreeMap<String, (String, bool)>,
    launch_failures: VecDeque<CloudError>,
    group_delete_failures: VecDeque<CloudError>,
    next_id: u64,
    /// DescribeInstances calls (`find`, `find_tagged`) answered.
    describe_calls: usize,
    /// When each group was created (epoch seconds; `None`: no creation-time tag).
    group_created: HashMap<String, Option<i64>>,
    /// When each parameter was last written (epoch seconds).
    parameter_written: HashMap<String, i64>,
    /// Subnets that exist: id → (VPC, zone).
    subnets: BTreeMap<String, (String, String)>,
    /// Zones that exist, and the instance types each offers (`None`: every type).
    zones: BTreeMap<String, (Zone, Option<Vec<String>>)>,
    /// Machine images that exist.
    images: BTreeMap<String, Image>,
    /// Errors the next subnet and zone lookups answer (DescribeSubnets, DescribeAvailabilityZones,
    /// DescribeInstanceTypeOfferings), one each.
    lookup_failures: VecDeque<CloudError>,
    /// Subnet and zone lookups asked (those calls, failed or answered).
    lookup_calls: usize,
    /// Mutating EC2 and Parameter Store calls answered (launch, tag, terminate, create, authorize,
    /// revoke and delete a group, put and delete parameters).
    mutating_calls: usize,
    /// Route tables: a subnet's own (by subnet id), or a VPC's main one (by VPC id).
    route_tables: BTreeMap<String, RouteTable>,
}

impl CloudState {
    /// The next injected lookup failure, if any.
    fn lookup_failed(&mut self) -> Result<(), CloudError> {
        self.lookup_calls += 1;
        self.lookup_failures.pop_front().map_or(Ok(()), Err)
    }

    /// The rules of a group an authorize or revoke is about to change (a mutating call counted).
    fn changing_rules_of(&mut self, group_id: &str) -> Result<&mut Vec<IngressRule>, CloudError> {
        self.mutating_calls += 1;
        self.groups
            .get_mut(group_id)
            .map(|(_, rules)| rules)
            .ok_or_else(|| CloudError::NotFound(group_id.into()))
    }
}

/// Fake EC2 + SSM: implements `Instances`, `SecurityGroups`, `NodeCommands` and `Parameters`.
/// As the adapters, it is one deployment's view: its listings answer only what that deployment
/// owns ([`Deployment::owns_instance`], [`Deployment::owns_tagged`]); [`FakeCloud::as_deployment`]
/// gives another deployment's view of the same account.
#[derive(Clone)]
pub struct FakeCloud {
    state: Arc<Mutex<CloudState>>,
    responder: Arc<Mutex<Responder>>,
    deployment: Deployment,
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new()
    }
}

/// The script name in a command text's header line.
pub fn script_name(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("# mecplane-script: "))
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

impl FakeCloud {
    /// Every command succeeds with a plain result line, except `verify`, which reports every
    /// running instance Ready, and `kubeconfig`, which prints a small kubeconfig.
    pub fn new() -> Self {
        let responder: Responder = Arc::new(default_outcome);
        FakeCloud {
            state: Arc::default(),
            responder: Arc::new(Mutex::new(responder)),
            deployment: Deployment::default(),
        }
    }

    /// Another deployment's view of the same account and region (same instances, groups,
    /// commands and parameters).
    pub fn as_deployment(&self, deployment: Deployment) -> FakeCloud {
        FakeCloud {
            deployment,
            ..self.clone()
        }
    }

    /// Whether the group was created by this view's deployment.
    fn owns_group(&self, state: &CloudState, group_id: &str) -> bool {
        self.deployment
            .owns_tagged(state.group_deployment.get(group_id).map(String::as_str))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CloudState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chooses the outcome of every later command.
    pub fn respond_with(
        &self,
        f: impl Fn(&FakeCommand, &[FakeInstance]) -> CommandStatus + Send + Sync + 'static,
    ) {
        *self.responder.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
    }

    /// Makes the next RunInstances fail with `error`.
    pub fn fail_next_launch(&self, error: CloudError) {
        self.lock().launch_failures.push_back(error);
    }

    /// Makes the next subnet or zone lookup (DescribeSubnets, DescribeAvailabilityZones,
    /// DescribeInstanceTypeOfferings) fail with `error`.
    pub fn fail_next_lookup(&self, error: CloudError) {
        self.lock().lookup_failures.push_back(error);
    }

    /// Makes the next DeleteSecurityGroup fail with `error`.
    pub fn fail_next_group_delete(&self, error: CloudError) {
        self.lock().group_delete_failures.push_back(error);
    }

    /// Takes an instance's SSM agent offline (its last ping now) or back online.
    pub fn set_online(&self, instance_id: &str, online: bool) {
        self.set_offline_since(instance_id, (!online).then(crate::clock::now_epoch));
    }

    /// Takes an instance's SSM agent offline with its last ping at `last_ping` (epoch seconds),
    /// or back online (`None`).
    pub fn set_offline_since(&self, instance_id: &str, last_ping: Option<i64>) {
        let mut s = self.lock();
        match last_ping {
            None => {
                s.offline.remove(instance_id);
                s.last_ping.remove(instance_id);
            }
            Some(t) => {
                s.offline.insert(instance_id.to_string());
                s.last_ping.insert(instance_id.to_string(), t);
            }
        }
    }

    /// Fails an instance's EC2 status checks (`system`, `instance`) since `since` (epoch
    /// seconds), or clears them (no checks).
    pub fn set_impaired(&self, instance_id: &str, checks: &[&str], since: i64) {
        let mut s = self.lock();
        if checks.is_empty() {
            s.impaired.remove(instance_id);
        } else {
            let checks = checks.iter().map(|c| c.to_string()).collect();
            s.impaired.insert(instance_id.to_string(), (checks, since));
        }
    }

    /// How many subnet and zone lookups (DescribeSubnets, DescribeAvailabilityZones,
    /// DescribeInstanceTypeOfferings) were asked.
    pub fn lookup_calls(&self) -> usize {
        self.lock().lookup_calls
    }

    /// How many DescribeInstanceStatus and DescribeInstanceInformation calls were answered.
    pub fn health_calls(&self) -> usize {
        self.lock().health_calls
    }

    /// Sets an instance's EC2 state.
    pub fn set_state(&self, instance_id: &str, state: InstanceState) {
        for i in self
            .lock()
            .instances
            .iter_mut()
            .filter(|i| i.instance.instance_id == instance_id)
        {
            i.instance.state = state;
        }
    }

    pub fn instances(&self) -> Vec<FakeInstance> {
        self.lock().instances.clone()
    }

    /// How many DescribeInstances calls were answered.
    pub fn describe_calls(&self) -> usize {
        self.lock().describe_calls
    }

    /// Sets an instance's state behind the control plane's back (a node lost or stopped).
    pub fn set_instance_state(&self, instance_id: &str, state: InstanceState) {
        for i in self
            .lock()
            .instances
            .iter_mut()
            .filter(|i| i.instance.instance_id == instance_id)
        {
            i.instance.state = state;
        }
    }

    /// Makes a subnet exist in `vpc_id` and `zone` (a standard zone offering every type, unless
    /// [`FakeCloud::add_zone`] said otherwise).
    pub fn add_subnet(&self, subnet_id: &str, vpc_id: &str, zone: &str) {
        let mut s = self.lock();
        s.subnets
            .insert(subnet_id.into(), (vpc_id.into(), zone.into()));
        s.zones.entry(zone.into()).or_insert_with(|| {
            let standard = Zone {
                name: zone.into(),
                zone_type: "availability-zone".into(),
                usable: true,
                group: zone.trim_end_matches(char::is_alphabetic).into(),
                parent: None,
            };
            (standard, None)
        });
    }

    /// Gives a subnet (or, with a VPC id, that VPC's main table) a route table with `routes`
    /// (destination, target), replacing the one it had.
    pub fn set_route_table(&self, subnet_or_vpc: &str, routes: &[(&str, &str)]) {
        let mut s = self.lock();
        let table = RouteTable {
            route_table_id: format!("rtb-{}", subnet_or_vpc.rsplit('-').next().unwrap_or("0")),
            main: subnet_or_vpc.starts_with("vpc-"),
            routes: routes
                .iter()
                .map(|(destination, target)| Route {
                    destination: destination.to_string(),
                    target: target.to_string(),
                })
                .collect(),
        };
        s.route_tables.insert(subnet_or_vpc.into(), table);
    }

    /// Makes an image exist (replacing one of the same id).
    pub fn add_image(&self, image: Image) {
        self.lock().images.insert(image.image_id.clone(), image);
    }

    /// Makes a zone exist with the instance types it offers.
    pub fn add_zone(&self, zone: Zone, offered: &[&str]) {
        let offered = offered.iter().map(|t| t.to_string()).collect();
        self.lock()
            .zones
            .insert(zone.name.clone(), (zone, Some(offered)));
    }

    /// Adds an instance with the project's tags for `cluster_id`, launched `age_seconds` ago
    /// (an orphan, or a fleet for the benchmark) and answers its id.
    pub fn add_tagged(&self, cluster_id: &str, role: Role, index: u32, age_seconds: i64) -> String {
        let id = self.id("i");
        let instance = Instance {
            instance_id: id.clone(),
            role: Some(role),
            index: Some(index),
            state: InstanceState::Running,
            private_ip: None,
            public_ip: None,
            carrier_ip: None,
            private_dns: None,
            zone: Some("us-east-1a".into()),
            subnet_id: None,
        };
        // The standard tags of a node (the cluster id stands in for its name).
        let tags = self
            .deployment
            .node_tags(cluster_id, cluster_id, role, index)
            .into_iter()
            .collect();
        self.lock().instances.push(FakeInstance {
            profile_arn: Some(profile_arn(self.deployment.node_profile())),
            instance,
            cluster_id: cluster_id.into(),
            launched_at: crate::clock::now_epoch() - age_seconds,
            metadata: MetadataOptions::LAUNCH,
            tags,
            request: LaunchRequest {
                cluster_id: cluster_id.into(),
                role,
                index,
                ami_id: String::new(),
                instance_type: String::new(),
                security_group_id: String::new(),
                subnet_id: None,
                root_volume_gib: 0,
                root_volume_type: String::new(),
                instance_profile: String::new(),
                tags: Vec::new(),
                client_token: String::new(),
                carrier_ip: false,
            },
        });
        id
    }

    /// Adds a running instance that someone made outside the deployment to look like one of its
    /// nodes: the project's node tags for `cluster_id`, but the deployment tag and instance
    /// profile given (`None`: none), and answers its id.
    pub fn add_look_alike(
        &self,
        cluster_id: &str,
        role: Role,
        index: u32,
        deployment_tag: Option<&str>,
        profile: Option<&str>,
    ) -> String {
        let id = self.add_tagged(cluster_id, role, index, 0);
        let mut s = self.lock();
        let i = s
            .instances
            .iter_mut()
            .find(|i| i.instance.instance_id == id)
            .expect("just added");
        match deployment_tag {
            Some(d) => i.tags.insert(resources::TAG_DEPLOYMENT.into(), d.into()),
            None => i.tags.remove(resources::TAG_DEPLOYMENT),
        };
        i.profile_arn = profile.map(profile_arn);
        id
    }

    /// Every instance of the account and region, whoever owns it (what EC2 holds).
    pub fn all_instances(&self) -> Vec<FakeInstance> {
        self.lock().instances.clone()
    }

    /// Changes an instance's metadata options behind the control plane's back.
    pub fn set_metadata(&self, instance_id: &str, metadata: MetadataOptions) {
        for i in self
            .lock()
            .instances
            .iter_mut()
            .filter(|i| i.instance.instance_id == instance_id)
        {
            i.metadata = metadata;
        }
    }

    /// Removes a tag from an instance behind the control plane's back.
    pub fn remove_tag(&self, instance_id: &str, key: &str) {
        for i in self
            .lock()
            .instances
            .iter_mut()
            .filter(|i| i.instance.instance_id == instance_id)
        {
            i.tags.remove(key);
        }
    }

    /// Adds a security group tagged for `cluster_id`, created `age_seconds` ago (`None`: without
    /// the creation-time tag, as groups made before it existed), and answers its id.
    pub fn add_group(&self, cluster_id: &str, age_seconds: Option<i64>) -> String {
        let id = self.id("sg");
        let mut s = self.lock();
        s.groups.insert(id.clone(), (cluster_id.into(), Vec::new()));
        s.group_deployment
            .insert(id.clone(), self.deployment.id().into());
        s.group_created.insert(
            id.clone(),
            age_seconds.map(|a| crate::clock::now_epoch() - a),
        );
        id
    }

    /// Adds ingress rules to a group behind the control plane's back.
    pub fn add_rules(&self, group_id: &str, rules: &[IngressRule]) {
        if let Some((_, existing)) = self.lock().groups.get_mut(group_id) {
            existing.extend(rules.iter().cloned());
        }
    }

    /// Removes ingress rules from a group behind the control plane's back.
    pub fn remove_rules(&self, group_id: &str, rules: &[IngressRule]) {
        if let Some((_, existing)) = self.lock().groups.get_mut(group_id) {
            existing.retain(|r| !rules.iter().any(|gone| gone.same_as(r)));
        }
    }

    /// Makes a parameter look last written `age_seconds` ago.
    pub fn age_parameter(&self, name: &str, age_seconds: i64) {
        self.lock()
            .parameter_written
            .insert(name.into(), crate::clock::now_epoch() - age_seconds);
    }

    /// How many mutating EC2 and Parameter Store calls were answered.
    pub fn mutating_calls(&self) -> usize {
        self.lock().mutating_calls
    }

    /// Instances not terminated.
    pub fn live_instances(&self) -> Vec<FakeInstance> {
        self.instances()
            .into_iter()
            .filter(|i| !i.instance.state.is_gone())
            .collect()
    }

    pub fn commands(&self) -> Vec<FakeCommand> {
        self.lock().commands.clone()
    }

    /// Commands of one script, in the order sent.
    pub fn commands_of(&self, script: &str) -> Vec<FakeCommand> {
        self.commands()
            .into_iter()
            .filter(|c| c.script == script)
            .collect()
    }

    /// Security groups: id → (cluster id, rules).
    pub fn groups(&self) -> BTreeMap<String, (String, Vec<IngressRule>)> {
        self.lock().groups.clone()
    }

    /// Parameters: name → (value, secure).
    pub fn parameters(&self) -> BTreeMap<String, (String, bool)> {
        self.lock().parameters.clone()
    }

    /// Puts a plain parameter (an AMI id, as AWS publishes them).
    pub fn put_public(&self, name: &str, value: &str) {
        self.lock()
            .parameters
            .insert(name.into(), (value.into(), false));
    }

    fn id(&self, prefix: &str) -> String {
        let mut s = self.lock();
        s.next_id += 1;
        format!("{prefix}-{:017x}", s.next_id)
    }
}

/// The kubeconfig the fake `kubeconfig` script seals (with the secrets a real one has).
pub const FAKE_KUBECONFIG: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://10.0.0.1:16443\n  name: microk8s-cluster\nusers:\n- name: admin\n  user:\n    token: secret-admin-token\n";

/// What a command prints by default (see [`FakeCloud::new`]).
pub fn default_outcome(cmd: &FakeCommand, instances: &[FakeInstance]) -> CommandStatus {
    if let Some(answer) = crate::stages::join_nodes::fake_answer(&cmd.script, &cmd.text) {
        return answer;
    }
    match cmd.script.as_str() {
        "verify" => {
            let cluster = instances
                .iter()
                .find(|i| i.instance.instance_id == cmd.instance_id)
                .map(|i| i.cluster_id.clone());
            let mut out = String::new();
            let mut n = 0;
            for i in instances
                .iter()
                .filter(|i| Some(&i.cluster_id) == cluster.as_ref() && !i.instance.state.is_gone())
            {
                n += 1;
                out.push_str(&format!(
                    "NODE ip-{} Ready {} {}\n",
                    i.instance.instance_id,
                    i.instance.private_ip.clone().unwrap_or_default(),
                    i.instance.role.map(Role::as_str).unwrap_or("worker")
                ));
            }
            out.push_str(&format!("MECPLANE_RESULT nodes={n} ready={n}\n"));
            CommandStatus::Success { stdout: out }
        }
        "kubeconfig" => {
            // Sealed to the stage's public key, as scripts/kubeconfig.sh does with openssl.
            let public = cmd
                .text
                .lines()
                .find_map(|l| l.strip_prefix("export TRANSPORT_KEY="))
                .map(|v| v.trim_matches('\''))
                .unwrap_or_default();
            match crate::sealed::seal(public, FAKE_KUBECONFIG) {
                Ok(line) => CommandStatus::Success {
                    stdout: format!("{line}\nMECPLANE_RESULT kubeconfig=sealed\n"),
                },
                Err(e) => CommandStatus::Failed {
                    status: "Failed".into(),
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: format!("kubeconfig: {e}"),
                },
            }
        }
        other => CommandStatus::Success {
            stdout: format!("MECPLANE_RESULT {other}=ok\n"),
        },
    }
}

#[async_trait]
impl Instances for FakeCloud {
    async fn find(&self, cluster_id: &str) -> Result<Vec<Instance>, CloudError> {
        let mut s = self.lock();
        s.describe_calls += 1;
        Ok(s.instances
            .iter()
            .filter(|i| i.cluster_id == cluster_id && i.owned_by(&self.deployment))
            .map(|i| i.instance.clone())
            .collect())
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        self.lock().mutating_calls += 1;
        if let Some(e) = self.lock().launch_failures.pop_front() {
            return Err(e);
        }
        // A Wavelength zone offers gp2 volumes only: EC2 refuses any other root there, as the
        // local stack's moto does (`local/moto_catalogue.py`).
        {
            let s = self.lock();
            let zone = request
                .subnet_id
                .as_ref()
                .and_then(|id| s.subnets.get(id))
                .and_then(|(_, zone)| s.zones.get(zone))
                .map(|(z, _)| z);
            if let Some(z) = zone.filter(|z| z.zone_type == "wavelength-zone") {
                if request.root_volume_type != "gp2" {
                    return Err(CloudError::Rejected(format!(
                        "InvalidParameterCombination: volume type {} is not supported in {} (a Wavelength Zone supports gp2 only)",
                        request.root_volume_type, z.name
                    )));
                }
            }
        }
        let mut launched = Vec::new();
        {
            let id = self.id("i");
            let n = self.lock().next_id;
            // Every tag from RunInstances itself, as the adapter launches.
            let tags: BTreeMap<String, String> = request.tags.iter().cloned().collect();
            // In its subnet's zone. A Wavelength zone has no public IPv4: an instance there has
            // a carrier IP when its launch asked for one, else no address outside the VPC.
            let zone = {
                let s = self.lock();
                let subnet = request.subnet_id.as_ref().and_then(|id| s.subnets.get(id));
                subnet
                    .and_then(|(_, zone)| s.zones.get(zone))
                    .map(|(z, _)| (z.name.clone(), z.zone_type.clone()))
            };
            let wavelength = zone
                .as_ref()
                .is_some_and(|(_, kind)| kind == "wavelength-zone");
            let instance = Instance {
                instance_id: id.clone(),
                role: Some(request.role),
                index: Some(request.index),
                state: InstanceState::Running,
                private_ip: Some(format!("10.0.{}.{}", n / 250, n % 250 + 2)),
                public_ip: Some(format!("198.51.100.{}", n % 250 + 2))
                    .filter(|_| !wavelength && !request.carrier_ip),
                carrier_ip: Some(format!("155.146.{}.{}", n / 250, n % 250 + 2))
                    .filter(|_| request.carrier_ip),
                private_dns: Some(format!("ip-{id}.ec2.internal")),
                zone: Some(zone.map_or_else(|| "us-east-1a".into(), |(name, _)| name)),
                subnet_id: request.subnet_id.clone(),
            };
            launched.push(instance.clone());
            self.lock().instances.push(FakeInstance {
                instance,
                cluster_id: request.cluster_id.clone(),
                launched_at: crate::clock::now_epoch(),
                tags,
                request: request.clone(),
                metadata: MetadataOptions::LAUNCH,
                profile_arn: Some(profile_arn(&request.instance_profile)),
            });
        }
        Ok(launched)
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        self.lock().mutating_calls += 1;
        for i in self
            .lock()
            .instances
            .iter_mut()
            .filter(|i| instance_ids.contains(&i.instance.instance_id))
        {
            i.instance.state = InstanceState::Terminated;
        }
        Ok(())
    }

    async fn find_tagged(&self, region: &str) -> Result<Vec<TaggedInstance>, CloudError> {
        let mut s = self.lock();
        // As EC2 pages them: one call per 1,000 instances.
        s.describe_calls += s.instances.len().div_ceil(1000).max(1);
        Ok(s.instances
            .iter()
            .filter(|i| i.owned_by(&self.deployment))
            .map(|i| TaggedInstance {
                region: region.to_string(),
                cluster_id: i.cluster_id.clone(),
                instance: i.instance.clone(),
                launched_at: Some(i.launched_at),
                security_groups: Some(i.request.security_group_id.clone())
                    .filter(|g| !g.is_empty())
                    .into_iter()
                    .collect(),
                tags: i.tags.clone(),
                metadata: Some(i.metadata),
            })
            .collect())
    }
}

#[async_trait]
impl Zones for FakeCloud {
    async fn zones(&self, names: &[String]) -> Result<Vec<Zone>, CloudError> {
        let mut s = self.lock();
        s.lookup_failed()?;
        Ok(names
            .iter()
            .filter_map(|n| s.zones.get(n).map(|(z, _)| z.clone()))
            .collect())
    }

    async fn offerings(
        &self,
        zones: &[String],
        instance_type: Option<&str>,
    ) -> Result<Vec<(String, String)>, CloudError> {
        // The types a zone offering "every type" lists when asked for all.
        const EVERY: [&str; 3] = ["t3.medium", "t4g.medium", "m7g.large"];
        let mut s = self.lock();
        s.lookup_failed()?;
        let mut found = Vec::new();
        for zone in zones {
            let Some((_, offered)) = s.zones.get(zone) else {
                continue;
            };
            let types: Vec<String> = match offered {
                Some(types) => types.clone(),
                None => match instance_type {
                    Some(t) => vec![t.to_string()],
                    None => EVERY.iter().map(|t| t.to_string()).collect(),
                },
            };
            found.extend(
                types
                    .into_iter()
                    .filter(|t| instance_type.is_none_or(|want| want == t))
                    .map(|t| (zone.clone(), t)),
            );
        }
        Ok(found)
    }
}

#[async_trait]
impl Routes for FakeCloud {
    async fn route_table(
        &self,
        subnet_id: &str,
        vpc_id: &str,
    ) -> Result<Option<RouteTable>, CloudError> {
        let mut s = self.lock();
        s.lookup_failed()?;
        Ok(s.route_tables
            .get(subnet_id)
            .or_else(|| s.route_tables.get(vpc_id))
            .cloned())
    }
}

#[async_trait]
impl Images for FakeCloud {
    async fn image(&self, image_id: &str) -> Result<Option<Image>, CloudError> {
        Ok(self.lock().images.get(image_id).cloned())
    }
}

#[async_trait]
impl SecurityGroups for FakeCloud {
    async fn find_group(&self, cluster_id: &str) -> Result<Option<String>, CloudError> {
        let s = self.lock();
        Ok(s.groups
            .iter()
            .find(|(id, (c, _))| c == cluster_id && self.owns_group(&s, id))
            .map(|(id, _)| id.clone()))
    }

    async fn create_group(
        &self,
        cluster_id: &str,
        _name: &str,
        _subnet: Option<&str>,
    ) -> Result<String, CloudError> {
        let id = self.id("sg");
        let mut s = self.lock();
        s.mutating_calls += 1;
        s.groups.insert(id.clone(), (cluster_id.into(), Vec::new()));
        s.group_deployment
            .insert(id.clone(), self.deployment.id().into());
        s.group_created
            .insert(id.clone(), Some(crate::clock::now_epoch()));
        Ok(id)
    }

    async fn ingress(&self, group_id: &str) -> Result<Vec<IngressRule>, CloudError> {
        self.lock()
            .groups
            .get(group_id)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| CloudError::NotFound(group_id.into()))
    }

    async fn authorize(&self, group_id: &str, rules: &[IngressRule]) -> Result<(), CloudError> {
        let mut s = self.lock();
        let existing = s.changing_rules_of(group_id)?;
        for rule in rules {
            if !existing.iter().any(|r| r.same_as(rule)) {
                existing.push(rule.clone());
            }
        }
        Ok(())
    }

    async fn revoke(&self, group_id: &str, rules: &[IngressRule]) -> Result<(), CloudError> {
        let mut s = self.lock();
        let existing = s.changing_rules_of(group_id)?;
        existing.retain(|r| !rules.iter().any(|gone| gone.same_as(r)));
        Ok(())
    }

    async fn subnets(&self, subnet_ids: &[String]) -> Result<Vec<Subnet>, CloudError> {
        let mut s = self.lock();
        s.lookup_failed()?;
        Ok(subnet_ids
            .iter()
            .filter_map(|id| {
                s.subnets.get(id).map(|(vpc, zone)| Subnet {
                    subnet_id: id.clone(),
                    vpc_id: vpc.clone(),
                    zone: zone.clone(),
                })
            })
            .collect())
    }

    async fn vpc_subnets(&self, vpc_id: &str) -> Result<Vec<Subnet>, CloudError> {
        let mut s = self.lock();
        s.lookup_failed()?;
        Ok(s.subnets
            .iter()
            .filter(|(_, (vpc, _))| vpc == vpc_id)
            .map(|(id, (vpc, zone))| Subnet {
                subnet_id: id.clone(),
                vpc_id: vpc.clone(),
                zone: zone.clone(),
            })
            .collect())
    }

    async fn delete_group(&self, group_id: &str) -> Result<(), CloudError> {
        let mut s = self.lock();
        s.mutating_calls += 1;
        if let Some(e) = s.group_delete_failures.pop_front() {
            return Err(e);
        }
        if let Some((cluster, _)) = s.groups.get(group_id) {
            let cluster = cluster.clone();
            // In use: an instance of its cluster, or any instance launched into it.
            if s.instances.iter().any(|i| {
                (i.cluster_id == cluster || i.request.security_group_id == group_id)
                    && !i.instance.state.is_gone()
            }) {
                return Err(CloudError::DependencyViolation(format!(
                    "{group_id} has instances"
                )));
            }
        }
        s.groups.remove(group_id);
        s.group_created.remove(group_id);
        Ok(())
    }

    async fn find_tagged_groups(&self, region: &str) -> Result<Vec<TaggedGroup>, CloudError> {
        let s = self.lock();
        Ok(s.groups
            .iter()
            .filter(|(id, _)| self.owns_group(&s, id))
            .map(|(id, (cluster_id, rules))| TaggedGroup {
                region: region.to_string(),
                group_id: id.clone(),
                cluster_id: cluster_id.clone(),
                created_at: s.group_created.get(id).copied().flatten(),
                ingress: rules.clone(),
            })
            .collect())
    }
}

/// Ids per DescribeInstanceStatus call and per DescribeInstanceInformation filter, as AWS.
const STATUS_PAGE: usize = 1000;
const PING_CHUNK: usize = 50;

#[async_trait]
impl StatusChecks for FakeCloud {
    /// Running instances only, as DescribeInstanceStatus answers without `IncludeAllInstances`.
    async fn impaired(&self, instance_ids: &[String]) -> Result<Vec<StatusCheck>, CloudError> {
        let mut s = self.lock();
        // The region's running instances, a page per 1,000 (as the adapter pages).
        let running_count = s
            .instances
            .iter()
            .filter(|i| i.instance.state == InstanceState::Running)
            .count();
        s.health_calls += running_count.div_ceil(STATUS_PAGE).max(1);
        let running: HashSet<&str> = s
            .instances
            .iter()
            .filter(|i| i.instance.state == InstanceState::Running)
            .map(|i| i.instance.instance_id.as_str())
            .collect();
        Ok(instance_ids
            .iter()
            .filter(|id| running.contains(id.as_str()))
            .filter_map(|id| {
                s.impaired.get(id).map(|(checks, since)| StatusCheck {
                    instance_id: id.clone(),
                    impaired: checks.clone(),
                    impaired_since: Some(*since),
                })
            })
            .collect())
    }
}

#[async_trait]
impl NodeCommands for FakeCloud {
    /// Agents of running instances are `Online` (pinging now) unless taken offline; an agent
    /// taken offline is `ConnectionLost` since its last ping; terminated instances are unknown.
    async fn pings(&self, instance_ids: &[String]) -> Result<Vec<AgentPing>, CloudError> {
        let mut s = self.lock();
        s.health_calls += instance_ids.len().div_ceil(PING_CHUNK);
        let now = crate::clock::now_epoch();
        let known: HashMap<&str, &FakeInstance> = s
            .instances
            .iter()
            .filter(|i| !i.instance.state.is_gone())
            .map(|i| (i.instance.instance_id.as_str(), i))
            .collect();
        Ok(instance_ids
            .iter()
            .filter_map(|id| {
                let i = known.get(id.as_str())?;
                let online = !s.offline.contains(id) && i.instance.state == InstanceState::Running;
                Some(AgentPing {
                    instance_id: id.clone(),
                    status: if online { "Online" } else { "ConnectionLost" }.into(),
                    last_ping: Some(if online {
                        now
                    } else {
                        s.last_ping.get(id).copied().unwrap_or(i.launched_at)
                    }),
                })
            })
            .collect())
    }

    async fn lost_agents(&self, instance_ids: &[String]) -> Result<Vec<AgentPing>, CloudError> {
        let mut s = self.lock();
        let lost: Vec<AgentPing> = instance_ids
            .iter()
            .filter(|id| s.offline.contains(*id))
            .map(|id| AgentPing {
                instance_id: id.clone(),
                status: "ConnectionLost".into(),
                last_ping: s.last_ping.get(id).copied().or_else(|| {
                    s.instances
                        .iter()
                        .find(|i| i.instance.instance_id == *id)
                        .map(|i| i.launched_at)
                }),
            })
            .collect();
        // Only the lost agents come back: a page per 50 of them (one call when none is lost).
        s.health_calls += lost.len().div_ceil(PING_CHUNK).max(1);
        Ok(lost)
    }

    async fn online(&self, instance_ids: &[String]) -> Result<Vec<String>, CloudError> {
        let s = self.lock();
        Ok(instance_ids
            .iter()
            .filter(|id| {
                !s.offline.contains(*id)
                    && s.instances.iter().any(|i| {
                        &i.instance.instance_id == *id && i.instance.state == InstanceState::Running
                    })
            })
            .cloned()
            .collect())
    }

    async fn send(
        &self,
        instance_id: &str,
        script: &str,
        comment: &str,
        _timeout: u32,
    ) -> Result<String, CloudError> {
        if self.online(&[instance_id.to_string()]).await?.is_empty() {
            return Err(CloudError::AgentNotReady(instance_id.into()));
        }
        let command_id = self.id("cmd");
        let cmd = FakeCommand {
            command_id: command_id.clone(),
            instance_id: instance_id.into(),
            script: script_name(script),
            comment: comment.into(),
            text: script.into(),
            status: CommandStatus::Running,
            requested_at: crate::clock::now_epoch(),
        };
        self.lock().commands.push(cmd);
        Ok(command_id)
    }

    async fn sent(&self, instance_id: &str) -> Result<Vec<SentCommand>, CloudError> {
        Ok(self
            .lock()
            .commands
            .iter()
            .rev()
            .filter(|c| c.instance_id == instance_id)
            .map(|c| SentCommand {
                command_id: c.command_id.clone(),
                comment: c.comment.clone(),
                requested_at: Some(c.requested_at),
            })
            .collect())
    }

    /// A command's outcome is decided by the responder when it is first polled, and kept once
    /// it is no longer running.
    async fn status(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> Result<CommandStatus, CloudError> {
        let cmd = self
            .lock()
            .commands
            .iter()
            .find(|c| c.command_id == command_id && c.instance_id == instance_id)
            .cloned()
            .ok_or_else(|| CloudError::NotFound(command_id.into()))?;
        if cmd.status != CommandStatus::Running {
            return Ok(cmd.status);
        }
        let responder = self
            .responder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = responder(&cmd, &self.instances());
        for c in self
            .lock()
            .commands
            .iter_mut()
            .filter(|c| c.command_id == command_id)
        {
            c.status = status.clone();
        }
        Ok(status)
    }
}

#[async_trait]
impl Parameters for FakeCloud {
    async fn get(&self, name: &str) -> Result<Option<String>, CloudError> {
        Ok(self.lock().parameters.get(name).map(|(v, _)| v.clone()))
    }

    async fn get_secret(&self, name: &str) -> Result<Option<String>, CloudError> {
        self.get(name).await
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), CloudError> {
        let mut s = self.lock();
        s.mutating_calls += 1;
        s.parameters.insert(name.into(), (value.into(), true));
        s.parameter_written
            .insert(name.into(), crate::clock::now_epoch());
        Ok(())
    }

    async fn delete(&self, names: &[String]) -> Result<(), CloudError> {
        let mut s = self.lock();
        s.mutating_calls += 1;
        for n in names {
            s.parameters.remove(n);
            s.parameter_written.remove(n);
        }
        Ok(())
    }

    async fn list_under(&self, path: &str) -> Result<Vec<ParameterInfo>, CloudError> {
        let s = self.lock();
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(s.parameters
            .keys()
            .filter(|name| name.starts_with(&prefix))
            .map(|name| ParameterInfo {
                name: name.clone(),
                last_modified: s.parameter_written.get(name).copied(),
            })
            .collect())
    }
}

#[derive(Default)]
struct StoreState {
    records: BTreeMap<String, ClusterRecord>,
    names: HashMap<String, String>,
    events: Vec<Event>,
    keys: HashMap<String, (String, String)>,
    update_conflicts: u32,
}

/// Fake DynamoDB: implements `ClusterStore` with the same conditions as the real table.
#[derive(Clone, Default)]
pub struct FakeStore {
    state: Arc<Mutex<StoreState>>,
}

impl FakeStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record.
    pub fn records(&self) -> Vec<ClusterRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// Every event, in the order written.
    pub fn all_events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Makes the next `n` updates lose their condition, as a concurrent writer would make them.
    pub fn conflict_next_updates(&self, n: u32) {
        self.lock().update_conflicts = n;
    }
}

#[async_trait]
impl ClusterStore for FakeStore {
    async fn create(&self, record: &ClusterRecord) -> Result<bool, CloudError> {
        let mut s = self.lock();
        if s.records.contains_key(&record.id) || s.names.contains_key(&record.spec.name) {
            return Ok(false);
        }
        s.names.insert(record.spec.name.clone(), record.id.clone());
        s.records.insert(record.id.clone(), record.clone());
        Ok(true)
    }

    async fn get(&self, cluster_id: &str) -> Result<Option<ClusterRecord>, CloudError> {
        Ok(self.lock().records.get(cluster_id).cloned())
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<ClusterRecord>, CloudError> {
        let s = self.lock();
        Ok(s.names.get(name).and_then(|id| s.records.get(id)).cloned())
    }

    async fn update(&self, record: &ClusterRecord) -> Result<ClusterRecord, CloudError> {
        let mut s = self.lock();
        if s.update_conflicts > 0 {
            s.update_conflicts -= 1;
            return Err(CloudError::ConditionFailed);
        }
        match s.records.get(&record.id) {
            Some(stored) if stored.version == record.version => {}
            _ => return Err(CloudError::ConditionFailed),
        }
        let mut written = record.clone();
        written.version += 1;
        written.updated_at = crate::clock::now_rfc3339();
        if written.status == Status::Deleted && s.names.get(&written.spec.name) == Some(&written.id)
        {
            s.names.remove(&written.spec.name);
        }
        s.records.insert(written.id.clone(), written.clone());
        Ok(written)
    }

    async fn list(
        &self,
        filter: &ListFilter,
        next_token: Option<&str>,
        limit: u32,
    ) -> Result<RecordPage, CloudError> {
        let start: usize = match next_token {
            Some(t) => t
                .parse()
                .map_err(|_| CloudError::Rejected("malformed next_token".into()))?,
            None => 0,
        };
        let state = self.lock();
        let mut all: Vec<&ClusterRecord> = state
            .records
            .values()
            .filter(|r| filter.status.is_none_or(|st| r.status == st))
            .filter(|r| filter.region.as_ref().is_none_or(|rg| &r.spec.region == rg))
            .collect();
        all.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
        let end = (start + limit as usize).min(all.len());
        let records: Vec<ClusterRecord> = all
            .get(start..end)
            .map(|page| page.iter().map(|r| (*r).clone()).collect())
            .unwrap_or_default();
        let next_token = (end < all.len()).then(|| end.to_string());
        Ok(RecordPage {
            records,
            next_token,
        })
    }

    async fn append_event(&self, event: &Event) -> Result<(), CloudError> {
        self.lock().events.push(event.clone());
        Ok(())
    }

    async fn events(&self, cluster_id: &str) -> Result<Vec<Event>, CloudError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.cluster_id == cluster_id)
            .cloned()
            .collect())
    }

    async fn claim_key(
        &self,
        key: &str,
        cluster_id: &str,
        request_hash: &str,
    ) -> Result<KeyClaim, CloudError> {
        let mut s = self.lock();
        if let Some((id, hash)) = s.keys.get(key) {
            return Ok(KeyClaim::Existing {
                cluster_id: id.clone(),
                request_hash: hash.clone(),
            });
        }
        s.keys
            .insert(key.into(), (cluster_id.into(), request_hash.into()));
        Ok(KeyClaim::Claimed)
    }

    async fn find_key(&self, key: &str) -> Result<Option<KeyClaim>, CloudError> {
        Ok(self
            .lock()
            .keys
            .get(key)
            .map(|(cluster_id, request_hash)| KeyClaim::Existing {
                cluster_id: cluster_id.clone(),
                request_hash: request_hash.clone(),
            }))
    }
}

/// A started execution.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeExecution {
    pub arn: String,
    pub state_machine_arn: String,
    pub name: String,
    pub input: String,
    pub status: ExecutionStatus,
}

/// Fake Step Functions: implements `Executions`.
#[derive(Clone, Default)]
pub struct FakeExecutions {
    started: Arc<Mutex<Vec<FakeExecution>>>,
}

impl FakeExecutions {
    pub fn started(&self) -> Vec<FakeExecution> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets an execution's status.
    pub fn set_status(&self, arn: &str, status: ExecutionStatus) {
        for e in self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .filter(|e| e.arn == arn)
        {
            e.status = status.clone();
        }
    }
}

#[async_trait]
impl Executions for FakeExecutions {
    async fn start(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<String, CloudError> {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = started
            .iter()
            .find(|e| e.state_machine_arn == state_machine_arn && e.name == name)
        {
            if e.input != input {
                return Err(CloudError::Rejected(format!(
                    "ExecutionAlreadyExists: {name}"
                )));
            }
            return Ok(e.arn.clone());
        }
        let machine = state_machine_arn.rsplit(':').next().unwrap_or("machine");
        let arn = format!("arn:aws:states:us-east-1:123456789012:execution:{machine}:{name}");
        started.push(FakeExecution {
            arn: arn.clone(),
            state_machine_arn: state_machine_arn.into(),
            name: name.into(),
            input: input.into(),
            status: ExecutionStatus::Running,
        });
        Ok(arn)
    }

    async fn status(&self, execution_arn: &str) -> Result<ExecutionStatus, CloudError> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|e| e.arn == execution_arn)
            .map(|e| e.status.clone())
            .ok_or_else(|| CloudError::NotFound(execution_arn.into()))
    }
}

/// A fake network load balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeBalancer {
    pub arn: String,
    pub name: String,
    pub dns_name: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// Epoch seconds (AWS's `CreatedTime`).
    pub created_at: i64,
}

/// A fake target group.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTargetGroup {
    pub arn: String,
    pub name: String,
    pub vpc_id: String,
    pub port: u16,
    pub targets: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// Epoch seconds, as the adapter's `mecplane:created-at` tag carries it.
    pub created_at: i64,
}

/// A fake listener.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeListener {
    pub arn: String,
    pub balancer_arn: String,
    pub port: u16,
    pub target_group_arn: String,
}

#[derive(Default)]
struct BalancerState {
    balancers: Vec<FakeBalancer>,
    target_groups: Vec<FakeTargetGroup>,
    listeners: Vec<FakeListener>,
    /// Operation name → error its next call answers.
    failures: HashMap<String, CloudError>,
    next_id: u64,
    creates: usize,
}

impl BalancerState {
    /// ELB's `LoadBalancerNotFound` unless the load balancer `arn` exists.
    fn require_balancer(&self, arn: &str) -> Result<(), CloudError> {
        if self.balancers.iter().any(|b| b.arn == arn) {
            Ok(())
        } else {
            Err(CloudError::NotFound(format!("LoadBalancerNotFound: {arn}")))
        }
    }

    /// The target group `arn`, or ELB's `TargetGroupNotFound`.
    fn target_group(&mut self, arn: &str) -> Result<&mut FakeTargetGroup, CloudError> {
        self.target_groups
            .iter_mut()
            .find(|t| t.arn == arn)
            .ok_or_else(|| CloudError::NotFound(format!("TargetGroupNotFound: {arn}")))
    }
}

impl FakeBalancer {
    /// What ELB answers for it.
    fn answer(&self) -> Balancer {
        Balancer {
            arn: self.arn.clone(),
            dns_name: self.dns_name.clone(),
        }
    }
}

/// Elastic Load Balancing in memory: names unique per region (a create with a name taken by
/// different settings is `DuplicateLoadBalancerName`/`DuplicateTargetGroupName`, by the same ones
/// answers the existing one, as AWS does), a target group a listener forwards to cannot be
/// deleted (`DependencyViolation`, AWS's `ResourceInUse`), deleting a load balancer deletes its
/// listeners, deleting what is gone is not an error, every part keeps its tags. Clones share the
/// same state (one region's ELB, handed out per call as the functions hand out their client).
#[derive(Default, Clone)]
pub struct FakeBalancers {
    state: std::sync::Arc<Mutex<BalancerState>>,
    /// Whose view this is (the reconcile's search keeps only its deployment's).
    deployment: Deployment,
}

impl FakeBalancers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BalancerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Another deployment's view of the same region's load balancing.
    pub fn as_deployment(&self, deployment: Deployment) -> FakeBalancers {
        FakeBalancers {
            deployment,
            ..self.clone()
        }
    }

    /// Makes the next call of `operation` (the trait method's name) fail with `error`.
    pub fn fail_next(&self, operation: &str, error: CloudError) {
        self.lock().failures.insert(operation.into(), error);
    }

    fn check(&self, operation: &str) -> Result<(), CloudError> {
        match self.lock().failures.remove(operation) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn balancers(&self) -> Vec<FakeBalancer> {
        self.lock().balancers.clone()
    }

    pub fn target_groups(&self) -> Vec<FakeTargetGroup> {
        self.lock().target_groups.clone()
    }

    pub fn listeners(&self) -> Vec<FakeListener> {
        self.lock().listeners.clone()
    }

    /// How many load balancers, target groups and listeners were created in all.
    pub fn creates(&self) -> usize {
        self.lock().creates
    }

    /// Makes the load balancer and target group named `name` created `seconds` ago.
    pub fn age(&self, name: &str, seconds: i64) {
        let created_at = crate::clock::now_epoch() - seconds;
        let mut s = self.lock();
        for b in s.balancers.iter_mut().filter(|b| b.name == name) {
            b.created_at = created_at;
        }
        for t in s.target_groups.iter_mut().filter(|t| t.name == name) {
            t.created_at = created_at;
        }
    }

    fn next_arn(state: &mut BalancerState, kind: &str, name: &str) -> String {
        state.next_id += 1;
        state.creates += 1;
        format!(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:{kind}/{name}/{:016x}",
            state.next_id
        )
    }
}

#[async_trait]
impl LoadBalancers for FakeBalancers {
    async fn find_balancer(&self, name: &str) -> Result<Option<Balancer>, CloudError> {
        self.check("find_balancer")?;
        Ok(self
            .lock()
            .balancers
            .iter()
            .find(|b| b.name == name)
            .map(FakeBalancer::answer))
    }

    async fn create_balancer(&self, request: &BalancerRequest) -> Result<Balancer, CloudError> {
        self.check("create_balancer")?;
        let mut s = self.lock();
        if let Some(b) = s.balancers.iter().find(|b| b.name == request.name) {
            return if b.subnet_ids == request.subnet_ids
                && b.security_group_ids == request.security_group_ids
            {
                Ok(b.answer())
            } else {
                Err(CloudError::Rejected(format!(
                    "DuplicateLoadBalancerName: {}",
                    request.name
                )))
            };
        }
        if request.subnet_ids.is_empty() {
            return Err(CloudError::Rejected("SubnetNotFound".into()));
        }
        let arn = Self::next_arn(&mut s, "loadbalancer/net", &request.name);
        let dns_name = format!(
            "{}-{:08x}.elb.us-east-1.amazonaws.com",
            request.name, s.next_id
        );
        s.balancers.push(FakeBalancer {
            arn: arn.clone(),
            name: request.name.clone(),
            dns_name: dns_name.clone(),
            subnet_ids: request.subnet_ids.clone(),
            security_group_ids: request.security_group_ids.clone(),
            tags: request.tags.clone(),
            created_at: crate::clock::now_epoch(),
        });
        Ok(Balancer { arn, dns_name })
    }

    async fn delete_balancer(&self, arn: &str) -> Result<(), CloudError> {
        self.check("delete_balancer")?;
        let mut s = self.lock();
        s.balancers.retain(|b| b.arn != arn);
        s.listeners.retain(|l| l.balancer_arn != arn);
        Ok(())
    }

    async fn find_target_group(&self, name: &str) -> Result<Option<String>, CloudError> {
        self.check("find_target_group")?;
        Ok(self
            .lock()
            .target_groups
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.arn.clone()))
    }

    async fn create_target_group(&self, request: &BalancerRequest) -> Result<String, CloudError> {
        self.check("create_target_group")?;
        let mut s = self.lock();
        if let Some(t) = s.target_groups.iter().find(|t| t.name == request.name) {
            return if t.vpc_id == request.vpc_id && t.port == request.port {
                Ok(t.arn.clone())
            } else {
                Err(CloudError::Rejected(format!(
                    "DuplicateTargetGroupName: {}",
                    request.name
                )))
            };
        }
        let arn = Self::next_arn(&mut s, "targetgroup", &request.name);
        s.target_groups.push(FakeTargetGroup {
            arn: arn.clone(),
            name: request.name.clone(),
            vpc_id: request.vpc_id.clone(),
            port: request.port,
            targets: Vec::new(),
            tags: request.tags.clone(),
            created_at: crate::clock::now_epoch(),
        });
        Ok(arn)
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError> {
        self.check("delete_target_group")?;
        let mut s = self.lock();
        if s.listeners.iter().any(|l| l.target_group_arn == arn) {
            return Err(CloudError::DependencyViolation(format!(
                "ResourceInUse: target group {arn} is in use by a listener"
            )));
        }
        s.target_groups.retain(|t| t.arn != arn);
        Ok(())
    }

    async fn listeners(
        &self,
        balancer_arn: &str,
    ) -> Result<Vec<(String, u16, Option<String>)>, CloudError> {
        self.check("listeners")?;
        let s = self.lock();
        s.require_balancer(balancer_arn)?;
        Ok(s.listeners
            .iter()
            .filter(|l| l.balancer_arn == balancer_arn)
            .map(|l| (l.arn.clone(), l.port, Some(l.target_group_arn.clone())))
            .collect())
    }

    async fn create_listener(
        &self,
        balancer_arn: &str,
        target_group_arn: &str,
        request: &BalancerRequest,
    ) -> Result<String, CloudError> {
        self.check("create_listener")?;
        let mut s = self.lock();
        s.require_balancer(balancer_arn)?;
        s.target_group(target_group_arn)?;
        if let Some(l) = s
            .listeners
            .iter()
            .find(|l| l.balancer_arn == balancer_arn && l.port == request.port)
        {
            return if l.target_group_arn == target_group_arn {
                Ok(l.arn.clone())
            } else {
                Err(CloudError::Rejected("DuplicateListener".into()))
            };
        }
        let arn = Self::next_arn(&mut s, "listener/net", &request.name);
        s.listeners.push(FakeListener {
            arn: arn.clone(),
            balancer_arn: balancer_arn.into(),
            port: request.port,
            target_group_arn: target_group_arn.into(),
        });
        Ok(arn)
    }

    async fn delete_listener(&self, arn: &str) -> Result<(), CloudError> {
        self.check("delete_listener")?;
        self.lock().listeners.retain(|l| l.arn != arn);
        Ok(())
    }

    async fn targets(&self, target_group_arn: &str) -> Result<Vec<String>, CloudError> {
        self.check("targets")?;
        Ok(self.lock().target_group(target_group_arn)?.targets.clone())
    }

    async fn register(
        &self,
        target_group_arn: &str,
        instance_ids: &[String],
    ) -> Result<(), CloudError> {
        self.check("register")?;
        let mut s = self.lock();
        let group = s.target_group(target_group_arn)?;
        for id in instance_ids {
            if !group.targets.contains(id) {
                group.targets.push(id.clone());
            }
        }
        Ok(())
    }

    async fn deregister(
        &self,
        target_group_arn: &str,
        instance_ids: &[String],
    ) -> Result<(), CloudError> {
        self.check("deregister")?;
        let mut s = self.lock();
        let group = s.target_group(target_group_arn)?;
        group.targets.retain(|t| !instance_ids.contains(t));
        Ok(())
    }

    async fn find_tagged_balancing(
        &self,
        region: &str,
    ) -> Result<Vec<TaggedBalancing>, CloudError> {
        self.check("find_tagged_balancing")?;
        let s = self.lock();
        let tag = |tags: &[(String, String)], key: &str| {
            tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };
        // Named like one of its deployment's and carrying its deployment tag, as the adapter.
        let prefix = self.deployment.name_prefix();
        let cluster_of = |tags: &[(String, String)]| {
            let deployment = tag(tags, resources::TAG_DEPLOYMENT);
            self.deployment
                .owns_tagged(deployment.as_deref())
                .then(|| tag(tags, resources::TAG_CLUSTER))
                .flatten()
        };
        let named = |name: &str| name.starts_with(&prefix);
        let balancers = s
            .balancers
            .iter()
            .filter(|b| named(&b.name))
            .filter_map(|b| {
                Some(TaggedBalancing {
                    region: region.into(),
                    part: BalancingPart::LoadBalancer,
                    arn: b.arn.clone(),
                    name: b.name.clone(),
                    cluster_id: cluster_of(&b.tags)?,
                    created_at: Some(b.created_at),
                })
            });
        let groups = s
            .target_groups
            .iter()
            .filter(|t| named(&t.name))
            .filter_map(|t| {
                Some(TaggedBalancing {
                    region: region.into(),
                    part: BalancingPart::TargetGroup,
                    arn: t.arn.clone(),
                    name: t.name.clone(),
                    cluster_id: cluster_of(&t.tags)?,
                    created_at: Some(t.created_at),
                })
            });
        Ok(balancers.chain(groups).collect())
    }
}
