//! A stable API endpoint for an HA cluster on the local stack (moto's ELBv2 behind the gateway):
//! a control plane in a Local Zone cannot be behind a network load balancer (`422` naming
//! `api_endpoint`, nothing registered); a 3+2 cluster over three subnets in three zones with `api_endpoint: "nlb"` and a name of the
//! user's own in `extra_sans` gets a network load balancer in front of its control planes; the
//! kubeconfig's server is the balancer's DNS name, which every control plane's certificate carries
//! with the user's name (the launch configuration the node simulator read); a replaced control
//! plane is deregistered and its successor registered; deleting the cluster leaves no load
//! balancer, listener or target group.

use std::time::Duration;

use crate::support::stack::{self, node_of, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_nlb_fronts_the_control_planes_names_the_kubeconfig_and_goes_with_the_cluster() {
    let stack = Stack::start(300).await;

    // GIVEN three subnets of the default VPC in three zones
    let name = "ha-nlb";
    let (mut spec, subnets) = stack.spec_across_zones(name, 3, 2, 3).await;
    spec["api_endpoint"] = json!("nlb");
    spec["extra_sans"] = json!(["k8s.edge.example"]);

    // A network load balancer spans availability zones only: a control plane in the Local Zone
    // us-east-1-bos-1a (which offers t3.medium) is refused before anything is registered.
    let boston = crate::edge::subnet_in_zone(&stack.ec2(), "us-east-1-bos-1a").await;
    let mut edge = spec.clone();
    edge["name"] = json!("ha-nlb-edge");
    edge["instance_type"] = json!("t3.medium");
    edge["subnet_ids"] = json!([subnets[0].0, boston, subnets[2].0]);
    let (code, refused) = stack.api("POST", "/clusters", Some(&edge)).await;
    assert_eq!(
        (code, refused["error"]["field"].as_str()),
        (422, Some("api_endpoint")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&boston) && m.contains("local-zone")),
        "{refused}"
    );
    let (code, _) = stack.api("GET", "/clusters/ha-nlb-edge", None).await;
    assert_eq!(code, 404, "nothing registered");

    // WHEN a 3+2 cluster is asked for with api_endpoint nlb and a name of the user's own
    let (code, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(code, 202, "{created}");
    assert_eq!(created["spec"]["api_endpoint"], "nlb", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let record = stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;

    // THEN the control planes are one per zone
    let mut zones: Vec<String> = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "control-plane")
        .filter_map(|n| n["zone"].as_str().map(str::to_string))
        .collect();
    zones.sort();
    let mut wanted: Vec<String> = subnets.iter().map(|(_, z)| z.clone()).collect();
    wanted.sort();
    assert_eq!(zones, wanted, "{record}");

    // AND the record names the load balancer, whose DNS name is the kubeconfig's server
    let dns = record["balancer"]["dns_name"]
        .as_str()
        .unwrap_or_else(|| panic!("no balancer on the record: {record}"))
        .to_string();
    let endpoint = format!("https://{dns}:16443");
    assert_eq!(record["endpoint"], endpoint.as_str(), "{record}");
    let (status, kubeconfig) = stack
        .api("GET", &format!("/clusters/{id}/kubeconfig"), None)
        .await;
    assert_eq!(status, 200, "{kubeconfig}");
    let yaml = kubeconfig["kubeconfig"].as_str().unwrap_or_default();
    assert!(
        yaml.contains(&format!("server: {endpoint}")),
        "the kubeconfig's server is the load balancer: {yaml}"
    );

    // AND every control plane's certificate names the balancer and the user's name (the
    // launch configuration the simulated MicroK8s read at install); workers serve no API
    let nodes: Vec<_> = stack
        .sim_instances()
        .await
        .into_iter()
        .filter(|i| i["cluster_name"] == name)
        .collect();
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    let control_planes: Vec<_> = nodes
        .iter()
        .filter(|i| i["role"] == "control-plane")
        .collect();
    assert_eq!(control_planes.len(), 3, "{nodes:?}");
    for node in control_planes {
        let sans: Vec<&str> = node["state"]["extra_sans"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert!(
            sans.contains(&dns.as_str()) && sans.contains(&"k8s.edge.example"),
            "{node}"
        );
    }

    // AND the load balancer forwards TCP 16443 to the three control planes
    let events = stack.events(&id).await;
    let made = events
        .iter()
        .find(|e| e["stage"] == "load-balancer" && e["phase"] == "finished")
        .and_then(|e| e["detail"].as_str())
        .unwrap_or_default();
    assert!(made.contains("3 control plane(s) registered"), "{events:?}");
    assert_eq!(
        stack.balancers_left(&id).await.len(),
        3,
        "balancer, listener, group"
    );
    let planes = |r: &Value| {
        let mut ids: Vec<String> = (0..3).map(|i| node_of(r, "control-plane", i).0).collect();
        ids.sort();
        ids
    };
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&stack.sdk);
    let target_group = record["balancer"]["target_group_arn"]
        .as_str()
        .unwrap()
        .to_string();
    let targets = || async {
        let out = elb
            .describe_target_health()
            .target_group_arn(&target_group)
            .send()
            .await
            .expect("describe target health");
        let mut ids: Vec<String> = out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(targets().await, planes(&record));

    // WHEN the second control plane is replaced
    let (old, _) = node_of(&record, "control-plane", 1);
    let (code, accepted) = stack
        .api(
            "POST",
            &format!("/clusters/{id}/nodes/{old}/replace"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(code, 202, "{accepted}");
    let record = stack
        .wait_record(&id, "the replacement to end", TIMEOUT, |r| {
            r["status"] != "UPDATING"
        })
        .await;
    assert_eq!(record["status"], "ACTIVE", "{record}\n{}", stack.logs());

    // THEN the load balancer forwards to the new one and no longer to the old one
    let now = planes(&record);
    assert!(!now.contains(&old), "{record}");
    assert_eq!(targets().await, now);

    // WHEN the cluster is deleted
    let (status, deleting) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(status, 202, "{deleting}");
    stack
        .wait_record(&id, "DELETED", TIMEOUT, |r| r["status"] == "DELETED")
        .await;

    // THEN no load balancer, listener or target group is left, nor anything else
    assert_eq!(stack.balancers_left(&id).await, Vec::<String>::new());
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_failing_after_its_balancer_exists_leaves_no_balancer() {
    let stack = Stack::start(300).await;

    // GIVEN an nlb cluster whose bootstrap fails (after the load balancer was made)
    let name = "nlb-fails";
    stack
        .fault(json!({"cluster_name": name, "fault": "command_fails", "script": "bootstrap"}))
        .await;
    let mut spec = stack::spec(name, 1, 1);
    spec["api_endpoint"] = json!("nlb");
    let (code, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // WHEN the create fails
    let record = stack
        .wait_record(&id, "FAILED", TIMEOUT, |r| r["status"] == "FAILED")
        .await;
    assert_eq!(record["failure"]["stage"], "bootstrap", "{record}");
    let made = stack
        .events(&id)
        .await
        .iter()
        .any(|e| e["stage"] == "load-balancer" && e["phase"] == "finished");
    assert!(made, "the load balancer was made before the bootstrap");

    // THEN its cleanup removed the load balancer, listener and target group with the rest
    let execution = record["execution_arn"]
        .as_str()
        .expect("execution")
        .to_string();
    let ended = stack.wait_execution(&execution, TIMEOUT).await;
    assert_eq!(ended.status, "FAILED", "{ended:?}");
    let left = stack.balancers_left(&id).await;
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    stack.assert_calls_allowed_by_template().await;
}
