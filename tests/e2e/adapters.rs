//! The AWS adapters (`mecplane::aws`) against a real moto server: one private server per test.
//!
//! SSM Run Command is only checked for shape here (moto's `SendCommand`/`GetCommandInvocation`
//! are stubs, `DescribeInstanceInformation`/`ListCommandInvocations` are missing): `online` and
//! `sent`, and real command outcomes, are covered by the end-to-end tests through the node
//! simulator.

use std::collections::{BTreeMap, HashSet};

use crate::support::moto::Moto;
use crate::support::stack::run_instance;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use mecplane::aws::dynamodb::Dynamo;
use mecplane::aws::ec2::Ec2;
use mecplane::aws::sfn::StepFunctions;
use mecplane::aws::ssm::Ssm;
use mecplane::ports::{
    ClusterStore, CommandStatus, Executions, IngressRule, IngressSource, InstanceState, Instances,
    KeyClaim, LaunchRequest, ListFilter, NodeCommands, Parameters, SecurityGroups,
};
use mecplane::record::{ClusterRecord, Event, Phase, Role, Status};
use mecplane::resources::{
    Deployment, TAG_CLUSTER, TAG_CLUSTER_NAME, TAG_DEPLOYMENT, TAG_INDEX, TAG_ROLE,
};
use mecplane::spec::{Arch, ClusterSpec};
use mecplane::CloudError;

const TABLE: &str = "mecplane-test";

// ---------------------------------------------------------------------------------------------
// EC2

/// One node of cluster `edge`, with the deployment's node tags (as the launch stage sends).
fn launch_request(
    cluster_id: &str,
    sg: &str,
    role: Role,
    index: u32,
    token: &str,
) -> LaunchRequest {
    let mut tags = Deployment::default().node_tags(cluster_id, "edge", role, index);
    tags.push(("team".into(), "edge".into()));
    LaunchRequest {
        cluster_id: cluster_id.into(),
        role,
        index,
        ami_id: "ami-0123456789abcdef0".into(),
        instance_type: "t4g.medium".into(),
        security_group_id: sg.into(),
        subnet_id: None,
        root_volume_gib: 30,
        root_volume_type: "gp3".into(),
        instance_profile: "mecplane-node".into(),
        tags,
        client_token: token.into(),
        carrier_ip: false,
    }
}

