//! The edge: the local stack's zone catalogue (`local/moto_catalogue.py`: a Local Zone, a
//! Wavelength zone, a Local Zone not opted in, their offerings, carrier IPs and the Wavelength
//! zone's gp2-only volumes), and whole clusters in a Wavelength subnet — nodes on carrier IPs with
//! gp2 root volumes, the kubeconfig on the first control plane's carrier IP, and the early, named
//! refusal of a subnet with no route to a carrier gateway.

use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, InstanceNetworkInterfaceSpecification, VolumeType,
};
use serde_json::{json, Value};

use crate::support::moto::Moto;
use crate::support::stack::{self, node_of, Stack};

const TIMEOUT: Duration = Duration::from_secs(240);

/// The catalogue's Wavelength zone.
const WAVELENGTH: &str = "us-east-1-wl1-bos-wlz-1";

/// A new subnet of the default VPC in `zone` (a /24 above the default subnets' /20s).
pub async fn subnet_in_zone(ec2: &aws_sdk_ec2::Client, zone: &str) -> String {
    let vpc = default_vpc(ec2).await;
    for third in 128..=255 {
        let made = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .availability_zone(zone)
            .cidr_block(format!("172.31.{third}.0/24"))
            .send()
            .await;
        match made {
            Ok(out) => {
                return out
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .unwrap()
                    .to_string()
            }
            Err(e) if format!("{e:?}").contains("InvalidSubnet.Conflict") => continue,
            Err(e) => panic!("CreateSubnet in {zone}: {e:?}"),
        }
    }
    panic!("no free /24 left in the default VPC")
}

async fn default_vpc(ec2: &aws_sdk_ec2::Client) -> String {
    let vpcs = ec2
        .describe_vpcs()
        .filters(Filter::builder().name("is-default").values("true").build())
        .send()
        .await
        .expect("DescribeVpcs");
    vpcs.vpcs()[0].vpc_id().unwrap().to_string()
}

/// The EBS types of the root volumes (`/dev/sda1`) attached to `instance_ids`, as EC2 has them:
/// instance id → volume type.
async fn root_volume_types(
    ec2: &aws_sdk_ec2::Client,
    instance_ids: &[String],
) -> std::collections::BTreeMap<String, String> {
    let volumes = ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .set_values(Some(instance_ids.to_vec()))
                .build(),
        )
        .send()
        .await
        .expect("DescribeVolumes");
    volumes
        .volumes()
        .iter()
        .flat_map(|v| {
            v.attachments()
                .iter()
                .filter(|a| a.device() == Some("/dev/sda1"))
                .filter_map(move |a| {
                    Some((
                        a.instance_id()?.to_string(),
                        v.volume_type()?.as_str().to_string(),
                    ))
                })
        })
        .collect()
}

