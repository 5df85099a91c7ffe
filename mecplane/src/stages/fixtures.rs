//! Builders for stage tests: a cluster registered, ready to launch, launched, online — each one
//! step further along, made by running the real stages against the fakes.

use std::collections::BTreeMap;

use crate::config::StageConfig;
use crate::error::StageError;
use crate::fakes::{FakeCloud, FakeStore};
use crate::ports::{ClusterStore, Zone};
use crate::record::{ClusterRecord, Role, Status};
use crate::spec::{ClusterRequest, ClusterSpec, Policy};
use crate::state::{CreateState, Timing};

pub(crate) use crate::fakes::default_outcome;

use super::{await_nodes, launch_nodes, resolve_ami, security_group, Ports};

pub(crate) fn spec(control_planes: u32, workers: u32) -> ClusterSpec {
    ClusterRequest {
        name: Some("edge".into()),
        control_planes: Some(control_planes),
        workers: Some(workers),
        tags: Some(BTreeMap::from([("team".to_string(), "edge".to_string())])),
        ..Default::default()
    }
    .validate(&Policy::default())
    .expect("valid spec")
}

pub(crate) fn config() -> StageConfig {
    StageConfig {
        table: "t".into(),
        deployment: crate::resources::Deployment::default(),
        ami_parameter_prefix: crate::config::DEFAULT_AMI_PARAMETER_PREFIX.into(),
        secrets_key: None,
        ami_owners: Vec::new(),
        policy: Policy::default(),
    }
}

static CONFIG: std::sync::LazyLock<StageConfig> = std::sync::LazyLock::new(config);

/// The ports of a stage that only touches records.
pub(crate) fn records(store: &FakeStore) -> Ports<'_, (), (), (), FakeStore> {
    Ports {
        ec2: &(),
        ssm: &(),
        secrets: &(),
        store,
        config: &CONFIG,
    }
}

/// The fakes lent to a stage: one fake cloud for EC2, SSM and the secrets, with [`config`].
pub(crate) fn ports<'a>(
    cloud: &'a FakeCloud,
    store: &'a FakeStore,
) -> Ports<'a, FakeCloud, FakeCloud, FakeCloud, FakeStore> {
    Ports {
        ec2: cloud,
        ssm: cloud,
        secrets: cloud,
        store,
        config: &CONFIG,
    }
}

pub(crate) async fn registered(
    control_planes: u32,
    workers: u32,
) -> (FakeCloud, FakeStore, CreateState) {
    let store = FakeStore::default();
    let spec = spec(control_planes, workers);
    let id = "c-00000000000000aa".to_string();
    assert!(store
        .create(&ClusterRecord::new(
            id.clone(),
            spec.clone(),
            Some("arn:e".into())
        ))
        .await
        .unwrap());
    (
        FakeCloud::new(),
        store,
        CreateState::new(id, spec, Timing::default()),
    )
}

pub(crate) async fn ready_to_launch(
    control_planes: u32,
    workers: u32,
) -> (FakeCloud, FakeStore, CreateState) {
    let (cloud, store, state) = registered(control_planes, workers).await;
    let config = config();
    cloud.put_public(
        &resolve_ami::ami_parameter(&config.ami_parameter_prefix, &state.spec),
        "ami-0abc",
    );
    let state = resolve_ami::run(&ports(&cloud, &store), state)
        .await
        .unwrap();
    let state = security_group::run(&ports(&cloud, &store), state)
        .await
        .unwrap();
    (cloud, store, state)
}

pub(crate) async fn launched(
    control_planes: u32,
    workers: u32,
) -> (FakeCloud, FakeStore, CreateState) {
    let (cloud, store, mut state) = ready_to_launch(control_planes, workers).await;
    state.target = Some(Role::ControlPlane);
    let state = launch_nodes::run(&ports(&cloud, &store), state)
        .await
        .unwrap();
    (cloud, store, state)
}

