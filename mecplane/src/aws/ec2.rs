//! EC2: the cluster's instances ([`Instances`]), its security group ([`SecurityGroups`]), its
//! subnets' zones ([`Zones`]) and route tables ([`Routes`]).
//!
//! Instances and groups are always found by the `mecplane:cluster` tag, never remembered: a stage
//! that ran twice, or a launch whose answer was lost, still sees every instance. `DescribeInstances`
//! is always paginated with `MaxResults` 1000 (moto stops at 100 reservations without it).
//!
//! Only what the adapter's [`Deployment`] owns is ever listed: every listing filters on the
//! deployment's tag value (EC2 filters it), and an instance must also run with the deployment's
//! node instance profile ([`Deployment::owns_instance`]), so a look-alike tagged by hand or a
//! second deployment's node is never seen, joined, replaced or terminated.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceType, IpPermission, IpRange, ResourceType, Tag,
    TagSpecification, UserIdGroupPair, VolumeType,
};
use aws_sdk_ec2::Client;

use super::classify_sdk_error;
use crate::error::CloudError;
use crate::ports::{
    Image, Images, IngressRule, IngressSource, Instance, InstanceState, Instances, LaunchRequest,
    MetadataOptions, Route, RouteTable, Routes, SecurityGroups, StatusCheck, StatusChecks, Subnet,
    TaggedGroup, TaggedInstance, Zone, Zones,
};
use crate::record::Role;
use crate::resources::{
    Deployment, TAG_CLUSTER, TAG_CLUSTER_NAME, TAG_CREATED_AT, TAG_DEPLOYMENT, TAG_INDEX, TAG_ROLE,
};

/// The root device of Ubuntu's AMIs.
const ROOT_DEVICE: &str = "/dev/sda1";
pub use crate::ports::METADATA_HOP_LIMIT;
/// The largest `DescribeInstances` page.
const DESCRIBE_PAGE: i32 = 1000;
/// Instances per `TerminateInstances` call.
const TERMINATE_CHUNK: usize = 50;
/// The group's description.
const GROUP_DESCRIPTION: &str = "mecplane cluster nodes";

/// The EC2 adapter of one deployment: one client, built once per cold start.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: Client,
    deployment: Deployment,
}

impl Ec2 {
    /// Builds the EC2 client from the shared configuration, for `deployment`.
    pub fn new(config: &aws_config::SdkConfig, deployment: Deployment) -> Self {
        Ec2::from_client(Client::new(config), deployment)
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: Client, deployment: Deployment) -> Self {
        Ec2 { client, deployment }
    }

    /// The filter every listing starts from: the deployment's tag with its value.
    fn ours(&self) -> Filter {
        filter(&format!("tag:{TAG_DEPLOYMENT}"), self.deployment.id())
    }

    /// Whether a listed instance is the deployment's (its tag, and its node profile).
    fn owns(&self, i: &aws_sdk_ec2::types::Instance) -> bool {
        self.deployment.owns_instance(
            tag_value(i.tags(), TAG_DEPLOYMENT),
            i.iam_instance_profile().and_then(|p| p.arn()),
        )
    }

    async fn default_vpc(&self) -> Result<String, CloudError> {
        let out = self
            .client
            .describe_vpcs()
            .filters(filter("isDefault", "true"))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        out.vpcs()
            .iter()
            .find_map(|v| v.vpc_id().map(str::to_string))
            .ok_or_else(|| {
                CloudError::Rejected("the region has no default VPC; name a subnet".into())
            })
    }

    async fn subnet_vpc(&self, subnet_id: &str) -> Result<String, CloudError> {
        let out = self
            .client
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        out.subnets()
            .iter()
            .find_map(|s| s.vpc_id().map(str::to_string))
            .ok_or_else(|| CloudError::NotFound(format!("subnet {subnet_id}")))
    }