/// A moto server where nodes can be launched (the node instance profile exists).
async fn ec2_moto() -> Moto {
    let moto = Moto::start().await;
    moto.create_instance_profile("mecplane-node");
    moto
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn ec2_launch_tags_finds_and_terminates_instances() {
    let moto = ec2_moto().await;
    let config = moto.sdk_config().await;
    let ec2 = Ec2::new(&config, mecplane::resources::Deployment::default());
    let raw = aws_sdk_ec2::Client::new(&config);
    let cluster = "c-00000000000000a1";

    assert!(ec2.find(cluster).await.unwrap().is_empty());
    let sg = ec2.create_group(cluster, "edge", None).await.unwrap();
    // One node per call, index 1 first: every tag is set by RunInstances itself.
    let mut launched = Vec::new();
    for index in [1, 0] {
        let node = ec2
            .launch(&launch_request(
                cluster,
                &sg,
                Role::Worker,
                index,
                "token-1",
            ))
            .await
            .unwrap();
        assert_eq!(node.len(), 1);
        assert_eq!(node[0].index, Some(index));
        launched.extend(node);
    }
    assert!(launched.iter().all(|i| i.role == Some(Role::Worker)));

    // What EC2 holds: tags, IMDSv2, the instance profile, the security group, the encrypted gp3 root.
    let ids: Vec<String> = launched.iter().map(|i| i.instance_id.clone()).collect();
    let described = raw
        .describe_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .unwrap();
    let instances: Vec<_> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert_eq!(instances.len(), 2);
    for i in &instances {
        let tags = tags_of(i.tags());
        assert_eq!(tags.get(TAG_CLUSTER).map(String::as_str), Some(cluster));
        assert_eq!(tags.get(TAG_CLUSTER_NAME).map(String::as_str), Some("edge"));
        assert_eq!(tags.get(TAG_ROLE).map(String::as_str), Some("worker"));
        assert_eq!(
            tags.get(TAG_DEPLOYMENT).map(String::as_str),
            Some("mecplane")
        );
        assert!(tags.contains_key(TAG_INDEX));
        assert_eq!(tags.get("team").map(String::as_str), Some("edge"));
        let md = i.metadata_options().expect("metadata options");
        assert_eq!(md.http_tokens().map(|t| t.as_str()), Some("required"));
        assert_eq!(
            md.http_put_response_hop_limit(),
            Some(mecplane::aws::ec2::METADATA_HOP_LIMIT)
        );
        assert_eq!(md.http_endpoint().map(|e| e.as_str()), Some("enabled"));
        assert!(i
            .security_groups()
            .iter()
            .any(|g| g.group_id() == Some(sg.as_str())));
        assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t4g.medium"));
        // moto keeps DeleteOnTermination on the instance's mapping, not on the volume's attachment.
        let root = i
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some("/dev/sda1"))
            .expect("root device");
        assert_eq!(
            root.ebs().and_then(|e| e.delete_on_termination()),
            Some(true)
        );
        assert_eq!(i.client_token(), Some("token-1"));
        if let Some(profile) = i.iam_instance_profile() {
            assert!(
                profile
                    .arn()
                    .unwrap_or_default()
                    .ends_with("/mecplane-node"),
                "{profile:?}"
            );
        }
    }
    // One instance per RunInstances: each has the node profile (moto associates it with the
    // first instance of a batch only).
    assert!(instances.iter().all(|i| i.iam_instance_profile().is_some()));
    let volumes = raw
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .set_values(Some(ids.clone()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let root: Vec<_> = volumes
        .volumes()
        .iter()
        .filter(|v| {
            v.attachments()
                .iter()
                .any(|a| a.device() == Some("/dev/sda1"))
        })
        .collect();
    assert_eq!(root.len(), 2, "{volumes:?}");
    for v in root {
        assert_eq!(v.encrypted(), Some(true));
        assert_eq!(v.size(), Some(30));
        assert_eq!(v.volume_type().map(|t| t.as_str()), Some("gp3"));
        let tags = tags_of(v.tags());
        assert_eq!(
            tags.get(TAG_CLUSTER).map(String::as_str),
            Some(cluster),
            "{v:?}"
        );
        assert_eq!(tags.get(TAG_ROLE).map(String::as_str), Some("worker"));
        assert_eq!(
            tags.get(TAG_DEPLOYMENT).map(String::as_str),
            Some("mecplane")
        );
    }

    // find() reads the indexes back, sorted by role and index.
    let found = ec2.find(cluster).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].instance_id, ids[1]);
    assert_eq!(found[0].index, Some(0));
    assert_eq!(found[1].index, Some(1));
    assert!(found
        .iter()
        .all(|i| i.state == InstanceState::Running && i.private_ip.is_some()));
    // Another cluster's instances are not ours.
    ec2.launch(&launch_request(
        "c-00000000000000b2",
        &sg,
        Role::ControlPlane,
        1,
        "token-2",
    ))
    .await
    .unwrap();
    assert_eq!(ec2.find(cluster).await.unwrap().len(), 2);

    // An unknown id (and ids terminated before) are not an error.
    let mut doomed = ids.clone();
    doomed.push("i-0123456789abcdef0".into());
    ec2.terminate(&doomed).await.unwrap();
    ec2.terminate(&doomed).await.unwrap();
    ec2.terminate(&[]).await.unwrap();
    let found = ec2.find(cluster).await.unwrap();
    assert!(
        found
            .iter()
            .all(|i| i.state == InstanceState::Terminated && i.state.is_gone()),
        "{found:?}"
    );
}