/// Gives `subnet` a route table of its own whose `0.0.0.0/0` goes to a new carrier gateway of
/// the default VPC (what a Wavelength subnet needs). Returns (route table, carrier gateway).
pub async fn route_to_carrier_gateway(ec2: &aws_sdk_ec2::Client, subnet: &str) -> (String, String) {
    let vpc = default_vpc(ec2).await;
    let cagw = ec2
        .create_carrier_gateway()
        .vpc_id(&vpc)
        .send()
        .await
        .expect("CreateCarrierGateway");
    let cagw = cagw
        .carrier_gateway()
        .and_then(|g| g.carrier_gateway_id())
        .unwrap()
        .to_string();
    let table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .expect("CreateRouteTable");
    let table = table
        .route_table()
        .and_then(|t| t.route_table_id())
        .unwrap()
        .to_string();
    ec2.create_route()
        .route_table_id(&table)
        .destination_cidr_block("0.0.0.0/0")
        .carrier_gateway_id(&cagw)
        .send()
        .await
        .expect("CreateRoute");
    ec2.associate_route_table()
        .route_table_id(&table)
        .subnet_id(subnet)
        .send()
        .await
        .expect("AssociateRouteTable");
    (table, cagw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_knows_a_local_zone_a_wavelength_zone_and_carrier_ips() {
    let moto = Moto::start().await;
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);

    // All zones: the three of the catalogue, with their types, groups, parents and opt-in
    let all = ec2
        .describe_availability_zones()
        .all_availability_zones(true)
        .send()
        .await
        .expect("DescribeAvailabilityZones");
    let seen: Vec<[String; 6]> = all
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type() != Some("availability-zone"))
        .map(|z| {
            [
                z.zone_name(),
                z.zone_id(),
                z.zone_type(),
                z.group_name(),
                z.parent_zone_name(),
                z.opt_in_status().map(|s| s.as_str()),
            ]
            .map(|v| v.unwrap_or_default().to_string())
        })
        .collect();
    let want = [
        [
            "us-east-1-bos-1a",
            "use1-bos1-az1",
            "local-zone",
            "us-east-1-bos-1",
            "us-east-1a",
            "opted-in",
        ],
        [
            WAVELENGTH,
            "use1-wl1-bos-wlz1",
            "wavelength-zone",
            "us-east-1-wl1",
            "us-east-1a",
            "opted-in",
        ],
        [
            "us-east-1-mia-1a",
            "use1-mia1-az1",
            "local-zone",
            "us-east-1-mia-1",
            "us-east-1a",
            "not-opted-in",
        ],
    ]
    .map(|z| z.map(str::to_string));
    assert_eq!(seen, want.to_vec());
    // moto's own zones need no opt-in
    assert!(all
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type() == Some("availability-zone"))
        .all(|z| z.opt_in_status().map(|s| s.as_str()) == Some("opt-in-not-required")));
    // without AllAvailabilityZones the zone not opted in is left out, as EC2 does
    let opted = ec2
        .describe_availability_zones()
        .send()
        .await
        .expect("DescribeAvailabilityZones");
    let names: Vec<&str> = opted
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name())
        .collect();
    assert!(
        names.contains(&WAVELENGTH) && !names.contains(&"us-east-1-mia-1a"),
        "{names:?}"
    );

    // Each zone offers its own instance types only
    let offered = ec2
        .describe_instance_type_offerings()
        .location_type(aws_sdk_ec2::types::LocationType::AvailabilityZone)
        .filters(
            Filter::builder()
                .name("location")
                .values(WAVELENGTH)
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstanceTypeOfferings");
    let mut types: Vec<&str> = offered
        .instance_type_offerings()
        .iter()
        .filter_map(|o| o.instance_type().map(|t| t.as_str()))
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["g4dn.2xlarge", "r5.2xlarge", "t3.medium", "t3.xlarge"]
    );

    // A subnet can be made in each
    let mut subnets = Vec::new();
    for zone in ["us-east-1-bos-1a", WAVELENGTH, "us-east-1-mia-1a"] {
        let subnet = subnet_in_zone(&ec2, zone).await;
        let found = ec2
            .describe_subnets()
            .subnet_ids(&subnet)
            .send()
            .await
            .expect("DescribeSubnets");
        assert_eq!(found.subnets()[0].availability_zone(), Some(zone));
        subnets.push(subnet);
    }

    // An instance launched with a carrier IP asked for on its interface gets one (and no public
    // IPv4); each is unique; routes to a carrier gateway are moto's own
    let (table, cagw) = route_to_carrier_gateway(&ec2, &subnets[1]).await;
    let routes = ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("association.subnet-id")
                .values(&subnets[1])
                .build(),
        )
        .send()
        .await
        .expect("DescribeRouteTables");
    let rt = &routes.route_tables()[0];
    assert_eq!(rt.route_table_id(), Some(table.as_str()));
    assert!(rt
        .routes()
        .iter()
        .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
            && r.carrier_gateway_id() == Some(cagw.as_str())));
    let launched = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Medium)
        .min_count(2)
        .max_count(2)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&subnets[1])
                .associate_carrier_ip_address(true)
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    let ids: Vec<String> = launched
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    let described = ec2
        .describe_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .expect("DescribeInstances");
    let mut carrier_ips = Vec::new();
    for i in described.reservations().iter().flat_map(|r| r.instances()) {
        assert_eq!(i.public_ip_address(), None, "{i:?}");
        assert_eq!(
            i.placement().and_then(|p| p.availability_zone()),
            Some(WAVELENGTH)
        );
        let ip = i.network_interfaces()[0]
            .association()
            .and_then(|a| a.carrier_ip())
            .unwrap_or_else(|| panic!("no carrier IP: {i:?}"))
            .to_string();
        assert!(ip.starts_with("155.146."), "{ip}");
        carrier_ips.push(ip);
    }
    carrier_ips.dedup();
    assert_eq!(carrier_ips.len(), 2, "{carrier_ips:?}");

    // The Wavelength zone offers gp2 volumes only: a gp3 (or io2) root there is refused as EC2
    // refuses it, a 400 naming the type and the zone, and launches nothing; gp2 is launched
    let root = |volume: VolumeType| {
        BlockDeviceMapping::builder()
            .device_name("/dev/sda1")
            .ebs(
                EbsBlockDevice::builder()
                    .volume_type(volume)
                    .volume_size(20)
                    .build(),
            )
            .build()
    };
    let launch = |volume: VolumeType| {
        ec2.run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Medium)
            .min_count(1)
            .max_count(1)
            .network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(&subnets[1])
                    .associate_carrier_ip_address(true)
                    .build(),
            )
            .block_device_mappings(root(volume))
            .send()
    };
    let in_wavelength = || async {
        ec2.describe_instances()
            .filters(
                Filter::builder()
                    .name("availability-zone")
                    .values(WAVELENGTH)
                    .build(),
            )
            .send()
            .await
            .expect("DescribeInstances")
            .reservations()
            .iter()
            .map(|r| r.instances().len())
            .sum::<usize>()
    };
    let before = in_wavelength().await;
    for volume in [VolumeType::Gp3, VolumeType::Io2] {
        let err = launch(volume.clone())
            .await
            .expect_err("a non-gp2 root in a Wavelength zone is refused");
        let service = err.as_service_error().expect("a service error");
        assert_eq!(
            service.meta().code(),
            Some("InvalidParameterCombination"),
            "{err:?}"
        );
        let message = service.meta().message().unwrap_or_default();
        assert!(
            message.contains(volume.as_str()) && message.contains(WAVELENGTH),
            "{message}"
        );
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    }
    assert_eq!(in_wavelength().await, before, "nothing launched");
    let gp2 = launch(VolumeType::Gp2)
        .await
        .expect("a gp2 root is launched");
    let id = gp2.instances()[0].instance_id().unwrap().to_string();
    assert_eq!(
        root_volume_types(&ec2, std::slice::from_ref(&id)).await[&id],
        "gp2"
    );
}