    /// The id of the group named `name` in `vpc_id`, if it exists.
    async fn group_by_name(&self, name: &str, vpc_id: &str) -> Result<Option<String>, CloudError> {
        let out = self
            .client
            .describe_security_groups()
            .filters(filter("group-name", name))
            .filters(filter("vpc-id", vpc_id))
            .filters(self.ours())
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(out
            .security_groups()
            .iter()
            .find_map(|g| g.group_id().map(str::to_string)))
    }

    /// Adds or removes the rules that need it: one call for all, or one per rule when a
    /// concurrent writer got to one of them first (EC2 then refuses the whole batch).
    async fn change_rules(
        &self,
        group_id: &str,
        rules: &[IngressRule],
        change: RuleChange,
    ) -> Result<(), CloudError> {
        let existing: BTreeSet<_> = self.ingress(group_id).await?.iter().map(rule_key).collect();
        let mut seen = BTreeSet::new();
        let todo: Vec<IngressRule> = rules
            .iter()
            .filter(|r| {
                existing.contains(&rule_key(r)) == (change == RuleChange::Revoke)
                    && seen.insert(rule_key(r))
            })
            .cloned()
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        if !self.change_batch(group_id, &todo, change).await? {
            for rule in &todo {
                self.change_batch(group_id, std::slice::from_ref(rule), change)
                    .await?;
            }
        }
        Ok(())
    }

    /// One AuthorizeSecurityGroupIngress or RevokeSecurityGroupIngress call: `Ok(false)` when EC2
    /// refused the batch because one rule already exists (authorize) or is already gone (revoke);
    /// nothing of the batch was changed then.
    async fn change_batch(
        &self,
        group_id: &str,
        rules: &[IngressRule],
        change: RuleChange,
    ) -> Result<bool, CloudError> {
        let permissions: Vec<IpPermission> =
            rules.iter().map(|r| permission(group_id, r)).collect();
        let failed = |code: Option<&str>, error: CloudError| (code.map(str::to_string), error);
        let sent = match change {
            RuleChange::Authorize => self
                .client
                .authorize_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(permissions))
                .send()
                .await
                .map(drop)
                .map_err(|e| failed(e.code(), classify_sdk_error(&e))),
            RuleChange::Revoke => self
                .client
                .revoke_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(permissions))
                .send()
                .await
                .map(drop)
                .map_err(|e| failed(e.code(), classify_sdk_error(&e))),
        };
        match sent {
            Ok(()) => Ok(true),
            Err((Some(code), _)) if code == change.benign_error() => Ok(false),
            Err((_, e)) => Err(e),
        }
    }
}

/// Which way [`Ec2::change_rules`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleChange {
    Authorize,
    Revoke,
}

impl RuleChange {
    /// The error code that means a rule of the batch is already as wanted.
    fn benign_error(self) -> &'static str {
        match self {
            RuleChange::Authorize => "InvalidPermission.Duplicate",
            RuleChange::Revoke => "InvalidPermission.NotFound",
        }
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Maps an EC2 instance; `role` is the fallback when the answer carries no tags.
fn to_instance(i: &aws_sdk_ec2::types::Instance, role: Option<Role>) -> Instance {
    let tags = i.tags();
    Instance {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        role: tag_value(tags, TAG_ROLE).and_then(Role::parse).or(role),
        index: tag_value(tags, TAG_INDEX).and_then(|v| v.parse().ok()),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| InstanceState::parse(n.as_str()))
            .unwrap_or(InstanceState::Pending),
        private_ip: i
            .private_ip_address()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        public_ip: i
            .public_ip_address()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        carrier_ip: i
            .network_interfaces()
            .iter()
            .filter_map(|n| n.association()?.carrier_ip())
            .find(|s| !s.is_empty())
            .map(str::to_string),
        private_dns: i
            .private_dns_name()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        subnet_id: i.subnet_id().filter(|s| !s.is_empty()).map(str::to_string),
    }
}

