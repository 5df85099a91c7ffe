//! `make bench`'s reconcile figures: one reconcile over fleets of 100, 1,000 and 10,000 clusters
//! of 3 nodes (1 control plane + 2 workers; one cluster in a hundred with a terminated worker, one
//! in a hundred with a worker whose SSM agent was lost 10 minutes ago; every cluster due for its
//! sampled node check), on the in-memory fakes. For each size: the pure plan's time (best of 3), a
//! whole dry run's time (observe through the ports, then plan), the DescribeInstances calls the
//! run made (the fakes count them as EC2 pages them: 1,000 instances a call), the node-health
//! calls (DescribeInstanceStatus, 100 ids a call, and DescribeInstanceInformation, 50 ids a call),
//! the node checks planned (one read-only SSM command each, within the run's budget), the
//! replacements it planned, and the process's peak RSS. Prints one JSON object per size.
//!
//! `cargo run --release -p mecplane --no-default-features --features testing --example reconcile_scale`

use std::time::Instant;

use mecplane::api::{ApiConfig, ApiContext};
use mecplane::fakes::{FakeCloud, FakeExecutions, FakeStore};
use mecplane::ports::{ClusterStore, InstanceState, Instances};
use mecplane::reconcile::{
    self, plan, Action, Fleet, Observed, ReconcileEvent, RegionPorts, Settings,
};
use mecplane::record::{ClusterRecord, Node, NodeState, Role, Status};
use mecplane::spec::{ClusterRequest, Policy};
use mecplane::state::Timing;

/// The process's peak resident set, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn fleet(n: usize) -> (FakeStore, FakeCloud) {
    let (store, cloud) = (FakeStore::default(), FakeCloud::new());
    let spec = ClusterRequest {
        workers: Some(2),
        ..serde_json::from_value(serde_json::json!({"name": "edge"})).unwrap()
    }
    .validate(&Policy::default())
    .unwrap();
    for c in 0..n {
        let id = format!("c-{c:016x}");
        let mut record = ClusterRecord::new(id.clone(), spec.clone(), None);
        record.spec.name = format!("edge-{c}");
        record.status = Status::Active;
        // Long enough ago that its node check is due.
        record.created_at = "2020-01-01T00:00:00Z".into();
        for (role, index) in [
            (Role::ControlPlane, 0),
            (Role::Worker, 0),
            (Role::Worker, 1),
        ] {
            let instance_id = cloud.add_tagged(&id, role, index, 600);
            if c % 100 == 7 && role == Role::Worker && index == 1 {
                cloud.set_instance_state(&instance_id, InstanceState::Terminated);
            }
            if c % 100 == 13 && role == Role::Worker && index == 0 {
                let lost = mecplane::clock::now_epoch() - 600;
                cloud.set_offline_since(&instance_id, Some(lost));
            }
            record.nodes.push(Node {
                instance_id,
                role,
                index,
                private_ip: None,
                public_ip: None,
                state: NodeState::Ready,
                channel: None,
                zone: None,
                zone_type: None,
                carrier_ip: None,
                volume_type: None,
            });
        }
        store.create(&record).await.unwrap();
    }
    (store, cloud)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let settings = Settings {
        max_repairs_per_run: usize::MAX,
        ..Settings::default()
    };
    for n in [100usize, 1_000, 10_000] {
        let (store, cloud) = fleet(n).await;
        let ctx = ApiContext {
            store,
            executions: FakeExecutions::default(),
            parameters: FakeCloud::new(),
            config: ApiConfig {
                create_state_machine_arn: "arn:create".into(),
                delete_state_machine_arn: "arn:delete".into(),
                update_state_machine_arn: "arn:update".into(),
                policy: Policy::default(),
                timing: Timing::default(),
            },
        };
        let observe_cloud = cloud.clone();
        let ports_in = move |_: &str| RegionPorts {
            ec2: Box::new(observe_cloud.clone()),
            ssm: Box::new(observe_cloud.clone()),
            balancers: Box::new(mecplane::fakes::FakeBalancers::default()),
        };
        let fleet = Fleet {
            ports_in: &ports_in,
            allowed_regions: &["us-east-1".into()],
            settings: &settings,
        };
        let (before, health_before) = (cloud.describe_calls(), cloud.health_calls());
        let started = Instant::now();
        let event = ReconcileEvent {
            dry_run: true,
            ..ReconcileEvent::default()
        };
        let report = reconcile::run(&ctx, &fleet, &event).await.unwrap();
        let run_ms = started.elapsed().as_secs_f64() * 1e3;
        let describe_calls = cloud.describe_calls() - before;
        let health_calls = cloud.health_calls() - health_before;

        // The plan alone, on what the run observed.
        let mut records = Vec::new();
        let mut token = None;
        loop {
            let filter = mecplane::ports::ListFilter::default();
            let page = ctx
                .store
                .list(&filter, token.as_deref(), 1000)
                .await
                .unwrap();
            records.extend(page.records);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let instances = cloud.find_tagged("us-east-1").await.unwrap();
        let health = reconcile::health::observe(&ports_in, &records, &instances).await;
        let observed = Observed {
            now: mecplane::clock::now_epoch(),
            records,
            instances,
            health,
            executions: Default::default(),
            ..Observed::default()
        };
        let mut plan_ms = f64::MAX;
        let (mut planned, mut checks) = (0, 0);
        for _ in 0..3 {
            let t = Instant::now();
            let p = plan::plan(&observed, &settings, None);
            plan_ms = plan_ms.min(t.elapsed().as_secs_f64() * 1e3);
            planned = p
                .actions
                .iter()
                .filter(|a| matches!(a, Action::ReplaceNode { .. }))
                .count();
            checks = p
                .actions
                .iter()
                .filter(|a| matches!(a, Action::CheckNodes { .. }))
                .count();
        }
        let line = serde_json::json!({
            "clusters": n,
            "instances": report.instances,
            "plan_ms": (plan_ms * 100.0).round() / 100.0,
            "dry_run_ms": (run_ms * 10.0).round() / 10.0,
            "describe_instances_calls": describe_calls,
            "node_health_calls": health_calls,
            "node_checks_planned": checks,
            "replacements_planned": planned,
            "peak_rss_mib": (peak_rss_mib() * 10.0).round() / 10.0,
        });
        println!("{line}");
    }
}
