//! Elastic Load Balancing v2 ([`LoadBalancers`]): the network load balancer, TCP listener and
//! instance target group in front of an HA cluster's control planes (`api_endpoint: "nlb"`).
//!
//! Lookups are by name (unique per region and account); a lookup of a name that does not exist
//! answers `None` (ELB's `LoadBalancerNotFound`/`TargetGroupNotFound`), and so does a delete of
//! what is gone. Listings go through the SDK's paginators. The reconcile's search for orphans
//! pages through the region's load balancers and target groups, keeps those named like a
//! cluster's and reads their tags 20 ARNs a `DescribeTags` call (the API's limit); a target
//! group gets a `mecplane:created-at` tag at creation, since ELB keeps no creation time for one.
//! Names start with the deployment's id and the search keeps only what carries the deployment's
//! tag, so another deployment's load balancers are never seen.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, IpAddressType, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
    ProtocolEnum, Tag, TargetDescription, TargetHealthStateEnum, TargetTypeEnum,
};
use aws_sdk_elasticloadbalancingv2::types::{LoadBalancer, TargetGroup};
use aws_sdk_elasticloadbalancingv2::Client;

use super::classify_sdk_error;
use crate::error::CloudError;
use crate::ports::{Balancer, BalancerRequest, BalancingPart, LoadBalancers, TaggedBalancing};
use crate::resources::{Deployment, TAG_CLUSTER, TAG_CREATED_AT, TAG_DEPLOYMENT};

/// The most resources one `DescribeTags` call takes.
const TAGS_PER_CALL: usize = 20;

/// The ELBv2 adapter: one client, built once per cold start (per region, through
/// [`super::Regional`]).
#[derive(Debug, Clone)]
pub struct Elbv2 {
    client: Client,
    deployment: Deployment,
}

impl Elbv2 {
    /// Builds the ELBv2 client from the shared configuration, for `deployment`.
    pub fn new(config: &aws_config::SdkConfig, deployment: Deployment) -> Self {
        Elbv2::from_client(Client::new(config), deployment)
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: Client, deployment: Deployment) -> Self {
        Elbv2 { client, deployment }
    }
}