/// Normalises an EC2 protocol (`tcp`, `6`, …) to the names the rules use.
fn protocol_name(p: &str) -> String {
    match p {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// What identifies a rule to EC2 (the description does not).
fn rule_key(r: &IngressRule) -> (String, u16, u16, IngressSource) {
    (
        protocol_name(&r.protocol),
        r.from_port,
        r.to_port,
        r.source.clone(),
    )
}

fn permission(group_id: &str, rule: &IngressRule) -> IpPermission {
    let builder = IpPermission::builder()
        .ip_protocol(protocol_name(&rule.protocol))
        .from_port(i32::from(rule.from_port))
        .to_port(i32::from(rule.to_port));
    match &rule.source {
        IngressSource::SameGroup => builder
            .user_id_group_pairs(
                UserIdGroupPair::builder()
                    .group_id(group_id)
                    .description(&rule.description)
                    .build(),
            )
            .build(),
        IngressSource::Cidr(cidr) => builder
            .ip_ranges(
                IpRange::builder()
                    .cidr_ip(cidr)
                    .description(&rule.description)
                    .build(),
            )
            .build(),
    }
}

/// The tcp/udp rules of a group (the only kind mecplane writes; others are skipped).
fn rules_of(group_id: &str, permissions: &[IpPermission]) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for p in permissions {
        let protocol = protocol_name(p.ip_protocol().unwrap_or_default());
        if protocol != "tcp" && protocol != "udp" {
            continue;
        }
        let (Some(from), Some(to)) = (p.from_port(), p.to_port()) else {
            continue;
        };
        let (Ok(from_port), Ok(to_port)) = (u16::try_from(from), u16::try_from(to)) else {
            continue;
        };
        for pair in p.user_id_group_pairs() {
            if pair.group_id() == Some(group_id) {
                rules.push(IngressRule {
                    protocol: protocol.clone(),
                    from_port,
                    to_port,
                    source: IngressSource::SameGroup,
                    description: pair.description().unwrap_or_default().to_string(),
                });
            }
        }
        for range in p.ip_ranges() {
            if let Some(cidr) = range.cidr_ip() {
                rules.push(IngressRule {
                    protocol: protocol.clone(),
                    from_port,
                    to_port,
                    source: IngressSource::Cidr(cidr.to_string()),
                    description: range.description().unwrap_or_default().to_string(),
                });
            }
        }
    }
    rules.sort();
    rules
}

#[async_trait]
impl Instances for Ec2 {
    async fn find(&self, cluster_id: &str) -> Result<Vec<Instance>, CloudError> {
        let reservations = self
            .client
            .describe_instances()
            .filters(filter(&format!("tag:{TAG_CLUSTER}"), cluster_id))
            .filters(self.ours())
            .max_results(DESCRIBE_PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let mut found: Vec<Instance> = reservations
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| self.owns(i))
            .map(|i| to_instance(i, None))
            .collect();
        found.sort_by(|a, b| {
            (a.role, a.index, &a.instance_id).cmp(&(b.role, b.index, &b.instance_id))
        });
        Ok(found)
    }

    async fn find_tagged(&self, region: &str) -> Result<Vec<TaggedInstance>, CloudError> {
        let reservations = self
            .client
            .describe_instances()
            .filters(filter("tag-key", TAG_CLUSTER))
            .filters(self.ours())
            .max_results(DESCRIBE_PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let mut found = Vec::new();
        for reservation in &reservations {
            for i in reservation.instances().iter().filter(|i| self.owns(i)) {
                let Some(cluster_id) = tag_value(i.tags(), TAG_CLUSTER) else {
                    continue;
                };
                found.push(TaggedInstance {
                    region: region.to_string(),
                    cluster_id: cluster_id.to_string(),
                    instance: to_instance(i, None),
                    launched_at: i.launch_time().map(|t| t.secs()),
                    security_groups: i
                        .security_groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(str::to_string))
                        .collect(),
                    tags: i
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                        .collect(),
                    metadata: i.metadata_options().map(|m| MetadataOptions {
                        tokens_required: m.http_tokens() == Some(&HttpTokensState::Required),
                        hop_limit: m.http_put_response_hop_limit(),
                    }),
                });
            }
        }
        Ok(found)
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        let tags: Vec<Tag> = request.tags.iter().map(|(k, v)| tag(k, v)).collect();
        let spec = |resource: ResourceType| {
            TagSpecification::builder()
                .resource_type(resource)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let root = BlockDeviceMapping::builder()
            .device_name(ROOT_DEVICE)
            .ebs(
                EbsBlockDevice::builder()
                    .volume_type(VolumeType::from(request.root_volume_type.as_str()))
                    .volume_size(i32::try_from(request.root_volume_gib).unwrap_or(i32::MAX))
                    .encrypted(true)
                    .delete_on_termination(true)
                    .build(),
            )
            .build();
        let metadata = InstanceMetadataOptionsRequest::builder()
            .http_tokens(HttpTokensState::Required)
            .http_endpoint(InstanceMetadataEndpointState::Enabled)
            .http_put_response_hop_limit(METADATA_HOP_LIMIT)
            .build();
        let call = self
            .client
            .run_instances()
            .min_count(1)
            .max_count(1)
            .image_id(&request.ami_id)
            .instance_type(InstanceType::from(request.instance_type.as_str()));
        // Wavelength has no public IPv4: the instance's interface asks for a carrier IP, and
        // then the subnet and group go on the interface (EC2 refuses them on both).
        let call = if request.carrier_ip {
            call.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .set_subnet_id(request.subnet_id.clone())
                    .groups(&request.security_group_id)
                    .associate_carrier_ip_address(true)
                    .delete_on_termination(true)
                    .build(),
            )
        } else {
            call.security_group_ids(&request.security_group_id)
                .set_subnet_id(request.subnet_id.clone())
        };
        let out = call
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(&request.instance_profile)
                    .build(),
            )
            .metadata_options(metadata)
            .block_device_mappings(root)
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume))
            .client_token(&request.client_token)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(out
            .instances()
            .iter()
            .map(|i| Instance {
                index: Some(request.index),
                ..to_instance(i, Some(request.role))
            })
            .collect())
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        for chunk in instance_ids.chunks(TERMINATE_CHUNK) {
            let result = self
                .client
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // One unknown id fails the whole call: go one by one, skipping the unknown ones.
                Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => {
                    for id in chunk {
                        match self
                            .client
                            .terminate_instances()
                            .instance_ids(id)
                            .send()
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => {}
                            Err(e) => return Err(classify_sdk_error(&e)),
                        }
                    }
                }
                Err(e) => return Err(classify_sdk_error(&e)),
            }
        }
        Ok(())
    }
}

