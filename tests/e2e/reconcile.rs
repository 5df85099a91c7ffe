//! Fleet reconciliation on the local stack, real machines and binaries. On demand
//! (`POST /reconcile`): a healthy cluster is left alone; a worker terminated out of band is
//! planned in a dry run, then replaced and joined, the record back ACTIVE; an orphan instance with
//! the project's tags is removed after its grace and not before. Scheduled: with the gateway
//! firing the schedule every few seconds (and EC2 state-change events), a terminated worker is
//! replaced without anyone asking, and the runs over a healthy fleet made no mutating call.
//! Housekeeping: an orphan security group and parameter go after their grace (a live cluster's
//! stay), a group's drifted rules come back exactly, a create stopped from the console is
//! failed and torn down, and an orphan API load balancer (its record `DELETED` without a teardown)
//! goes with its listener and target group once past the grace.

use std::time::Duration;

use crate::support::stack::{self, node_of, Stack};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(300);
/// The orphan grace the test stacks run with.
const ORPHAN_GRACE_SECONDS: u64 = 20;

/// A stack whose reconcile runs only when asked, with [`ORPHAN_GRACE_SECONDS`] of grace.
async fn start_with_orphan_grace() -> Stack {
    let grace = ORPHAN_GRACE_SECONDS.to_string();
    Stack::start_with(
        300,
        &[("MECPLANE_ORPHAN_GRACE_SECONDS", grace.as_str())],
        &stack::RECONCILE_OFF,
    )
    .await
}

async fn reconcile(stack: &Stack, dry_run: bool) -> Value {
    let (code, report) = stack
        .api("POST", "/reconcile", Some(&json!({"dry_run": dry_run})))
        .await;
    assert_eq!(code, 200, "{report}");
    report
}

/// Whether an instance is live (not shutting down or terminated) in moto.
async fn is_live(stack: &Stack, instance_id: &str) -> bool {
    let out = stack
        .ec2()
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .any(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated" | "shutting-down")
            )
        })
}