fn tags(request: &BalancerRequest) -> Vec<Tag> {
    request
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// A call's answer with a `NotFound` (ELB's `LoadBalancerNotFound`, `TargetGroupNotFound`,
/// `ListenerNotFound`) as `Ok(None)`: a lookup, or a delete, of what is not there.
fn unless_absent<T, E>(answer: Result<T, SdkError<E>>) -> Result<Option<T>, CloudError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match answer.map_err(|e| classify_sdk_error(&e)) {
        Ok(out) => Ok(Some(out)),
        Err(CloudError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first of `balancers` that has an ARN and a DNS name.
fn first_balancer(balancers: &[LoadBalancer]) -> Option<Balancer> {
    balancers.iter().find_map(|lb| {
        Some(Balancer {
            arn: lb.load_balancer_arn()?.to_string(),
            dns_name: lb.dns_name()?.to_string(),
        })
    })
}

/// The ARN of the first of `groups`.
fn first_group_arn(groups: &[TargetGroup]) -> Option<String> {
    groups
        .iter()
        .find_map(|t| t.target_group_arn().map(str::to_string))
}

fn targets(ids: &[String]) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription::builder().id(id).build())
        .collect()
}

#[async_trait]
impl LoadBalancers for Elbv2 {
    async fn find_balancer(&self, name: &str) -> Result<Option<Balancer>, CloudError> {
        let found = unless_absent(
            self.client
                .describe_load_balancers()
                .names(name)
                .send()
                .await,
        )?;
        Ok(found.and_then(|out| first_balancer(out.load_balancers())))
    }

    async fn create_balancer(&self, request: &BalancerRequest) -> Result<Balancer, CloudError> {
        // Idempotent on AWS's side too: the same name with the same settings answers the
        // existing load balancer.
        let out = self
            .client
            .create_load_balancer()
            .name(&request.name)
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .ip_address_type(IpAddressType::Ipv4)
            .set_subnets(Some(request.subnet_ids.clone()))
            .set_security_groups(Some(request.security_group_ids.clone()))
            .set_tags(Some(tags(request)))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        first_balancer(out.load_balancers())
            .ok_or_else(|| CloudError::Other("CreateLoadBalancer answered no load balancer".into()))
    }

    async fn delete_balancer(&self, arn: &str) -> Result<(), CloudError> {
        unless_absent(
            self.client
                .delete_load_balancer()
                .load_balancer_arn(arn)
                .send()
                .await,
        )
        .map(|_| ())
    }

    async fn find_target_group(&self, name: &str) -> Result<Option<String>, CloudError> {
        let found = unless_absent(
            self.client
                .describe_target_groups()
                .names(name)
                .send()
                .await,
        )?;
        Ok(found.and_then(|out| first_group_arn(out.target_groups())))
    }

    async fn create_target_group(&self, request: &BalancerRequest) -> Result<String, CloudError> {
        let out = self
            .client
            .create_target_group()
            .name(&request.name)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(request.port))
            .vpc_id(&request.vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_enabled(true)
            .health_check_protocol(ProtocolEnum::Tcp)
            .health_check_port(request.port.to_string())
            // ELB keeps no creation time for a target group: the reconcile ages orphans by this.
            .set_tags(Some(
                tags(request)
                    .into_iter()
                    .chain([Tag::builder()
                        .key(TAG_CREATED_AT)
                        .value(crate::clock::now_rfc3339())
                        .build()])
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        first_group_arn(out.target_groups())
            .ok_or_else(|| CloudError::Other("CreateTargetGroup answered no target group".into()))
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError> {
        // `ResourceInUse` (a listener still forwards to it) is classified `DependencyViolation`.
        unless_absent(
            self.client
                .delete_target_group()
                .target_group_arn(arn)
                .send()
                .await,
        )
        .map(|_| ())
    }

    async fn listeners(
        &self,
        balancer_arn: &str,
    ) -> Result<Vec<(String, u16, Option<String>)>, CloudError> {
        let listeners = self
            .client
            .describe_listeners()
            .load_balancer_arn(balancer_arn)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        let mut out = Vec::new();
        for listener in &listeners {
            let Some(arn) = listener.listener_arn() else {
                continue;
            };
            let port = listener
                .port()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0);
            let forwards_to = listener
                .default_actions()
                .iter()
                .find_map(|a| a.target_group_arn().map(str::to_string));
            out.push((arn.to_string(), port, forwards_to));
        }
        Ok(out)
    }

    async fn create_listener(
        &self,
        balancer_arn: &str,
        target_group_arn: &str,
        request: &BalancerRequest,
    ) -> Result<String, CloudError> {
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(target_group_arn)
            .build();
        let out = self
            .client
            .create_listener()
            .load_balancer_arn(balancer_arn)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(request.port))
            .default_actions(forward)
            .set_tags(Some(tags(request)))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        out.listeners()
            .iter()
            .find_map(|l| l.listener_arn().map(str::to_string))
            .ok_or_else(|| CloudError::Other("CreateListener answered no listener".into()))
    }

    async fn delete_listener(&self, arn: &str) -> Result<(), CloudError> {
        unless_absent(self.client.delete_listener().listener_arn(arn).send().await).map(|_| ())
    }

    async fn targets(&self, target_group_arn: &str) -> Result<Vec<String>, CloudError> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        // A target being deregistered drains for a while: it is no longer one of the group's.
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health().and_then(|h| h.state()) != Some(&TargetHealthStateEnum::Draining)
            })
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
            .collect())
    }

    async fn register(
        &self,
        target_group_arn: &str,
        instance_ids: &[String],
    ) -> Result<(), CloudError> {
        self.client
            .register_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(targets(instance_ids)))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(())
    }

    async fn deregister(
        &self,
        target_group_arn: &str,
        instance_ids: &[String],
    ) -> Result<(), CloudError> {
        self.client
            .deregister_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(targets(instance_ids)))
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(())
    }
    async fn find_tagged_balancing(
        &self,
        region: &str,
    ) -> Result<Vec<TaggedBalancing>, CloudError> {
        // (part, ARN, name, CreatedTime) of every part named like a cluster's, paged.
        let mut named = Vec::new();
        let balancers = self
            .client
            .describe_load_balancers()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        for lb in &balancers {
            if let (Some(arn), Some(name)) = (lb.load_balancer_arn(), lb.load_balancer_name()) {
                let created = lb.created_time().map(|t| t.secs());
                named.push((
                    BalancingPart::LoadBalancer,
                    arn.to_string(),
                    name.to_string(),
                    created,
                ));
            }
        }
        let groups = self
            .client
            .describe_target_groups()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        for group in &groups {
            if let (Some(arn), Some(name)) = (group.target_group_arn(), group.target_group_name()) {
                named.push((
                    BalancingPart::TargetGroup,
                    arn.to_string(),
                    name.to_string(),
                    None,
                ));
            }
        }
        let prefix = self.deployment.name_prefix();
        named.retain(|(_, _, name, _)| name.starts_with(&prefix));
        // Their tags, 20 ARNs a call, one kind of resource a call.
        let mut found = Vec::new();
        for part in [BalancingPart::LoadBalancer, BalancingPart::TargetGroup] {
            let of_part: Vec<_> = named.iter().filter(|(p, ..)| *p == part).collect();
            for batch in of_part.chunks(TAGS_PER_CALL) {
                let out = self
                    .client
                    .describe_tags()
                    .set_resource_arns(Some(batch.iter().map(|(_, arn, ..)| arn.clone()).collect()))
                    .send()
                    .await
                    .map_err(|e| classify_sdk_error(&e))?;
                for description in out.tag_descriptions() {
                    let Some((_, arn, name, created)) = batch
                        .iter()
                        .find(|(_, arn, ..)| Some(arn.as_str()) == description.resource_arn())
                    else {
                        continue;
                    };
                    let tag = |key: &str| {
                        description
                            .tags()
                            .iter()
                            .find(|t| t.key() == Some(key))
                            .and_then(|t| t.value())
                    };
                    let Some(cluster_id) = tag(TAG_CLUSTER) else {
                        continue;
                    };
                    if !self.deployment.owns_tagged(tag(TAG_DEPLOYMENT)) {
                        continue;
                    }
                    found.push(TaggedBalancing {
                        region: region.to_string(),
                        part,
                        arn: arn.clone(),
                        name: name.clone(),
                        cluster_id: cluster_id.to_string(),
                        created_at: created
                            .or_else(|| tag(TAG_CREATED_AT).and_then(crate::clock::epoch_of)),
                    });
                }
            }
        }
        Ok(found)
    }
}