/// Subnets per `DescribeSubnets` page (EC2's most).
const SUBNET_PAGE: i32 = 1000;

/// A subnet as placement sees it (`None` when EC2 left out its id, VPC or zone).
fn subnet_of(s: &aws_sdk_ec2::types::Subnet) -> Option<Subnet> {
    Some(Subnet {
        subnet_id: s.subnet_id()?.to_string(),
        vpc_id: s.vpc_id()?.to_string(),
        zone: s.availability_zone()?.to_string(),
    })
}

/// Statuses per `DescribeInstanceStatus` page (EC2's most, when no ids are named).
const STATUS_PAGE: i32 = 1000;

#[async_trait]
impl Zones for Ec2 {
    async fn zones(&self, names: &[String]) -> Result<Vec<Zone>, CloudError> {
        let out = self
            .client
            .describe_availability_zones()
            .all_availability_zones(true)
            .set_zone_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(out
            .availability_zones()
            .iter()
            .filter_map(|z| {
                let name = z.zone_name()?.to_string();
                Some(Zone {
                    zone_type: z.zone_type().unwrap_or("availability-zone").to_string(),
                    // Absent (as older answers have it) means no opt-in is needed.
                    usable: z
                        .opt_in_status()
                        .is_none_or(|s| matches!(s.as_str(), "opt-in-not-required" | "opted-in")),
                    group: z.group_name().unwrap_or(&name).to_string(),
                    parent: z.parent_zone_name().map(str::to_string),
                    name,
                })
            })
            .collect())
    }