/// Ownership on real EC2 semantics (moto): instances made outside the deployment with the
/// cluster's tags are never listed, whether they lack the deployment tag, run with another
/// instance profile, or are a second deployment's nodes; nor are groups without its tag.
#[tokio::test]
async fn ec2_lists_only_what_its_deployment_owns() {
    let moto = ec2_moto().await;
    moto.create_instance_profile("prod-app");
    moto.create_instance_profile("beta-node");
    let config = moto.sdk_config().await;
    let ec2 = Ec2::new(&config, Deployment::default());
    let beta = Ec2::new(&config, Deployment::new("beta", "beta-node").unwrap());
    let raw = aws_sdk_ec2::Client::new(&config);
    let cluster = "c-00000000000000d4";
    let sg = ec2.create_group(cluster, "edge", None).await.unwrap();
    let ours = ec2
        .launch(&launch_request(cluster, &sg, Role::Worker, 0, "own"))
        .await
        .unwrap()
        .remove(0);
    // GIVEN look-alikes: every node tag (the deployment's included) but another profile; the
    // node profile without the deployment tag; and beta's node of a cluster with the same id.
    let plant = |tags: Vec<(String, String)>, profile: Option<&'static str>| {
        let raw = raw.clone();
        async move {
            let tags: Vec<(&str, &str)> =
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_instance(&raw, &tags, profile).await
        }
    };
    let tags = Deployment::default().node_tags(cluster, "edge", Role::Worker, 1);
    let other_profile = plant(tags.clone(), Some("prod-app")).await;
    let no_profile = plant(tags.clone(), None).await;
    let untagged: Vec<_> = tags
        .iter()
        .filter(|(k, _)| k != TAG_DEPLOYMENT)
        .cloned()
        .collect();
    let no_deployment_tag = plant(untagged, Some("mecplane-node")).await;
    let betas = beta
        .launch(&LaunchRequest {
            instance_profile: "beta-node".into(),
            tags: Deployment::new("beta", "beta-node").unwrap().node_tags(
                cluster,
                "edge",
                Role::Worker,
                2,
            ),
            ..launch_request(cluster, &sg, Role::Worker, 2, "beta")
        })
        .await
        .unwrap()
        .remove(0);
    // THEN each deployment finds its own node only, by cluster and fleet-wide.
    let found: Vec<String> = ec2
        .find(cluster)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(
        found,
        vec![ours.instance_id.clone()],
        "{other_profile} {no_profile} {no_deployment_tag}"
    );
    let fleet: Vec<String> = ec2
        .find_tagged("us-east-1")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.instance.instance_id)
        .collect();
    assert_eq!(fleet, vec![ours.instance_id.clone()]);
    let theirs: Vec<String> = beta
        .find(cluster)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(theirs, vec![betas.instance_id]);
    // Groups: ours carries the deployment tag; beta neither finds nor lists it.
    assert_eq!(ec2.find_group(cluster).await.unwrap(), Some(sg.clone()));
    assert_eq!(beta.find_group(cluster).await.unwrap(), None);
    assert!(beta
        .find_tagged_groups("us-east-1")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ec2.find_tagged_groups("us-east-1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn ec2_find_pages_past_100_reservations() {
    let moto = ec2_moto().await;
    let config = moto.sdk_config().await;
    let ec2 = Ec2::new(&config, mecplane::resources::Deployment::default());
    let cluster = "c-00000000000000c3";
    let sg = ec2.create_group(cluster, "edge", None).await.unwrap();
    // One reservation per call: moto stops at 100 reservations when the caller does not page.
    let mut launched = HashSet::new();
    for n in 0..105 {
        let instance = ec2
            .launch(&launch_request(
                cluster,
                &sg,
                Role::Worker,
                n,
                &format!("t-{n}"),
            ))
            .await
            .unwrap();
        launched.insert(instance[0].instance_id.clone());
    }
    let found: HashSet<String> = ec2
        .find(cluster)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(found, launched);
}

/// The placement lookups on moto: a VPC's subnets (no other's), the named subnets that exist,
/// their zones and the instance type's offerings there.
#[tokio::test]
async fn ec2_subnets_of_a_vpc_their_zones_and_offerings() {
    use mecplane::ports::Zones;
    let moto = Moto::start().await;
    let config = moto.sdk_config().await;
    let ec2 = Ec2::new(&config, mecplane::resources::Deployment::default());
    let raw = aws_sdk_ec2::Client::new(&config);
    let vpc = raw
        .create_vpc()
        .cidr_block("10.20.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let mut made = Vec::new();
    for (cidr, zone) in [
        ("10.20.1.0/24", "us-east-1a"),
        ("10.20.2.0/24", "us-east-1b"),
    ] {
        let subnet = raw
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        let id = subnet.subnet().and_then(|s| s.subnet_id()).unwrap();
        made.push((id.to_string(), zone.to_string()));
    }
    let mut found: Vec<(String, String)> = ec2
        .vpc_subnets(&vpc)
        .await
        .unwrap()
        .into_iter()
        .inspect(|s| assert_eq!(s.vpc_id, vpc))
        .map(|s| (s.subnet_id, s.zone))
        .collect();
    found.sort();
    made.sort();
    assert_eq!(found, made, "the VPC's subnets, not the default VPC's");
    assert!(ec2
        .vpc_subnets("vpc-0000000000000dead")
        .await
        .unwrap()
        .is_empty());
    let named = ec2
        .subnets(&[made[0].0.clone(), "subnet-0123456789abcdef0".into()])
        .await
        .unwrap();
    assert_eq!(named.len(), 1, "an unknown subnet is left out: {named:?}");
    let zones = ec2.zones(&["us-east-1a".into()]).await.unwrap();
    assert_eq!(
        (zones.len(), zones[0].zone_type.as_str(), zones[0].usable),
        (1, "availability-zone", true),
        "{zones:?}"
    );
    let offered = ec2
        .offerings(
            &["us-east-1a".into(), "us-east-1e".into()],
            Some("t4g.medium"),
        )
        .await
        .unwrap();
    assert_eq!(
        offered,
        [("us-east-1a".to_string(), "t4g.medium".to_string())]
    );
}

#[tokio::test]
async fn ec2_security_group_lifecycle() {
    let moto = Moto::start().await;
    let config = moto.sdk_config().await;
    let ec2 = Ec2::new(&config, mecplane::resources::Deployment::default());
    let raw = aws_sdk_ec2::Client::new(&config);
    let cluster = "c-00000000000000d4";

    assert_eq!(ec2.find_group(cluster).await.unwrap(), None);
    let group = ec2.create_group(cluster, "edge", None).await.unwrap();
    assert_eq!(
        ec2.find_group(cluster).await.unwrap().as_deref(),
        Some(group.as_str())
    );
    // A retried create finds the group of the same name instead of failing.
    assert_eq!(
        ec2.create_group(cluster, "edge", None).await.unwrap(),
        group
    );
    let described = raw
        .describe_security_groups()
        .group_ids(&group)
        .send()
        .await
        .unwrap();
    let sg = &described.security_groups()[0];
    assert_eq!(
        sg.group_name(),
        Some(format!("mecplane-{cluster}").as_str())
    );
    let default_vpc = raw
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("isDefault")
                .values("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sg.vpc_id(), default_vpc.vpcs()[0].vpc_id());
    let tags = tags_of(sg.tags());
    assert_eq!(tags.get(TAG_CLUSTER).map(String::as_str), Some(cluster));
    assert_eq!(tags.get(TAG_CLUSTER_NAME).map(String::as_str), Some("edge"));

    assert!(ec2.ingress(&group).await.unwrap().is_empty());
    let rule = |protocol: &str, port, source, description: &str| IngressRule {
        protocol: protocol.into(),
        from_port: port,
        to_port: port,
        source,
        description: description.into(),
    };
    let first = vec![
        rule("tcp", 16443, IngressSource::SameGroup, "kube-apiserver"),
        rule("tcp", 25000, IngressSource::SameGroup, "cluster agent"),
        rule("udp", 4789, IngressSource::SameGroup, "vxlan"),
        rule(
            "tcp",
            16443,
            IngressSource::Cidr("203.0.113.0/24".into()),
            "api from office",
        ),
    ];
    ec2.authorize(&group, &first).await.unwrap();
    let mut expected = first.clone();
    expected.sort();
    assert_eq!(ec2.ingress(&group).await.unwrap(), expected);
    // Again, plus one new rule, with a rule repeated: only the new one is added, nothing fails.
    let mut second = first.clone();
    second.push(rule("tcp", 10250, IngressSource::SameGroup, "kubelet"));
    second.push(rule("tcp", 10250, IngressSource::SameGroup, "kubelet"));
    ec2.authorize(&group, &second).await.unwrap();
    let now = ec2.ingress(&group).await.unwrap();
    assert_eq!(now.len(), 5, "{now:?}");
    assert!(now.contains(&rule("tcp", 10250, IngressSource::SameGroup, "kubelet")));
    ec2.authorize(&group, &[]).await.unwrap();

    ec2.delete_group(&group).await.unwrap();
    assert_eq!(ec2.find_group(cluster).await.unwrap(), None);
    // Deleting a missing group is fine; reading or changing it is NotFound.
    ec2.delete_group(&group).await.unwrap();
    assert!(matches!(
        ec2.ingress(&group).await,
        Err(CloudError::NotFound(_))
    ));
    assert!(matches!(
        ec2.authorize(&group, &first).await,
        Err(CloudError::NotFound(_))
    ));

    // In a named subnet: the subnet's VPC; an unknown subnet is NotFound.
    let vpc = raw
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet = raw
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.9.1.0/24")
        .send()
        .await
        .unwrap();
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_string();
    let other = "c-00000000000000e5";
    let in_subnet = ec2
        .create_group(other, "edge2", Some(&subnet_id))
        .await
        .unwrap();
    let described = raw
        .describe_security_groups()
        .group_ids(&in_subnet)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.security_groups()[0].vpc_id(),
        Some(vpc_id.as_str())
    );
    assert!(matches!(
        ec2.create_group(
            "c-00000000000000f6",
            "edge3",
            Some("subnet-0123456789abcdef0")
        )
        .await,
        Err(CloudError::NotFound(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// SSM

#[tokio::test]
async fn ssm_parameters_round_trip() {
    let moto = Moto::start().await;
    let config = moto.sdk_config().await;
    let ssm = Ssm::new(&config);
    let raw = aws_sdk_ssm::Client::new(&config);

    assert_eq!(ssm.get("/mecplane/missing").await.unwrap(), None);
    assert_eq!(ssm.get_secret("/mecplane/missing").await.unwrap(), None);

    raw.put_parameter()
        .name("/images/ubuntu/ami-id")
        .value("ami-0abc")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ssm.get("/images/ubuntu/ami-id").await.unwrap().as_deref(),
        Some("ami-0abc")
    );

    let token = "/mecplane/clusters/c-1/join-token";
    ssm.put_secret(token, "s3cr3t-token").await.unwrap();
    assert_eq!(
        ssm.get_secret(token).await.unwrap().as_deref(),
        Some("s3cr3t-token")
    );
    ssm.put_secret(token, "rotated").await.unwrap();
    assert_eq!(
        ssm.get_secret(token).await.unwrap().as_deref(),
        Some("rotated")
    );

    let kubeconfig = "/mecplane/clusters/c-1/kubeconfig";
    let big = "k".repeat(5000);
    ssm.put_secret(kubeconfig, &big).await.unwrap();
    assert_eq!(
        ssm.get_secret(kubeconfig).await.unwrap().as_deref(),
        Some(big.as_str())
    );
    let described = raw
        .get_parameter()
        .name(kubeconfig)
        .with_decryption(false)
        .send()
        .await
        .unwrap();
    let p = described.parameter().unwrap();
    assert_eq!(
        p.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    let listing = raw
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .values(kubeconfig)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        listing.parameters()[0].tier(),
        Some(&aws_sdk_ssm::types::ParameterTier::Advanced)
    );
    let listing = raw
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .values(token)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        listing.parameters()[0].tier(),
        Some(&aws_sdk_ssm::types::ParameterTier::Standard)
    );

    // Deletes in chunks of 10; missing names are fine.
    let mut names: Vec<String> = (0..12)
        .map(|n| format!("/mecplane/clusters/c-2/p{n}"))
        .collect();
    for name in &names[..11] {
        ssm.put_secret(name, "v").await.unwrap();
    }
    names.push(token.into());
    names.push(kubeconfig.into());
    ssm.delete(&names).await.unwrap();
    ssm.delete(&names).await.unwrap();
    ssm.delete(&[]).await.unwrap();
    for name in &names {
        assert_eq!(ssm.get_secret(name).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn ssm_run_command_shape() {
    let moto = ec2_moto().await;
    let config = moto.sdk_config().await;
    let ec2 = Ec2::new(&config, mecplane::resources::Deployment::default());
    let ssm = Ssm::new(&config);
    let cluster = "c-0000000000000a07";
    let sg = ec2.create_group(cluster, "edge", None).await.unwrap();
    let node = ec2
        .launch(&launch_request(cluster, &sg, Role::ControlPlane, 0, "t"))
        .await
        .unwrap()
        .remove(0);

    // Nothing asked, nothing called.
    assert!(ssm.online(&[]).await.unwrap().is_empty());
    // moto's SendCommand is a stub that always succeeds with empty output.
    let command_id = ssm
        .send(
            &node.instance_id,
            "#!/bin/bash\necho hi\n",
            "mecplane c-0000000000000a07 bootstrap",
            900,
        )
        .await
        .unwrap();
    assert!(!command_id.is_empty());
    match ssm.status(&command_id, &node.instance_id).await.unwrap() {
        CommandStatus::Success { .. } | CommandStatus::Running => {}
        other => panic!("unexpected status {other:?}"),
    }
    // The comment is the idempotency key: never cut, refused when too long.
    let long = "x".repeat(101);
    assert!(matches!(
        ssm.send(&node.instance_id, "true", &long, 60).await,
        Err(CloudError::Rejected(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// DynamoDB

async fn create_table(config: &aws_config::SdkConfig) {
    let client = aws_sdk_dynamodb::Client::new(config);
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("gsi1pk"))
        .attribute_definitions(attr("gsi1sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("gsi1")
                .key_schema(key("gsi1pk", KeyType::Hash))
                .key_schema(key("gsi1sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn spec(name: &str, region: &str) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        region: region.into(),
        control_planes: 1,
        workers: 2,
        instance_type: "t4g.medium".into(),
        arch: Arch::Arm64,
        ubuntu_release: "24.04".into(),
        microk8s_channel: "1.32/stable".into(),
        addons: vec!["dns".into()],
        subnet_id: None,
        subnet_ids: vec![],
        worker_subnet_ids: vec![],
        vpc_id: None,
        api_allowed_cidrs: vec![],
        exposed_ports: vec![],
        root_volume_gib: 30,
        tags: BTreeMap::new(),
        retain_on_failure: false,
        ami_id: None,
        api_endpoint: Default::default(),
        extra_sans: vec![],
        pod_security: Default::default(),
    }
}

fn record(id: &str, name: &str, region: &str) -> ClusterRecord {
    ClusterRecord::new(
        id.into(),
        spec(name, region),
        Some(format!("arn:aws:states:us-east-1:1:execution:create:{id}")),
    )
}

async fn store(moto: &Moto) -> Dynamo {
    let config = moto.sdk_config().await;
    create_table(&config).await;
    Dynamo::new(&config, TABLE)
}

#[tokio::test]
async fn dynamo_records_names_and_versions() {
    let moto = Moto::start().await;
    let db = store(&moto).await;

    let a = record("c-000000000000000a", "edge", "eu-west-1");
    assert_eq!(db.get(&a.id).await.unwrap(), None);
    assert_eq!(db.find_by_name("edge").await.unwrap(), None);
    assert!(db.create(&a).await.unwrap());
    assert_eq!(db.get(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(db.find_by_name("edge").await.unwrap().as_ref(), Some(&a));
    // The same record again (a retry) and another cluster with the taken name: false, nothing written.
    assert!(!db.create(&a).await.unwrap());
    let b = record("c-000000000000000b", "edge", "eu-west-1");
    assert!(!db.create(&b).await.unwrap());
    assert_eq!(db.get(&b.id).await.unwrap(), None);

    // Updates are conditional on the version read.
    let mut active = a.clone();
    active.status = Status::Active;
    active.stage = Some("activate".into());
    let written = db.update(&active).await.unwrap();
    assert_eq!(written.version, a.version + 1);
    assert_eq!(written.status, Status::Active);
    assert!(written.updated_at >= a.updated_at);
    assert_eq!(db.get(&a.id).await.unwrap().as_ref(), Some(&written));
    assert_eq!(
        db.update(&active).await,
        Err(CloudError::ConditionFailed),
        "stale version"
    );
    let mut ghost = record("c-00000000000000ff", "ghost", "eu-west-1");
    ghost.status = Status::Active;
    assert_eq!(
        db.update(&ghost).await,
        Err(CloudError::ConditionFailed),
        "no such record"
    );

    // DELETED releases the name; the record stays, and the name can be used again.
    let mut deleting = written.clone();
    deleting.status = Status::Deleting;
    let deleting = db.update(&deleting).await.unwrap();
    let mut deleted = deleting.clone();
    deleted.status = Status::Deleted;
    let stale_deleted = deleted.clone();
    let deleted = db.update(&deleted).await.unwrap();
    assert_eq!(deleted.version, deleting.version + 1);
    assert_eq!(db.find_by_name("edge").await.unwrap(), None);
    assert_eq!(
        db.get(&a.id).await.unwrap().map(|r| r.status),
        Some(Status::Deleted)
    );
    assert_eq!(
        db.update(&stale_deleted).await,
        Err(CloudError::ConditionFailed),
        "stale delete"
    );
    assert!(db.create(&b).await.unwrap());
    assert_eq!(
        db.find_by_name("edge").await.unwrap().map(|r| r.id),
        Some(b.id.clone())
    );

    // Deleting a cluster whose name another cluster claimed since leaves that claim alone.
    let c = record("c-000000000000000c", "edge", "eu-west-1");
    let mut deleting_c = c.clone();
    deleting_c.status = Status::Deleting;
    // c never held the claim (b does); its record exists under its own id.
    let raw = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let mut item = std::collections::HashMap::new();
    use aws_sdk_dynamodb::types::AttributeValue as V;
    item.insert("pk".to_string(), V::S(format!("CLUSTER#{}", c.id)));
    item.insert("sk".to_string(), V::S("RECORD".into()));
    item.insert(
        "record".to_string(),
        V::S(serde_json::to_string(&deleting_c).unwrap()),
    );
    item.insert("version".to_string(), V::N(deleting_c.version.to_string()));
    raw.put_item()
        .table_name(TABLE)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let mut deleted_c = deleting_c.clone();
    deleted_c.status = Status::Deleted;
    assert_eq!(db.update(&deleted_c).await.unwrap().status, Status::Deleted);
    assert_eq!(
        db.find_by_name("edge").await.unwrap().map(|r| r.id),
        Some(b.id.clone())
    );
}

#[tokio::test]
async fn dynamo_list_reads_a_bounded_part_of_the_index_per_call() {
    let moto = Moto::start().await;
    let db = store(&moto).await;

    // GIVEN one ACTIVE cluster, older than 300 that are not ACTIVE (one call reads at most 300)
    for n in 0..301u32 {
        let mut r = record(&format!("c-{n:016x}"), &format!("edge-{n}"), "us-east-1");
        r.created_at = format!(
            "2024-05-01T{:02}:{:02}:{:02}Z",
            n / 3600,
            n / 60 % 60,
            n % 60
        );
        assert!(db.create(&r).await.unwrap());
        if n == 0 {
            db.update(&ClusterRecord {
                status: Status::Active,
                ..r
            })
            .await
            .unwrap();
        }
    }
    let active = ListFilter {
        status: Some(Status::Active),
        region: None,
    };

    // WHEN it is listed: the first call reads a bounded part and answers with a token, nothing
    // found yet (unbounded, it would read the whole index in one answer)
    let first = db.list(&active, None, 10).await.unwrap();
    assert!(first.records.is_empty(), "{:?}", first.records);
    let token = first.next_token.expect("a token to go on");

    // THEN the next call finds it and ends the listing
    let second = db.list(&active, Some(&token), 10).await.unwrap();
    assert_eq!(
        second
            .records
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [format!("c-{:016x}", 0)]
    );
    assert_eq!(second.next_token, None);
}

#[tokio::test]
async fn dynamo_lists_newest_first_filtered_and_paged() {
    let moto = Moto::start().await;
    let db = store(&moto).await;

    // 120 records: every third in eu-west-1, and of those every other one ACTIVE.
    let mut expected = Vec::new();
    for n in 0..120u32 {
        let region = if n % 3 == 0 { "eu-west-1" } else { "us-east-1" };
        let mut r = record(&format!("c-{n:016x}"), &format!("edge-{n}"), region);
        r.created_at = format!("2024-05-01T10:{:02}:{:02}Z", n / 60, n % 60);
        assert!(db.create(&r).await.unwrap());
        if n % 6 == 0 {
            r = db
                .update(&ClusterRecord {
                    status: Status::Active,
                    ..r
                })
                .await
                .unwrap();
        }
        if region == "eu-west-1" {
            expected.push(r);
        }
    }
    expected.reverse(); // newest first

    let filter = ListFilter {
        status: None,
        region: Some("eu-west-1".into()),
    };
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut seen = Vec::new();
    loop {
        let page = db.list(&filter, token.as_deref(), 15).await.unwrap();
        pages += 1;
        assert!(page.records.len() <= 15);
        seen.extend(page.records);
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(pages < 10, "listing does not end");
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(
        seen.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()
    );

    let active = ListFilter {
        status: Some(Status::Active),
        region: Some("eu-west-1".into()),
    };
    let page = db.list(&active, None, 100).await.unwrap();
    assert_eq!(page.records.len(), 20);
    assert!(page
        .records
        .iter()
        .all(|r| r.status == Status::Active && r.spec.region == "eu-west-1"));
    assert_eq!(page.next_token, None);

    // Unfiltered: exactly `limit`, and a token only when more remain.
    let all = db.list(&ListFilter::default(), None, 120).await.unwrap();
    assert_eq!(all.records.len(), 120);
    assert_eq!(all.records[0].id, format!("c-{:016x}", 119));
    assert_eq!(all.next_token, None);
    let first = db.list(&ListFilter::default(), None, 119).await.unwrap();
    let rest = db
        .list(&ListFilter::default(), first.next_token.as_deref(), 119)
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 1);
    assert_eq!(rest.records[0].id, format!("c-{:016x}", 0));

    for garbage in ["garbage", "eyJwayI6IngifQ", "%%%"] {
        assert!(
            matches!(
                db.list(&filter, Some(garbage), 10).await,
                Err(CloudError::Rejected(_))
            ),
            "{garbage}"
        );
    }
}

#[tokio::test]
async fn dynamo_events_and_idempotency_keys() {
    let moto = Moto::start().await;
    let db = store(&moto).await;
    let a = record("c-000000000000000a", "edge", "eu-west-1");
    assert!(db.create(&a).await.unwrap());

    assert!(db.events(&a.id).await.unwrap().is_empty());
    let times = [
        "2024-05-01T10:00:00.5Z",
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.25Z",
        "2024-05-01T10:00:01Z",
    ];
    let mut sent = Vec::new();
    for (n, time) in times.iter().enumerate() {
        let event = Event {
            cluster_id: a.id.clone(),
            time: (*time).into(),
            stage: "launch-nodes".into(),
            phase: Phase::Progress,
            detail: format!("step {n}"),
        };
        db.append_event(&event).await.unwrap();
        sent.push(event);
    }
    // Two events of the same instant are both kept.
    db.append_event(&sent[3]).await.unwrap();
    db.append_event(&Event::now(
        "c-000000000000000b",
        "register",
        Phase::Started,
        "other",
    ))
    .await
    .unwrap();
    let events = db.events(&a.id).await.unwrap();
    let details: Vec<&str> = events.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details, ["step 1", "step 2", "step 0", "step 3", "step 3"]);
    // The record is not an event.
    assert!(events.iter().all(|e| e.cluster_id == a.id));

    assert_eq!(
        db.claim_key("key-1", &a.id, "hash-1").await.unwrap(),
        KeyClaim::Claimed
    );
    // A key carries its expiry (the table's TTL attribute), a day ahead.
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let item_key = |k: &str| {
        std::collections::HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("IDEMPOTENCY#{k}")),
            ),
            ("sk".to_string(), AttributeValue::S("KEY".into())),
        ])
    };
    let stored = client
        .get_item()
        .table_name(TABLE)
        .set_key(Some(item_key("key-1")))
        .send()
        .await
        .unwrap();
    let expires: i64 = stored.item().unwrap()["expires_at"]
        .as_n()
        .unwrap()
        .parse()
        .unwrap();
    let ahead = expires - mecplane::clock::now_epoch();
    assert!((86_000..=86_400).contains(&ahead), "{ahead}");
    // An expired key that DynamoDB has not removed yet is free to claim again.
    let mut expired = item_key("key-old");
    expired.insert(
        "cluster_id".into(),
        AttributeValue::S("c-00000000000000ee".into()),
    );
    expired.insert("request_hash".into(), AttributeValue::S("hash-old".into()));
    expired.insert("expires_at".into(), AttributeValue::N("1".into()));
    client
        .put_item()
        .table_name(TABLE)
        .set_item(Some(expired))
        .send()
        .await
        .unwrap();
    // Reading a key claims nothing; an expired one reads as free.
    assert_eq!(db.find_key("key-old").await.unwrap(), None);
    assert_eq!(db.find_key("key-new").await.unwrap(), None);
    assert_eq!(
        db.find_key("key-1").await.unwrap(),
        Some(KeyClaim::Existing {
            cluster_id: a.id.clone(),
            request_hash: "hash-1".into()
        })
    );
    assert_eq!(
        db.claim_key("key-old", &a.id, "hash-new").await.unwrap(),
        KeyClaim::Claimed
    );
    assert_eq!(
        db.claim_key("key-1", "c-000000000000000b", "hash-2")
            .await
            .unwrap(),
        KeyClaim::Existing {
            cluster_id: a.id.clone(),
            request_hash: "hash-1".into()
        }
    );
    assert_eq!(
        db.find_key("key-2").await.unwrap(),
        None,
        "never claimed by a read"
    );
    assert_eq!(
        db.claim_key("key-2", "c-000000000000000b", "hash-2")
            .await
            .unwrap(),
        KeyClaim::Claimed
    );
}

#[tokio::test]
async fn dynamo_missing_table_is_not_found() {
    let moto = Moto::start().await;
    let db = Dynamo::new(&moto.sdk_config().await, "no-such-table");
    assert!(matches!(
        db.get("c-000000000000000a").await,
        Err(CloudError::NotFound(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Step Functions

#[tokio::test]
async fn sfn_named_executions_are_idempotent() {
    let moto = Moto::start().await;
    let config = moto.sdk_config().await;
    let raw = aws_sdk_sfn::Client::new(&config);
    let machine = raw
        .create_state_machine()
        .name("create-cluster")
        // moto runs executions: a long Wait keeps this one running until the test stops it.
        .definition(
            r#"{"StartAt":"Wait","States":{"Wait":{"Type":"Wait","Seconds":600,"End":true}}}"#,
        )
        .role_arn("arn:aws:iam::123456789012:role/mecplane-sfn")
        .send()
        .await
        .unwrap();
    let machine_arn = machine.state_machine_arn().to_string();
    let sfn = StepFunctions::new(&config);

    let input = r#"{"cluster_id": "c-1", "poll_seconds": 5}"#;
    let arn = sfn.start(&machine_arn, "c-1", input).await.unwrap();
    assert!(arn.ends_with(":execution:create-cluster:c-1"), "{arn}");
    // Again while it runs, with the same input (whitespace aside): the same execution.
    assert_eq!(sfn.start(&machine_arn, "c-1", input).await.unwrap(), arn);
    assert_eq!(
        sfn.start(
            &machine_arn,
            "c-1",
            r#"{"poll_seconds":5,"cluster_id":"c-1"}"#
        )
        .await
        .unwrap(),
        arn
    );
    let status = sfn.status(&arn).await.unwrap();
    assert_eq!(status, mecplane::ports::ExecutionStatus::Running);

    // After it ended Step Functions answers ExecutionAlreadyExists: still the same execution.
    raw.stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        sfn.status(&arn).await.unwrap(),
        mecplane::ports::ExecutionStatus::Aborted
    );
    assert_eq!(sfn.start(&machine_arn, "c-1", input).await.unwrap(), arn);
    // Another input under the same name is other work.
    assert!(matches!(
        sfn.start(&machine_arn, "c-1", r#"{"cluster_id": "c-2"}"#)
            .await,
        Err(CloudError::Rejected(_))
    ));

    // A second name is a second execution.
    let other = sfn
        .start(&machine_arn, "c-2", r#"{"cluster_id": "c-2"}"#)
        .await
        .unwrap();
    assert_ne!(other, arn);

    let missing = arn.replace(":c-1", ":c-404");
    assert!(matches!(
        sfn.status(&missing).await,
        Err(CloudError::NotFound(_))
    ));
    let no_machine = machine_arn.replace("create-cluster", "nope");
    assert!(matches!(
        sfn.start(&no_machine, "x", "{}").await,
        Err(CloudError::NotFound(_))
    ));
}