/// A 1+2 spec whose nodes all go to `subnet` (t3.medium: offered in the Wavelength zone).
fn wavelength_spec(name: &str, subnet: &str) -> Value {
    let mut spec = stack::spec(name, 1, 2);
    spec["instance_type"] = json!("t3.medium");
    spec["subnet_ids"] = json!([subnet]);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_cluster_in_a_wavelength_zone_is_reached_on_its_carrier_ips() {
    let stack = Stack::start(300).await;
    let ec2 = stack.ec2();

    // GIVEN a Wavelength subnet whose route table sends 0.0.0.0/0 to a carrier gateway
    let subnet = subnet_in_zone(&ec2, WAVELENGTH).await;
    route_to_carrier_gateway(&ec2, &subnet).await;

    // WHEN a 1+2 cluster is created there
    let (code, created) = stack
        .api("POST", "/clusters", Some(&wavelength_spec("wl-a", &subnet)))
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let record = stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;

    // THEN every node is in the Wavelength zone with a carrier IP and no public IPv4, as EC2 has it
    let nodes = record["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{record}");
    let described = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:mecplane:cluster")
                .values(&id)
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    let instances: Vec<_> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    let ids: Vec<String> = instances
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    let volumes = root_volume_types(&ec2, &ids).await;
    for n in nodes {
        assert_eq!(n["zone"], WAVELENGTH, "{n}");
        assert_eq!(n["zone_type"], "wavelength-zone", "{n}");
        // gp2 root volumes (the zone offers no gp3): on the record and in EC2
        assert_eq!(n["volume_type"], "gp2", "{n}");
        let id = n["instance_id"].as_str().unwrap_or_default();
        assert_eq!(
            volumes.get(id).map(String::as_str),
            Some("gp2"),
            "{n}: {volumes:?}"
        );
        assert_eq!(n["public_ip"], Value::Null, "{n}");
        let carrier = n["carrier_ip"].as_str().unwrap_or_else(|| panic!("{n}"));
        let instance = instances
            .iter()
            .find(|i| i.instance_id() == n["instance_id"].as_str())
            .unwrap_or_else(|| panic!("{n} not in EC2"));
        assert_eq!(instance.public_ip_address(), None);
        assert_eq!(
            instance.network_interfaces()[0]
                .association()
                .and_then(|a| a.carrier_ip()),
            Some(carrier)
        );
    }

    // AND each launch's event says the root volumes fell back, and why
    for stage in ["launch-control-planes", "launch-workers"] {
        assert!(
            stack
                .has_event(
                    &id,
                    stage,
                    &format!(
                        "root volume gp2 in {WAVELENGTH} (gp3 is not offered in Wavelength zones)"
                    )
                )
                .await,
            "{stage}: {:?}",
            stack.events(&id).await
        );
    }

    // AND the kubeconfig's server and the API certificate's names are the first control plane's
    // carrier IP
    let (first, _) = node_of(&record, "control-plane", 0);
    let carrier = nodes
        .iter()
        .find(|n| n["instance_id"] == first.as_str())
        .and_then(|n| n["carrier_ip"].as_str())
        .unwrap()
        .to_string();
    let (status, kubeconfig) = stack
        .api("GET", &format!("/clusters/{id}/kubeconfig"), None)
        .await;
    assert_eq!(status, 200, "{kubeconfig}");
    let servers: Vec<&str> = kubeconfig["kubeconfig"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server: "))
        .collect();
    assert_eq!(
        servers,
        [format!("https://{carrier}:16443")],
        "{kubeconfig}"
    );
    let sans = stack
        .sim_instances()
        .await
        .into_iter()
        .find(|i| i["instance_id"] == first.as_str())
        .map(|i| i["state"]["extra_sans"].clone())
        .unwrap_or_default();
    assert!(
        sans.as_array()
            .is_some_and(|s| s.iter().any(|v| v == carrier.as_str())),
        "the certificate names the carrier IP: {sans}"
    );

    // WHEN it scales up (the update machine's launch)
    let (status, patched) = stack
        .api(
            "PATCH",
            &format!("/clusters/{id}"),
            Some(&json!({"workers": 3})),
        )
        .await;
    assert_eq!(status, 202, "{patched}");
    let record = stack
        .wait_record(&id, "3 workers, ACTIVE", TIMEOUT, |r| {
            r["status"] == "ACTIVE" && r["nodes"].as_array().is_some_and(|n| n.len() == 4)
        })
        .await;
    // THEN the new worker has a carrier IP and a gp2 root too
    let (third, _) = node_of(&record, "worker", 2);
    let node = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["instance_id"] == third.as_str())
        .unwrap();
    assert_eq!(node["zone_type"], "wavelength-zone", "{node}");
    assert!(node["carrier_ip"].is_string(), "{node}");
    assert_eq!(node["volume_type"], "gp2", "{node}");
    assert_eq!(
        root_volume_types(&ec2, std::slice::from_ref(&third)).await[&third],
        "gp2"
    );

    // AND a delete leaves nothing behind
    let (status, deleting) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(status, 202, "{deleting}");
    stack
        .wait_record(&id, "DELETED", TIMEOUT, |r| r["status"] == "DELETED")
        .await;
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wavelength_subnet_without_a_carrier_gateway_route_fails_early_leaving_nothing() {
    let stack = Stack::start(300).await;
    let ec2 = stack.ec2();

    // GIVEN a Wavelength subnet on the VPC's main route table, which has no carrier gateway
    let subnet = subnet_in_zone(&ec2, WAVELENGTH).await;

    // WHEN a cluster is created there
    let (code, created) = stack
        .api("POST", "/clusters", Some(&wavelength_spec("wl-b", &subnet)))
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // THEN the create ends FAILED at the security-group stage, naming the subnet's entry and
    // saying what to add
    let record = stack
        .wait_record(&id, "the create to fail", TIMEOUT, |r| {
            r["status"] == "FAILED"
        })
        .await;
    let failure = &record["failure"];
    assert_eq!(
        (failure["stage"].as_str(), failure["error"].as_str()),
        (Some("security-group"), Some("ValidationError")),
        "{record}"
    );
    let reason = failure["reason"].as_str().unwrap_or_default();
    let vpc = default_vpc(&ec2).await;
    for want in [
        "subnet_ids[0]".to_string(),
        format!("{subnet} is in Wavelength zone {WAVELENGTH}"),
        "no 0.0.0.0/0 route to a carrier gateway".to_string(),
        format!("aws ec2 create-carrier-gateway --vpc-id {vpc}"),
        "--destination-cidr-block 0.0.0.0/0 --carrier-gateway-id".to_string(),
    ] {
        assert!(reason.contains(&want), "{want} not in: {reason}");
    }
    // AND nothing is left: no instance, group or parameter
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    stack.assert_calls_allowed_by_template().await;
}