    async fn offerings(
        &self,
        zones: &[String],
        instance_type: Option<&str>,
    ) -> Result<Vec<(String, String)>, CloudError> {
        use aws_sdk_ec2::types::LocationType;
        let mut call = self
            .client
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .filters(
                Filter::builder()
                    .name("location")
                    .set_values(Some(zones.to_vec()))
                    .build(),
            );
        if let Some(t) = instance_type {
            call = call.filters(filter("instance-type", t));
        }
        let offerings = call
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(offerings
            .iter()
            .filter_map(|o| {
                Some((
                    o.location()?.to_string(),
                    o.instance_type()?.as_str().to_string(),
                ))
            })
            .collect())
    }
}

#[async_trait]
impl Routes for Ec2 {
    async fn route_table(
        &self,
        subnet_id: &str,
        vpc_id: &str,
    ) -> Result<Option<RouteTable>, CloudError> {
        let own = self
            .client
            .describe_route_tables()
            .filters(filter("association.subnet-id", subnet_id))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let (tables, main) = if own.route_tables().is_empty() {
            let out = self
                .client
                .describe_route_tables()
                .filters(filter("vpc-id", vpc_id))
                .filters(filter("association.main", "true"))
                .send()
                .await
                .map_err(|e| classify_sdk_error(&e))?;
            (out.route_tables().to_vec(), true)
        } else {
            (own.route_tables().to_vec(), false)
        };
        Ok(tables.first().map(|t| RouteTable {
            route_table_id: t.route_table_id().unwrap_or_default().to_string(),
            main,
            routes: t
                .routes()
                .iter()
                .filter_map(|r| {
                    let target = r
                        .carrier_gateway_id()
                        .or(r.gateway_id())
                        .or(r.nat_gateway_id())
                        .or(r.transit_gateway_id())
                        .or(r.vpc_peering_connection_id())
                        .or(r.network_interface_id())
                        .or(r.instance_id())
                        .or(r.local_gateway_id())?;
                    Some(Route {
                        destination: r.destination_cidr_block()?.to_string(),
                        target: target.to_string(),
                    })
                })
                .collect(),
        }))
    }
}

#[async_trait]
impl Images for Ec2 {
    async fn image(&self, image_id: &str) -> Result<Option<Image>, CloudError> {
        // A filter, not ImageIds: an unknown (or deregistered) id is left out instead of failing
        // the call with InvalidAMIID.NotFound.
        let out = self
            .client
            .describe_images()
            .filters(filter("image-id", image_id))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(out
            .images()
            .iter()
            .find(|i| i.image_id() == Some(image_id))
            .map(|i| Image {
                image_id: image_id.to_string(),
                architecture: i
                    .architecture()
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
                owner_id: i.owner_id().unwrap_or_default().to_string(),
                owner_alias: i.image_owner_alias().map(str::to_string),
                state: i
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            }))
    }
}