async fn create(stack: &Stack, name: &str, control_planes: u32, workers: u32) -> Value {
    let (code, created) = stack
        .api(
            "POST",
            "/clusters",
            Some(&stack::spec(name, control_planes, workers)),
        )
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_demand_a_lost_worker_is_replaced_and_an_orphan_removed_after_its_grace() {
    let stack = start_with_orphan_grace().await;
    let record = create(&stack, "mended", 1, 2).await;
    let id = record["id"].as_str().unwrap().to_string();

    // A healthy fleet: nothing planned, nothing written.
    let report = reconcile(&stack, false).await;
    assert_eq!(report["plan"]["actions"], json!([]), "{report}");
    assert_eq!(report["records"], 1);
    assert_eq!(stack.record(&id).await["version"], record["version"]);

    // A principal the deployment does not name (ReconcilePrincipals) may not run one that acts:
    // 403 saying why. A dry run is its to ask.
    let mallory = [(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDMALLORY/20260101/us-east-1/execute-api/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=0000",
    )];
    let (code, refused) = stack
        .api_with(
            "POST",
            "/reconcile",
            Some(&json!({"dry_run": false})),
            &mallory,
        )
        .await;
    assert_eq!(
        (code, refused["error"]["code"].as_str()),
        (403, Some("NotAllowed")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("user/AKIDMALLORY is not one of")),
        "{refused}"
    );
    let (code, report) = stack
        .api_with(
            "POST",
            "/reconcile",
            Some(&json!({"dry_run": true})),
            &mallory,
        )
        .await;
    assert_eq!(
        (code, report["dry_run"].as_bool()),
        (200, Some(true)),
        "{report}"
    );

    // An orphan: an instance the deployment launched (its tag and node instance profile) whose
    // cluster has no record; and a look-alike someone else launched with the same cluster tag.
    let ec2 = stack.ec2();
    let profile = stack::profile_of(&ec2, &node_of(&record, "worker", 0).0).await;
    let ours = [
        ("mecplane:deployment", "mecplane"),
        ("mecplane:cluster", "c-00000000000000ff"),
    ];
    let orphan = stack::run_instance(&ec2, &ours, Some(&profile)).await;
    let look_alike =
        stack::run_instance(&ec2, &[("mecplane:cluster", "c-00000000000000ff")], None).await;
    let orphaned_at = std::time::Instant::now();

    // GIVEN a worker lost out of band
    let lost = node_of(&record, "worker", 1).0;
    stack.kill(&lost).await;

    // WHEN a dry run is asked: the replacement is planned, nothing done
    let dry = reconcile(&stack, true).await;
    let actions = dry["plan"]["actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "replace-node" && a["instance_id"] == lost.as_str()),
        "{dry}"
    );
    assert!(
        !actions.iter().any(|a| a["action"] == "terminate-orphan"),
        "the orphan is younger than its grace: {dry}"
    );
    assert_eq!(dry["outcomes"], json!([]));
    assert_eq!(stack.record(&id).await["status"], "ACTIVE");

    // WHEN it is run for real, twice at once: one replacement starts, the other run skips it
    let (first, second) = tokio::join!(reconcile(&stack, false), reconcile(&stack, false));
    let results: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|r| r["outcomes"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["action"] == "replace-node")
        .map(|o| o["result"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.starts_with("done")).count(),
        1,
        "one replacement for one dead node: {first}\n{second}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.starts_with("done") || r.starts_with("skipped")),
        "{results:?}"
    );

    // THEN a new worker 1 joins and the record is ACTIVE again, the update by the reconcile
    let record = stack
        .wait_record(&id, "the replacement", TIMEOUT, |r| r["status"] == "ACTIVE")
        .await;
    let replacement = node_of(&record, "worker", 1).0;
    assert_ne!(replacement, lost);
    assert!(
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{record}"
    );
    let replacements = record["updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["kind"] == "replace-node")
        .count();
    assert_eq!(replacements, 1, "{record}");
    let update = record["updates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (
            update["kind"].as_str(),
            update["status"].as_str(),
            update["created_by"].as_str()
        ),
        (
            Some("replace-node"),
            Some("Successful"),
            Some("mecplane:reconcile")
        ),
        "{update}"
    );
    assert!(
        stack.has_event(&id, "reconcile", &lost).await,
        "{:?}",
        stack.events(&id).await
    );
    assert!(
        is_live(&stack, &orphan).await,
        "not removed before its grace"
    );

    // AND the orphan goes once its grace has passed, and nothing else
    let wait = Duration::from_secs(ORPHAN_GRACE_SECONDS + 2).saturating_sub(orphaned_at.elapsed());
    tokio::time::sleep(wait).await;
    let report = reconcile(&stack, false).await;
    let removed: Vec<&Value> = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "terminate-orphan")
        .collect();
    assert_eq!(removed.len(), 1, "{report}");
    assert_eq!(removed[0]["instance_id"], orphan.as_str());
    assert!(!is_live(&stack, &orphan).await);
    assert!(is_live(&stack, &replacement).await);
    // The look-alike is not the deployment's: never seen, never touched.
    assert!(is_live(&stack, &look_alike).await);
    assert!(!report.to_string().contains(&look_alike), "{report}");
    stack.assert_calls_allowed_by_template().await;
}

/// The gateway's record of the reconcile runs it started (schedule and EC2 events).
async fn runs(stack: &Stack) -> Vec<Value> {
    let (code, body) = stack.request("GET", "/_local/reconciles", None, &[]).await;
    assert_eq!(code, 200, "{body}");
    body["reconciles"].as_array().cloned().unwrap_or_default()
}