pub(crate) async fn online(
    control_planes: u32,
    workers: u32,
) -> (FakeCloud, FakeStore, CreateState) {
    let (cloud, store, state) = launched(control_planes, workers).await;
    let state = await_nodes::run(&ports(&cloud, &store), state)
        .await
        .unwrap();
    assert!(state.poll.done);
    (cloud, store, state)
}

/// Launches `count` workers and waits for them (the spec is widened to match).
pub(crate) async fn add_workers(
    cloud: &FakeCloud,
    store: &FakeStore,
    state: &mut CreateState,
    count: u32,
) {
    state.spec.workers = count;
    let mut s = state.clone();
    s.target = Some(Role::Worker);
    let s = launch_nodes::run(&ports(cloud, store), s).await.unwrap();
    let s = await_nodes::run(&ports(cloud, store), s).await.unwrap();
    assert!(s.poll.done);
    *state = CreateState {
        target: state.target,
        ..s
    };
}

/// Makes every command running `script` fail with `stderr` (as a script says why it failed); the
/// others succeed as the fakes answer them.
pub(crate) fn fail_script(cloud: &FakeCloud, script: &'static str, stderr: &'static str) {
    cloud.respond_with(move |cmd, all| {
        if cmd.script == script {
            crate::ports::CommandStatus::Failed {
                status: "Failed".into(),
                exit_code: 1,
                stdout: String::new(),
                stderr: stderr.into(),
            }
        } else {
            crate::fakes::default_outcome(cmd, all)
        }
    });
}

/// A zone of us-east-1 as EC2 describes it: its group is its name without the final letter
/// (`us-east-1-bos-1a`: `us-east-1-bos-1`), a Wavelength zone's its name up to the carrier
/// (`us-east-1-wl1-bos-wlz-1`: `us-east-1-wl1`), and a zone other than a standard one has
/// `us-east-1a` as its parent.
pub(crate) fn zone(name: &str, zone_type: &str, usable: bool) -> Zone {
    use crate::placement::{STANDARD_ZONE, WAVELENGTH_ZONE};
    let group = if zone_type == WAVELENGTH_ZONE {
        name.split('-').take(4).collect::<Vec<_>>().join("-")
    } else {
        name.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .to_string()
    };
    Zone {
        name: name.into(),
        zone_type: zone_type.into(),
        usable,
        group,
        parent: (zone_type != STANDARD_ZONE).then(|| "us-east-1a".into()),
    }
}

/// Runs `f` twice, as a retried Lambda would, and answers the second run's output.
pub(crate) async fn twice<F, Fut, T>(f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StageError>>,
{
    let _ = f().await.expect("first run");
    f().await.expect("second run")
}

/// Polls `stage` until it says done (at most 30 polls, each run twice as a retried Lambda would).
pub(crate) async fn poll_until_done<F, Fut>(mut state: CreateState, stage: F) -> CreateState
where
    F: Fn(CreateState) -> Fut,
    Fut: std::future::Future<Output = Result<CreateState, StageError>>,
{
    for _ in 0..30 {
        let _ = stage(state.clone()).await.expect("poll");
        state = stage(state).await.expect("poll again");
        if state.poll.done {
            return state;
        }
    }
    panic!("stage never finished");
}

/// Polls `stage` until it fails (at most `polls` times) and answers the error.
pub(crate) async fn until_failure<F, Fut>(
    mut state: CreateState,
    polls: usize,
    stage: F,
) -> StageError
where
    F: Fn(CreateState) -> Fut,
    Fut: std::future::Future<Output = Result<CreateState, StageError>>,
{
    for _ in 0..polls {
        match stage(state.clone()).await {
            Ok(s) => state = s,
            Err(e) => return e,
        }
    }
    panic!("the stage did not fail within {polls} polls");
}

pub(crate) async fn set_status(store: &FakeStore, cluster_id: &str, status: Status) {
    let mut r = store.get(cluster_id).await.unwrap().unwrap();
    r.status = status;
    store.update(&r).await.unwrap();
}