#[async_trait]
impl StatusChecks for Ec2 {
    async fn impaired(&self, instance_ids: &[String]) -> Result<Vec<StatusCheck>, CloudError> {
        use aws_sdk_ec2::types::{InstanceStatusSummary, StatusName, SummaryStatus};
        // The region's running instances, 1,000 a page, kept to those asked about: one call per
        // 1,000 instances however the fleet is spread (ids would cap a call at 100), and no id
        // that went away in between can fail the call.
        let wanted: HashSet<&str> = instance_ids.iter().map(String::as_str).collect();
        let mut found = Vec::new();
        let mut statuses = self
            .client
            .describe_instance_status()
            .max_results(STATUS_PAGE)
            .into_paginator()
            .items()
            .send();
        while let Some(s) = statuses.next().await {
            let s = s.map_err(|e| classify_sdk_error(&e))?;
            let Some(id) = s.instance_id().filter(|id| wanted.contains(id)) else {
                continue;
            };
            let mut impaired = Vec::new();
            let mut since: Option<i64> = None;
            for (name, summary) in [
                ("system", s.system_status()),
                ("instance", s.instance_status()),
            ] {
                let Some(summary) = summary.filter(|x: &&InstanceStatusSummary| {
                    x.status() == Some(&SummaryStatus::Impaired)
                }) else {
                    continue;
                };
                impaired.push(name.to_string());
                for d in summary
                    .details()
                    .iter()
                    .filter(|d| d.name() == Some(&StatusName::Reachability))
                {
                    if let Some(t) = d.impaired_since() {
                        since = Some(since.map_or(t.secs(), |s| s.min(t.secs())));
                    }
                }
            }
            if !impaired.is_empty() {
                found.push(StatusCheck {
                    instance_id: id.to_string(),
                    impaired,
                    impaired_since: since,
                });
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl SecurityGroups for Ec2 {
    async fn find_group(&self, cluster_id: &str) -> Result<Option<String>, CloudError> {
        let out = self
            .client
            .describe_security_groups()
            .filters(filter(&format!("tag:{TAG_CLUSTER}"), cluster_id))
            .filters(self.ours())
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let mut ids: Vec<String> = out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids.into_iter().next())
    }

    async fn create_group(
        &self,
        cluster_id: &str,
        cluster_name: &str,
        subnet_id: Option<&str>,
    ) -> Result<String, CloudError> {
        let vpc_id = match subnet_id {
            Some(subnet) => self.subnet_vpc(subnet).await?,
            None => self.default_vpc().await?,
        };
        let name = self.deployment.security_group_name(cluster_id);
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::SecurityGroup)
            .tags(tag(TAG_DEPLOYMENT, self.deployment.id()))
            .tags(tag(TAG_CLUSTER, cluster_id))
            .tags(tag(TAG_CLUSTER_NAME, cluster_name))
            .tags(tag(TAG_CREATED_AT, &crate::clock::now_rfc3339()))
            .tags(tag("Name", &name))
            .build();
        let result = self
            .client
            .create_security_group()
            .group_name(&name)
            .description(GROUP_DESCRIPTION)
            .vpc_id(&vpc_id)
            .tag_specifications(tags)
            .send()
            .await;
        match result {
            Ok(out) => out
                .group_id()
                .map(str::to_string)
                .ok_or_else(|| CloudError::Other("CreateSecurityGroup answered no id".into())),
            // Created by an earlier attempt whose answer was lost: the name is ours (and so is
            // the group only with our deployment's tag).
            Err(e) if e.code() == Some("InvalidGroup.Duplicate") => self
                .group_by_name(&name, &vpc_id)
                .await?
                .ok_or_else(|| classify_sdk_error(&e)),
            Err(e) => Err(classify_sdk_error(&e)),
        }
    }

    async fn ingress(&self, group_id: &str) -> Result<Vec<IngressRule>, CloudError> {
        let out = self
            .client
            .describe_security_groups()
            .group_ids(group_id)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let group = out
            .security_groups()
            .iter()
            .find(|g| g.group_id() == Some(group_id))
            .ok_or_else(|| CloudError::NotFound(format!("security group {group_id}")))?;
        Ok(rules_of(group_id, group.ip_permissions()))
    }

    async fn authorize(&self, group_id: &str, rules: &[IngressRule]) -> Result<(), CloudError> {
        self.change_rules(group_id, rules, RuleChange::Authorize)
            .await
    }

    async fn revoke(&self, group_id: &str, rules: &[IngressRule]) -> Result<(), CloudError> {
        self.change_rules(group_id, rules, RuleChange::Revoke).await
    }

    async fn subnets(&self, subnet_ids: &[String]) -> Result<Vec<Subnet>, CloudError> {
        // A filter, not SubnetIds: an unknown id is left out instead of failing the call.
        let out = self
            .client
            .describe_subnets()
            .filters(
                Filter::builder()
                    .name("subnet-id")
                    .set_values(Some(subnet_ids.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(out.subnets().iter().filter_map(subnet_of).collect())
    }

    async fn vpc_subnets(&self, vpc_id: &str) -> Result<Vec<Subnet>, CloudError> {
        let subnets = self
            .client
            .describe_subnets()
            .filters(filter("vpc-id", vpc_id))
            .max_results(SUBNET_PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(subnets.iter().filter_map(subnet_of).collect())
    }

    async fn delete_group(&self, group_id: &str) -> Result<(), CloudError> {
        match self
            .client
            .delete_security_group()
            .group_id(group_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("InvalidGroup.NotFound") => Ok(()),
            Err(e) => Err(classify_sdk_error(&e)),
        }
    }

    async fn find_tagged_groups(&self, region: &str) -> Result<Vec<TaggedGroup>, CloudError> {
        let groups = self
            .client
            .describe_security_groups()
            .filters(filter("tag-key", TAG_CLUSTER))
            .filters(self.ours())
            .max_results(DESCRIBE_PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let mut found = Vec::new();
        for g in &groups {
            let (Some(group_id), Some(cluster_id)) =
                (g.group_id(), tag_value(g.tags(), TAG_CLUSTER))
            else {
                continue;
            };
            found.push(TaggedGroup {
                region: region.to_string(),
                group_id: group_id.to_string(),
                cluster_id: cluster_id.to_string(),
                created_at: tag_value(g.tags(), TAG_CREATED_AT).and_then(crate::clock::epoch_of),
                ingress: rules_of(group_id, g.ip_permissions()),
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, port: u16, source: IngressSource, description: &str) -> IngressRule {
        IngressRule {
            protocol: protocol.into(),
            from_port: port,
            to_port: port,
            source,
            description: description.into(),
        }
    }

    #[test]
    fn permissions_round_trip_through_rules() {
        let wanted = vec![
            rule(
                "tcp",
                16443,
                IngressSource::Cidr("10.0.0.0/8".into()),
                "api",
            ),
            rule("tcp", 25000, IngressSource::SameGroup, "cluster agent"),
            rule("udp", 4789, IngressSource::SameGroup, "vxlan"),
        ];
        let permissions: Vec<_> = wanted.iter().map(|r| permission("sg-1", r)).collect();
        let mut expected = wanted.clone();
        expected.sort();
        assert_eq!(rules_of("sg-1", &permissions), expected);
    }

    #[test]
    fn foreign_rules_are_skipped_and_ranges_read() {
        let all = IpPermission::builder().ip_protocol("-1").build();
        let range = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(1000)
            .to_port(2000)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let other_group = IpPermission::builder()
            .ip_protocol("6")
            .from_port(22)
            .to_port(22)
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-other").build())
            .build();
        assert!(rules_of("sg-1", &[all, other_group]).is_empty());
        // A port range (exposed_ports) is read as one rule.
        assert_eq!(
            rules_of("sg-1", &[range]),
            [IngressRule {
                protocol: "tcp".into(),
                from_port: 1000,
                to_port: 2000,
                source: IngressSource::Cidr("0.0.0.0/0".into()),
                description: String::new(),
            }]
        );
    }

    #[test]
    fn rule_identity_ignores_the_description() {
        let a = rule("TCP", 1, IngressSource::SameGroup, "a");
        let b = rule("tcp", 1, IngressSource::SameGroup, "b");
        assert_eq!(rule_key(&a), rule_key(&b));
    }
}