/// The IAM actions the `reconcile` function has used so far.
async fn reconcile_actions(stack: &Stack) -> Vec<String> {
    let (_, body) = stack.request("GET", "/_local/calls", None, &[]).await;
    body["calls"]["reconcile"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_schedule_a_stopped_control_plane_is_replaced_and_a_dead_cluster_only_reported() {
    let stack = Stack::start_with(
        300,
        &[],
        &[
            ("MECPLANE_RECONCILE_INTERVAL_SECONDS", "3"),
            ("MECPLANE_RECONCILE_EC2_EVENTS", "true"),
        ],
    )
    .await;
    let record = create(&stack, "sentinel", 3, 1).await;
    let id = record["id"].as_str().unwrap().to_string();

    // Scheduled runs over the healthy fleet: only reads.
    let active_runs = runs(&stack).await.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs(&stack)
        .await
        .iter()
        .skip(active_runs)
        .filter(|r| r["trigger"] == "schedule" && r["status"] == "succeeded")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            runs(&stack).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let actions = reconcile_actions(&stack).await;
    assert!(!actions.is_empty());
    for action in &actions {
        assert!(
            [
                "ec2:Describe",
                "ssm:Describe",
                "elasticloadbalancing:Describe",
                "dynamodb:Query",
                "dynamodb:GetItem",
                "states:Describe",
                "logs:",
                "xray:"
            ]
            .iter()
            .any(|read| action.starts_with(read)),
            "a mutating call over a healthy fleet: {action} in {actions:?}"
        );
    }
    assert_eq!(stack.record(&id).await["version"], record["version"]);

    // GIVEN a control plane stopped out of band
    let stopped = node_of(&record, "control-plane", 1).0;
    stack
        .ec2()
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .expect("stop");

    // THEN, without anyone asking, it is replaced: three Ready control planes again
    let healed = stack
        .wait_record(
            &id,
            "the replacement of the stopped control plane",
            TIMEOUT,
            |r| {
                r["status"] == "ACTIVE"
                    && r["updates"].as_array().is_some_and(|u| {
                        u.iter()
                            .any(|u| u["kind"] == "replace-node" && u["status"] == "Successful")
                    })
            },
        )
        .await;
    let successor = node_of(&healed, "control-plane", 1).0;
    assert_ne!(successor, stopped);
    assert!(
        healed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{healed}"
    );
    assert_eq!(healed["nodes"].as_array().unwrap().len(), 4);
    // three control planes in the datastore again: the successor in, the stopped one out
    let members: Vec<String> = stack.sim_datastore("sentinel").await["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["instance_id"].as_str().map(str::to_string))
        .collect();
    for i in 0..3 {
        let cp = node_of(&healed, "control-plane", i).0;
        assert!(members.contains(&cp), "{cp} in {members:?}");
    }
    assert!(!members.contains(&stopped), "{members:?}");
    let update = healed["updates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(update["created_by"], "mecplane:reconcile", "{update}");
    assert!(
        runs(&stack)
            .await
            .iter()
            .any(|r| r["trigger"] == "ec2" && r["instance_id"] == stopped.as_str()),
        "the stop sent its state-change event"
    );

    // GIVEN every node of the cluster killed at once (one call: a reconcile the EC2 events start
    // must not see the cluster with only some of them gone)
    let every_node: Vec<String> = healed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["instance_id"].as_str().unwrap().to_string())
        .collect();
    stack
        .ec2()
        .terminate_instances()
        .set_instance_ids(Some(every_node))
        .send()
        .await
        .expect("terminate");

    // THEN no remediation: DEGRADED, reported, no new update started
    let degraded = stack
        .wait_record(&id, "DEGRADED", TIMEOUT, |r| r["status"] == "DEGRADED")
        .await;
    assert_eq!(
        degraded["degraded"]["nodes"].as_array().unwrap().len(),
        4,
        "{degraded}"
    );
    assert!(
        degraded["degraded"]["reason"]
            .as_str()
            .unwrap()
            .contains("not remediated"),
        "{degraded}"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    let later = stack.record(&id).await;
    assert_eq!(
        later["updates"].as_array().unwrap().len(),
        healed["updates"].as_array().unwrap().len()
    );
    assert_eq!(later["status"], "DEGRADED");
    stack.assert_calls_allowed_by_template().await;
}

/// The reconcile's grace in the sick-node test: short, so the test waits a few seconds.
const SICK_GRACE_SECONDS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_demand_a_node_whose_agent_went_offline_is_replaced_past_the_grace() {
    let grace = SICK_GRACE_SECONDS.to_string();
    let stack = Stack::start_with(
        300,
        &[("MECPLANE_RECONCILE_GRACE_SECONDS", grace.as_str())],
        &stack::RECONCILE_OFF,
    )
    .await;
    let record = create(&stack, "ailing", 1, 2).await;
    let id = record["id"].as_str().unwrap().to_string();

    // A healthy fleet: the agents pinged, nothing planned, nothing written.
    let report = reconcile(&stack, false).await;
    assert_eq!(report["plan"]["actions"], json!([]), "{report}");
    assert_eq!(stack.record(&id).await["version"], record["version"]);

    // GIVEN worker 1's SSM agent offline (its instance still running)
    let (sick, _) = node_of(&record, "worker", 1);
    stack
        .fault(json!({"cluster_name": "ailing", "role": "worker", "index": 1, "fault": "agent_offline"}))
        .await;
    let offline_at = std::time::Instant::now();

    // WHEN a run looks within the grace: nothing
    let early = reconcile(&stack, false).await;
    assert!(
        offline_at.elapsed() < Duration::from_secs(SICK_GRACE_SECONDS),
        "the test was too slow to look within the grace"
    );
    assert_eq!(early["plan"]["actions"], json!([]), "{early}");
    assert_eq!(stack.record(&id).await["status"], "ACTIVE");

    // WHEN a run looks past the grace: the worker is replaced, the reason naming the check
    let wait = Duration::from_secs(SICK_GRACE_SECONDS + 1).saturating_sub(offline_at.elapsed());
    tokio::time::sleep(wait).await;
    let report = reconcile(&stack, false).await;
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["action"] == "replace-node")
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    assert_eq!(outcome["instance_id"], sick.as_str(), "{outcome}");
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap()
            .starts_with("SSM agent ConnectionLost since "),
        "{outcome}"
    );
    assert!(
        outcome["result"].as_str().unwrap().starts_with("done"),
        "{outcome}"
    );
    // Only that node: the healthy ones are left alone.
    assert_eq!(
        report["plan"]["actions"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    // The rule matches by index, which the replacement takes over: lift it so the new worker's
    // agent is online (the lost one's comes back too, and it is drained and terminated).
    let (code, _) = stack.request("DELETE", "/_sim/faults", None, &[]).await;
    assert!(code < 300);

    // THEN a new worker 1 joins and the record is ACTIVE again
    let healed = stack
        .wait_record(&id, "the replacement", TIMEOUT, |r| {
            r["status"] == "ACTIVE"
                && r["updates"].as_array().is_some_and(|u| {
                    u.iter()
                        .any(|u| u["kind"] == "replace-node" && u["status"] == "Successful")
                })
        })
        .await;
    let (successor, _) = node_of(&healed, "worker", 1);
    assert_ne!(successor, sick);
    assert!(
        healed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{healed}"
    );
    assert!(
        !is_live(&stack, &sick).await,
        "the lost worker is terminated"
    );
    assert!(
        stack
            .has_event(&id, "reconcile", "SSM agent ConnectionLost")
            .await,
        "{:?}",
        stack.events(&id).await
    );
    // A run over the healed cluster plans nothing.
    let after = reconcile(&stack, false).await;
    assert_eq!(after["plan"]["actions"], json!([]), "{after}");
    stack.assert_calls_allowed_by_template().await;
}

// ---- housekeeping: orphan groups and parameters, drifted rules, a create stopped by hand ----

/// The outcomes of one kind of action in a report.
fn outcomes_of(report: &Value, action: &str) -> Vec<Value> {
    report["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["action"] == action)
        .cloned()
        .collect()
}

/// Whether the security group exists (moto answers `InvalidGroup.NotFound` once it is deleted).
async fn group_exists(stack: &Stack, group_id: &str) -> bool {
    stack
        .ec2()
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .values(group_id)
                .build(),
        )
        .send()
        .await
        .expect("describe groups")
        .security_groups()
        .iter()
        .any(|g| g.group_id() == Some(group_id))
}

/// Whether the parameter exists (its metadata only).
async fn parameter_exists(stack: &Stack, name: &str) -> bool {
    let out = stack
        .ssm()
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .values(name)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("describe parameters");
    out.parameters().iter().any(|p| p.name() == Some(name))
}

/// The group's ingress as comparable lines (`tcp 22-22 0.0.0.0/0`, `udp 4789-4789 sg-…`).
async fn ingress_lines(stack: &Stack, group_id: &str) -> Vec<String> {
    let out = stack
        .ec2()
        .describe_security_groups()
        .group_ids(group_id)
        .send()
        .await
        .expect("describe group");
    let mut lines = Vec::new();
    for p in out.security_groups()[0].ip_permissions() {
        let head = format!(
            "{} {}-{}",
            p.ip_protocol().unwrap_or_default(),
            p.from_port().unwrap_or_default(),
            p.to_port().unwrap_or_default()
        );
        for r in p.ip_ranges() {
            lines.push(format!("{head} {}", r.cidr_ip().unwrap_or_default()));
        }
        for g in p.user_id_group_pairs() {
            lines.push(format!("{head} {}", g.group_id().unwrap_or_default()));
        }
    }
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orphan_group_and_parameter_are_removed_after_their_grace_and_a_live_clusters_kept() {
    let stack = start_with_orphan_grace().await;
    let record = create(&stack, "tidy", 1, 1).await;
    let id = record["id"].as_str().unwrap().to_string();
    let live_before = stack.leftovers(&id).await;
    assert_eq!(
        live_before.1.len(),
        1,
        "the live cluster's group: {live_before:?}"
    );
    assert!(
        !live_before.2.is_empty(),
        "the live cluster's parameters: {live_before:?}"
    );

    // GIVEN a group and a parameter with the project's tag and prefix, and no record
    let orphan_id = "c-00000000000000aa";
    let vpc = stack
        .ec2()
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("isDefault")
                .values("true")
                .build(),
        )
        .send()
        .await
        .expect("default vpc")
        .vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let created_at = mecplane::clock::now_rfc3339();
    let group = |name: String, tags: Vec<(&'static str, String)>| {
        let tags: Vec<aws_sdk_ec2::types::Tag> = tags
            .iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(v).build())
            .collect();
        let request = stack
            .ec2()
            .create_security_group()
            .group_name(name)
            .description("made out of band")
            .vpc_id(&vpc)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                    .set_tags(Some(tags))
                    .build(),
            );
        async move {
            let out = request.send().await.expect("create a group");
            out.group_id().unwrap().to_string()
        }
    };
    let cluster_tags = vec![
        ("mecplane:cluster", orphan_id.to_string()),
        ("mecplane:created-at", created_at.clone()),
    ];
    let mut ours = cluster_tags.clone();
    ours.push(("mecplane:deployment", "mecplane".to_string()));
    let orphan_group = group(format!("mecplane-{orphan_id}"), ours).await;
    // … and a look-alike someone else made: the cluster tags, but not the deployment's.
    let look_alike = group(format!("not-ours-{orphan_id}"), cluster_tags).await;
    let orphan_parameter = format!("/mecplane/clusters/{orphan_id}/join-token");
    stack
        .ssm()
        .put_parameter()
        .name(&orphan_parameter)
        .value("a-token-nobody-owns")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put the orphan parameter");
    let orphaned_at = std::time::Instant::now();

    // WHEN a reconcile runs within the grace
    let early = reconcile(&stack, false).await;

    // THEN nothing is removed, and the live cluster's group has no drift
    assert_eq!(early["plan"]["actions"], json!([]), "{early}");
    assert!(group_exists(&stack, &orphan_group).await);
    assert!(parameter_exists(&stack, &orphan_parameter).await);

    // WHEN one runs after the grace
    let wait = Duration::from_secs(ORPHAN_GRACE_SECONDS + 2).saturating_sub(orphaned_at.elapsed());
    tokio::time::sleep(wait).await;
    let report = reconcile(&stack, false).await;

    // THEN both go, and nothing of the live cluster
    let groups = outcomes_of(&report, "delete-orphan-group");
    assert_eq!(groups.len(), 1, "{report}");
    assert_eq!(groups[0]["group_id"], orphan_group.as_str());
    assert!(
        groups[0]["result"].as_str().unwrap().starts_with("done"),
        "{report}"
    );
    let params = outcomes_of(&report, "delete-orphan-parameters");
    assert_eq!(params.len(), 1, "{report}");
    assert_eq!(params[0]["names"], json!([orphan_parameter]));
    assert!(
        params[0]["result"].as_str().unwrap().starts_with("done"),
        "{report}"
    );
    assert!(!group_exists(&stack, &orphan_group).await);
    assert!(!parameter_exists(&stack, &orphan_parameter).await);
    assert!(
        group_exists(&stack, &look_alike).await,
        "not ours: never touched"
    );
    assert!(!report.to_string().contains(&look_alike), "{report}");
    assert_eq!(
        stack.leftovers(&id).await,
        live_before,
        "the live cluster untouched"
    );
    assert_eq!(stack.record(&id).await["status"], "ACTIVE");

    // AND a later run finds nothing more to do
    let again = reconcile(&stack, false).await;
    assert_eq!(again["plan"]["actions"], json!([]), "{again}");
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drifted_group_gets_exactly_its_desired_rules_back() {
    let stack = Stack::start_with(300, &[], &stack::RECONCILE_OFF).await;
    let record = create(&stack, "drift", 1, 1).await;
    let id = record["id"].as_str().unwrap().to_string();
    let group = record["security_group_id"].as_str().unwrap().to_string();
    let desired = ingress_lines(&stack, &group).await;
    assert!(
        desired.contains(&"tcp 16443-16443 203.0.113.0/24".to_string()),
        "{desired:?}"
    );

    // GIVEN the API rule revoked and SSH opened to the world, out of band
    let range = |cidr: &str| aws_sdk_ec2::types::IpRange::builder().cidr_ip(cidr).build();
    stack
        .ec2()
        .revoke_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(16443)
                .to_port(16443)
                .ip_ranges(range("203.0.113.0/24"))
                .build(),
        )
        .send()
        .await
        .expect("revoke");
    stack
        .ec2()
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(range("0.0.0.0/0"))
                .build(),
        )
        .send()
        .await
        .expect("authorize");
    assert_ne!(ingress_lines(&stack, &group).await, desired);

    // WHEN a reconcile runs
    let report = reconcile(&stack, false).await;

    // THEN exactly the desired rules are back, said on the record
    let restored = outcomes_of(&report, "restore-group-rules");
    assert_eq!(restored.len(), 1, "{report}");
    assert!(
        restored[0]["result"].as_str().unwrap().starts_with("done"),
        "{report}"
    );
    assert_eq!(
        restored[0]["authorize"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(restored[0]["authorize"][0]["from_port"], 16443);
    assert_eq!(
        restored[0]["revoke"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(restored[0]["revoke"][0]["from_port"], 22);
    assert_eq!(ingress_lines(&stack, &group).await, desired);
    assert!(
        stack
            .has_event(&id, "reconcile", "tcp 22 from 0.0.0.0/0")
            .await,
        "{:?}",
        stack.events(&id).await
    );

    // AND the next run sees no drift
    let again = reconcile(&stack, false).await;
    assert_eq!(again["plan"]["actions"], json!([]), "{again}");
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_stopped_from_the_console_is_failed_and_torn_down_after_the_grace() {
    // Agents that take a minute to come online keep the create waiting on its control plane.
    let stack = Stack::start_with(
        60_000,
        &[("MECPLANE_RECONCILE_GRACE_SECONDS", "5")],
        &stack::RECONCILE_OFF,
    )
    .await;

    // GIVEN its execution stopped from the console, an instance and a group already made
    let (id, _) = stack.create_stopped_while_awaiting_nodes("stopped").await;
    let (instances, groups, _) = stack.leftovers(&id).await;
    assert_eq!((instances.len(), groups.len()), (1, 1));
    assert_eq!(stack.record(&id).await["status"], "CREATING");

    // WHEN a reconcile runs once the record has sat still for the grace
    tokio::time::sleep(Duration::from_secs(6)).await;
    let report = reconcile(&stack, false).await;

    // THEN the record is FAILED with what happened, and the teardown removes everything
    let failed = outcomes_of(&report, "fail-stuck-create");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(
        failed[0]["result"], "done: FAILED, teardown started",
        "{report}"
    );
    let events = stack.events(&id).await;
    assert!(
        events.iter().any(|e| e["phase"] == "failed"
            && e["detail"].as_str().unwrap_or_default().contains("ABORTED")),
        "{events:?}"
    );
    // (the teardown leaves the record FAILED, as a create that failed by itself ends)
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stack.leftovers(&id).await != (vec![], vec![], vec![]) {
        assert!(std::time::Instant::now() < deadline, "{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // (wait_record stops at FAILED: poll the stage instead)
    let teardown = loop {
        let record = stack.record(&id).await;
        if record["stage"] == "finish-delete" || record["status"] != "FAILED" {
            break record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{record}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(teardown["status"], "FAILED", "{teardown}");
    assert_eq!(
        teardown["failure"]["error"], "CreateInterrupted",
        "{teardown}"
    );
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));

    // AND a later run has nothing to do for it
    let again = reconcile(&stack, false).await;
    assert_eq!(again["plan"]["actions"], json!([]), "{again}");
    stack.assert_calls_allowed_by_template().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orphan_load_balancer_is_removed_with_its_listener_and_target_group() {
    let stack = start_with_orphan_grace().await;
    // GIVEN a 1+0 cluster behind a network load balancer, over a standard-zone subnet
    let (mut spec, _) = stack.spec_across_zones("lb-orphan", 1, 0, 1).await;
    spec["api_endpoint"] = json!("nlb");
    let (code, created) = stack.api("POST", "/clusters", Some(&spec)).await;
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    stack
        .wait_record(&id, "ACTIVE", TIMEOUT, |r| {
            assert_ne!(r["status"], "FAILED", "{r}");
            r["status"] == "ACTIVE"
        })
        .await;
    assert_eq!(
        stack.balancers_left(&id).await.len(),
        3,
        "balancer, listener, group"
    );

    // AND its record let go of it without its teardown (marked DELETED by hand)
    let store =
        mecplane::aws::dynamodb::Dynamo::new(&stack.sdk, stack.env["MECPLANE_TABLE"].clone());
    let mut record = mecplane::ports::ClusterStore::get(&store, &id)
        .await
        .unwrap()
        .unwrap();
    record.status = mecplane::record::Status::Deleted;
    mecplane::ports::ClusterStore::update(&store, &record)
        .await
        .expect("record marked DELETED");

    // WHEN a reconcile runs past the grace (by the balancer's CreatedTime)
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&stack.sdk);
    let name = mecplane::resources::Deployment::default().balancer_name(&id);
    let created_at = elb
        .describe_load_balancers()
        .names(&name)
        .send()
        .await
        .expect("describe the balancer")
        .load_balancers()[0]
        .created_time()
        .expect("CreatedTime")
        .secs();
    let past = created_at + ORPHAN_GRACE_SECONDS as i64 + 2 - mecplane::clock::now_epoch();
    tokio::time::sleep(Duration::from_secs(past.max(0) as u64)).await;
    let dry = reconcile(&stack, true).await;
    let planned: Vec<&Value> = dry["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delete-orphan-balancer")
        .collect();
    assert_eq!(
        planned,
        [&json!({
            "action": "delete-orphan-balancer",
            "region": "us-east-1",
            "cluster_id": id,
            "parts": [format!("load balancer {name}"), format!("target group {name}")],
        })],
        "{dry}"
    );
    assert_eq!(
        stack.balancers_left(&id).await.len(),
        3,
        "a dry run removes nothing"
    );
    let report = reconcile(&stack, false).await;

    // THEN the report names it, and nothing of it is left
    let removed = outcomes_of(&report, "delete-orphan-balancer");
    assert_eq!(removed.len(), 1, "{report}");
    let result = removed[0]["result"].as_str().unwrap();
    assert!(
        result.starts_with("done: deleted load balancer")
            && result.contains(&format!("target group {name}")),
        "{report}"
    );
    assert_eq!(stack.balancers_left(&id).await, Vec::<String>::new());
    let events = mecplane::ports::ClusterStore::events(&store, &id)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.stage == "reconcile" && e.detail.contains("orphan load balancer")),
        "{events:?}"
    );

    // AND a later run finds no balancer to remove
    let again = reconcile(&stack, false).await;
    assert!(
        outcomes_of(&again, "delete-orphan-balancer").is_empty(),
        "{again}"
    );
    stack.assert_calls_allowed_by_template().await;
}
