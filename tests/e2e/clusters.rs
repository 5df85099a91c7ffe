//! End to end on the local stack — real state machines, real function binaries, simulated nodes:
//! create a cluster, check what exists, delete it, check nothing is left.

use std::time::Duration;

use crate::support::stack::{self, Stack};
use serde_json::json;

const CREATE_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_plus_two_cluster_through_the_api_then_delete() {
    let stack = Stack::start(300).await;

    // GIVEN a 1+2 cluster requested through the HTTP API, in a region other than the control
    // plane's own
    let region = stack::CLUSTER_REGIONS[1];
    let mut spec = stack::spec("edge-a", 1, 2);
    spec["region"] = json!(region);
    spec["exposed_ports"] = json!([
        {"port": 443, "cidrs": ["198.51.100.0/24"]},
        {"port": "30000-32767", "protocol": "udp", "cidrs": ["198.51.100.0/24", "192.0.2.0/24"]},
    ]);
    let (status, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let execution = created["execution_arn"]
        .as_str()
        .expect("execution arn")
        .to_string();

    // WHEN the create execution ends
    let ended = stack.wait_execution(&execution, CREATE_TIMEOUT).await;
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());

    // THEN the record is ACTIVE with three Ready nodes and a kubeconfig reference
    let record = stack.record(&id).await;
    assert_eq!(record["status"], "ACTIVE");
    let nodes = record["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["state"] == "ready"), "{record}");
    assert_eq!(nodes.iter().filter(|n| n["role"] == "worker").count(), 2);
    let kubeconfig_parameter = record["kubeconfig_parameter"]
        .as_str()
        .expect("kubeconfig parameter");
    let output = ended.output.expect("output");
    assert_eq!(output["cluster_id"], id);
    assert!(
        !output.to_string().contains("token"),
        "the output carries no secret: {output}"
    );

    // AND three instances in the cluster's region (none in the control plane's) carry the tags,
    // IMDSv2 and an encrypted gp3 root volume
    assert_eq!(record["spec"]["region"], region);
    let ec2 = stack.ec2_in(region);
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("tag:mecplane:cluster")
        .values(&id)
        .build();
    let at_home = stack
        .ec2()
        .describe_instances()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    assert!(at_home.reservations().is_empty(), "{at_home:?}");
    let reservations = ec2
        .describe_instances()
        .filters(filter.clone())
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let instances: Vec<_> = reservations
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect();
    assert_eq!(instances.len(), 3);
    for i in &instances {
        let tags: std::collections::HashMap<_, _> = i
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
            .collect();
        assert_eq!(tags["mecplane:cluster"], id);
        assert_eq!(tags["mecplane:cluster-name"], "edge-a");
        assert!(["control-plane", "worker"].contains(&tags["mecplane:role"]));
        let metadata = i.metadata_options().expect("metadata options");
        assert_eq!(
            metadata.http_tokens().map(|t| t.as_str()),
            Some("required"),
            "IMDSv2"
        );
        assert_eq!(
            metadata.http_put_response_hop_limit(),
            Some(1),
            "no pod reaches the node's credentials"
        );
        for mapping in i.block_device_mappings() {
            let volume_id = mapping.ebs().and_then(|e| e.volume_id()).expect("volume");
            let volume = ec2
                .describe_volumes()
                .volume_ids(volume_id)
                .send()
                .await
                .unwrap();
            assert_eq!(
                volume.volumes()[0].encrypted(),
                Some(true),
                "encrypted root volume"
            );
            assert_eq!(
                volume.volumes()[0].volume_type().map(|t| t.as_str()),
                Some("gp3")
            );
        }
    }

    // AND the security group opens nothing but the MicroK8s ports, 16443 only to the named CIDR,
    // the exposed ports exactly as asked, never 22
    let groups = ec2
        .describe_security_groups()
        .filters(filter)
        .send()
        .await
        .unwrap();
    assert_eq!(groups.security_groups().len(), 1);
    let group = &groups.security_groups()[0];
    let mut from_group = std::collections::BTreeSet::new();
    let mut from_outside = std::collections::BTreeSet::new();
    for p in group.ip_permissions() {
        let protocol = p.ip_protocol().unwrap_or_default();
        let (from, to) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
        assert!(
            protocol != "-1" && !(from..=to).contains(&22),
            "a rule covers port 22: {p:?}"
        );
        for range in p.ip_ranges() {
            from_outside.insert(format!(
                "{protocol}/{from}-{to} {}",
                range.cidr_ip().unwrap_or_default()
            ));
        }
        for pair in p.user_id_group_pairs() {
            assert_eq!(pair.group_id(), group.group_id(), "only the group itself");
            assert_eq!(from, to, "single ports between the nodes: {p:?}");
            from_group.insert(format!("{protocol}/{from}"));
        }
        assert!(p.ipv6_ranges().is_empty() && p.prefix_list_ids().is_empty());
    }
    let expected: std::collections::BTreeSet<String> = mecplane::microk8s::INTRA_CLUSTER_TCP
        .iter()
        .map(|p| format!("tcp/{p}"))
        .chain(
            mecplane::microk8s::INTRA_CLUSTER_UDP
                .iter()
                .map(|p| format!("udp/{p}")),
        )
        .collect();
    assert_eq!(
        from_group, expected,
        "the MicroK8s ports, from the group itself"
    );
    assert_eq!(
        from_outside,
        [
            "tcp/16443-16443 203.0.113.0/24",
            "tcp/443-443 198.51.100.0/24",
            "udp/30000-32767 192.0.2.0/24",
            "udp/30000-32767 198.51.100.0/24",
        ]
        .map(String::from)
        .into(),
        "the API to its CIDR, the exposed ports to theirs"
    );
    assert_eq!(record["spec"]["exposed_ports"][1]["port"], "30000-32767");

    // AND the kubeconfig is a SecureString pointing at the first control plane's API
    let param = stack
        .ssm()
        .get_parameter()
        .name(kubeconfig_parameter)
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    let param = param.parameter().expect("parameter");
    assert_eq!(param.r#type().map(|t| t.as_str()), Some("SecureString"));
    assert!(param.value().unwrap_or_default().contains(":16443"));
    let (status, kubeconfig) = stack
        .api("GET", &format!("/clusters/{id}/kubeconfig"), None)
        .await;
    assert_eq!(status, 200, "{kubeconfig}");

    // AND the events tell the story, stage by stage, without a secret
    let text = stack.events_text(&id).await;
    for stage in [
        "register",
        "resolve-ami",
        "security-group",
        "launch-control-planes",
        "bootstrap",
        "join-workers",
        "verify",
        "store-kubeconfig",
        "activate",
    ] {
        assert!(
            text.contains(&format!("\"{stage}\"")),
            "no {stage} event in {text}"
        );
    }
    // (No join token is stored: each join's token is made on a control plane and reaches the
    // joining node only sealed to its one-time key; tests/e2e/tokens.rs reads what SSM keeps.)
    // AND the kubeconfig's private key is in no log or execution history
    let key = param
        .value()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-key-data:"))
        .map(|v| v.trim().to_string())
        .expect("the kubeconfig carries a client key");
    let history = stack
        .sfn()
        .get_execution_history()
        .execution_arn(&execution)
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let history = format!("{:?}", history.events());
    let logs = stack.function_logs();
    assert!(logs.contains("command sent"), "the function logs are read");
    assert!(!logs.contains(key.as_str()), "kubeconfig key in the logs");
    assert!(
        !history.contains(key.as_str()),
        "kubeconfig key in the history"
    );

    // AND every secret is a SecureString under the project's KMS key, and the one-time transport
    // key is gone once the kubeconfig is stored
    let described = stack
        .ssm()
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Path")
                .values(format!("/mecplane/clusters/{id}"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut names: Vec<_> = described
        .parameters()
        .iter()
        .map(|p| {
            assert_eq!(
                p.r#type().map(|t| t.as_str()),
                Some("SecureString"),
                "{p:?}"
            );
            assert_eq!(p.key_id(), Some("alias/mecplane-secrets"), "{p:?}");
            p.name()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["kubeconfig"], "no join token is stored");

    // AND no command output holds a secret in clear (SSM keeps it 30 days for every reader)
    let outputs = stack.command_outputs().await;
    assert!(
        outputs.iter().any(|o| o.contains("MECPLANE_SEALED v1 ")),
        "the kubeconfig command's sealed output is read: {outputs:?}"
    );
    for output in &outputs {
        for secret in [
            "client-key-data",
            "client-certificate-data",
            "certificate-authority-data",
            "BEGIN CERTIFICATE",
            "token:",
            key.as_str(),
        ] {
            assert!(
                !output.contains(secret),
                "{secret} in a command output: {output}"
            );
        }
    }

    // AND in the simulator every node is a Ready member, the workers joined with --worker
    let sim = stack.sim_instances().await;
    let mine: Vec<_> = sim
        .iter()
        .filter(|i| i["cluster_name"] == "edge-a")
        .collect();
    assert_eq!(mine.len(), 3);
    let dump = serde_json::to_string(&mine).unwrap();
    assert!(
        dump.contains("--worker"),
        "workers join with --worker: {dump}"
    );

    // WHEN the cluster is deleted
    let (status, deleting) = stack.api("DELETE", &format!("/clusters/{id}"), None).await;
    assert_eq!(status, 202, "{deleting}");
    let deletion = stack
        .sfn()
        .list_executions()
        .state_machine_arn(stack.delete_machine())
        .send()
        .await
        .unwrap()
        .executions()
        .iter()
        .find(|e| e.name().contains(&id))
        .map(|e| e.execution_arn().to_string())
        .expect("delete execution");
    let ended = stack.wait_execution(&deletion, CREATE_TIMEOUT).await;
    assert_eq!(ended.status, "SUCCEEDED", "{ended:?}\n{}", stack.logs());

    // THEN nothing of it is left, and a second delete is harmless
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));
    let again = stack.start_delete("delete-again", json!({"id": id})).await;
    assert_eq!(
        stack.wait_execution(&again, CREATE_TIMEOUT).await.status,
        "SUCCEEDED"
    );
    // AND every AWS call a function made is one its role in the template allows
    stack.assert_calls_allowed_by_template().await;
}
