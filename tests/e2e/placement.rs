//! Placement checked at the request (`mecplane::placement` in `POST /clusters`), against the
//! local stack's zone catalogue: an instance type a Local Zone does not offer, and a Local Zone
//! whose group is not opted in, are a `422` naming the field with nothing registered or started;
//! a `vpc_id` without subnets becomes an ACTIVE cluster on subnets the API chose in that VPC.

use std::time::Duration;

use serde_json::{json, Value};

use crate::edge::subnet_in_zone;
use crate::support::stack::{self, Stack};

const CREATE_TIMEOUT: Duration = Duration::from_secs(240);

/// Nothing of a refused request exists: no record (by name or in the list), no execution.
async fn nothing_registered(stack: &Stack, name: &str) {
    let (status, _) = stack.api("GET", &format!("/clusters/{name}"), None).await;
    assert_eq!(status, 404, "no record named {name}");
    let (status, list) = stack.api("GET", "/clusters", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["clusters"], json!([]), "{list}");
    let executions = stack
        .sfn()
        .list_executions()
        .state_machine_arn(stack.create_machine())
        .send()
        .await
        .expect("ListExecutions");
    assert!(executions.executions().is_empty(), "{executions:?}");
}

fn error_of(body: &Value) -> (&str, &str, &str) {
    let e = &body["error"];
    (
        e["code"].as_str().unwrap_or_default(),
        e["field"].as_str().unwrap_or_default(),
        e["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zone_that_cannot_take_the_nodes_is_422_and_nothing_is_registered() {
    let stack = Stack::start(300).await;
    let ec2 = stack.ec2();

    // GIVEN a subnet in the Local Zone us-east-1-bos-1a, which offers no t4g.medium (the default)
    let boston = subnet_in_zone(&ec2, "us-east-1-bos-1a").await;
    let key = [("idempotency-key", "placement-1")];
    let mut spec = stack::spec("edge-lz", 1, 1);
    spec["subnet_ids"] = json!([boston]);

    // WHEN it is asked for, THEN 422 names instance_type and lists what the zone offers
    let (status, body) = stack.api_with("POST", "/clusters", Some(&spec), &key).await;
    assert_eq!(status, 422, "{body}");
    let (code, field, message) = error_of(&body);
    assert_eq!(
        (code, field),
        ("ValidationError", "instance_type"),
        "{body}"
    );
    assert!(
        message.contains("t4g.medium is not offered in us-east-1-bos-1a (local-zone")
            && message.contains(
                "offered there: c5.2xlarge, m5.2xlarge, r5.2xlarge, t3.medium, t3.xlarge"
            ),
        "{message}"
    );
    nothing_registered(&stack, "edge-lz").await;

    // GIVEN a subnet in us-east-1-mia-1a, whose zone group the account has not opted in to
    let miami = subnet_in_zone(&ec2, "us-east-1-mia-1a").await;
    spec["subnet_ids"] = json!([miami]);
    spec["instance_type"] = json!("t3.medium");
    let (status, body) = stack.api_with("POST", "/clusters", Some(&spec), &key).await;
    assert_eq!(status, 422, "{body}");
    let (code, field, message) = error_of(&body);
    assert_eq!(
        (code, field),
        ("ValidationError", "subnet_ids[0]"),
        "{body}"
    );
    assert!(
        message.contains(&miami)
            && message.contains("zone group us-east-1-mia-1")
            && message.contains("modify-availability-zone-group"),
        "{message}"
    );
    nothing_registered(&stack, "edge-lz").await;

    // AND a VPC that does not exist is named as such
    let mut elsewhere = stack::spec("edge-lz", 1, 0);
    elsewhere["vpc_id"] = json!("vpc-0000000000000dead");
    let (status, body) = stack.api("POST", "/clusters", Some(&elsewhere)).await;
    assert_eq!((status, error_of(&body).1), (422, "vpc_id"), "{body}");
    nothing_registered(&stack, "edge-lz").await;

    // AND the fixed request, with the same key, is taken: the refusals claimed nothing
    spec["subnet_ids"] = json!([boston]);
    let (status, body) = stack.api_with("POST", "/clusters", Some(&spec), &key).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["spec"]["subnet_ids"], json!([boston]));
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vpc_alone_becomes_a_cluster_on_subnets_the_api_chose() {
    let stack = Stack::start(300).await;
    let ec2 = stack.ec2();
    let vpc = stack.default_vpc().await;
    // A Local Zone subnet in the VPC is never chosen: standard zones only.
    let boston = subnet_in_zone(&ec2, "us-east-1-bos-1a").await;

    // GIVEN a 1+2 cluster that names its VPC and no subnet
    let mut spec = stack::spec("edge-vpc", 1, 2);
    spec["vpc_id"] = json!(vpc);
    let (status, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    // THEN the record's spec holds the chosen subnets: three, in three standard zones
    let chosen: Vec<String> = created["spec"]["subnet_ids"]
        .as_array()
        .expect("subnet_ids")
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(chosen.len(), 3, "{created}");
    assert!(!chosen.contains(&boston), "{chosen:?}");
    assert_eq!(created["spec"]["vpc_id"], json!(vpc));
    let described = ec2
        .describe_subnets()
        .set_subnet_ids(Some(chosen.clone()))
        .send()
        .await
        .expect("DescribeSubnets");
    let mut zones: Vec<String> = described
        .subnets()
        .iter()
        .inspect(|s| assert_eq!(s.vpc_id(), Some(vpc.as_str())))
        .map(|s| s.availability_zone().unwrap().to_string())
        .collect();
    zones.sort();
    zones.dedup();
    assert_eq!(zones.len(), 3, "one subnet per zone: {zones:?}");

    // AND the cluster becomes ACTIVE with its nodes in those subnets' zones
    let record = stack
        .wait_record(&id, "ACTIVE", CREATE_TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    assert_eq!(record["spec"]["subnet_ids"], json!(chosen));
    let nodes = record["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        let zone = node["zone"].as_str().unwrap_or_default().to_string();
        assert!(zones.contains(&zone), "{node} in {zones:?}");
    }

    // AND a create started from the console with the VPC alone gets the same subnets, in its
    // record too (chosen by security-group: no API in between)
    let mut console = stack::spec("edge-vpc-console", 1, 0);
    console["vpc_id"] = json!(vpc);
    let input = json!({"spec": console, "timing": stack::fast_timing()});
    let arn = stack.start_create("edge-vpc-console", input).await;
    let ended = stack.wait_execution(&arn, CREATE_TIMEOUT).await;
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());
    let record = stack.record("edge-vpc-console").await;
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["spec"]["subnet_ids"], json!(chosen), "{record}");
    stack.assert_calls_allowed_by_template().await;
}
