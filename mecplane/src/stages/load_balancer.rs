//! Stage `load-balancer`: the stable API endpoint of a cluster with `api_endpoint: "nlb"`. It
//! ensures — found by name on a re-run, so a retry makes nothing twice — a TCP 16443 target group
//! of instances (health checked over TCP 16443) in the control planes' VPC, an internet-facing
//! network load balancer over the control planes' subnets, in the cluster's security group, and a
//! TCP 16443 listener forwarding to the group, every part tagged with the cluster tags. Then it
//! makes the group's targets exactly the live control planes: the missing ones registered, the
//! gone ones deregistered.
//!
//! The create runs it after the control planes are launched (their instance ids) and before the
//! bootstrap, whose `EXTRA_SANS` carry the balancer's DNS name ([`super::nodes::api_sans`]); an
//! update that changes the control planes runs it again. A cluster with `api_endpoint: "node"`
//! passes through untouched.
//!
//! The security group is the load balancer's too, so "nothing open but what is named" holds for
//! it as for the nodes: 16443 from the CIDRs the user named, and its health checks reach the
//! control planes through the group's own rule for 16443 between its members — no CIDR is opened
//! for them.

use super::{nodes, records, Ports};
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{BalancerRequest, ClusterStore, Instances, LoadBalancers, SecurityGroups};
use crate::record::{ApiBalancer, Phase, Role};
use crate::resources::{self, Deployment};
use crate::spec::{ApiEndpoint, ClusterSpec};
use crate::state::CreateState;

/// The stage's name in events and the record.
pub const STAGE: &str = "load-balancer";

/// What the cluster's load balancer is made of (pure): named for the cluster, over `subnet_ids`
/// (sorted, each once), in the cluster's security group, on 16443, tagged like its nodes.
pub fn request(
    deployment: &Deployment,
    cluster_id: &str,
    spec: &ClusterSpec,
    subnet_ids: &[String],
    vpc_id: &str,
    security_group_id: &str,
) -> BalancerRequest {
    let name = deployment.balancer_name(cluster_id);
    let mut subnets = subnet_ids.to_vec();
    subnets.sort();
    subnets.dedup();
    let mut tags = vec![
        (
            resources::TAG_DEPLOYMENT.to_string(),
            deployment.id().to_string(),
        ),
        (resources::TAG_CLUSTER.to_string(), cluster_id.to_string()),
        (resources::TAG_CLUSTER_NAME.to_string(), spec.name.clone()),
        (
            resources::TAG_NAME.to_string(),
            format!("{}-api", spec.name),
        ),
    ];
    let own: Vec<String> = tags.iter().map(|(k, _)| k.clone()).collect();
    tags.extend(
        spec.tags
            .iter()
            .filter(|(k, _)| !own.contains(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    BalancerRequest {
        name,
        subnet_ids: subnets,
        security_group_ids: vec![security_group_id.to_string()],
        vpc_id: vpc_id.to_string(),
        port: microk8s::PORT_API,
        tags,
    }
}

/// Which of `live` to register and which of `registered` to deregister (pure).
pub fn target_changes(live: &[String], registered: &[String]) -> (Vec<String>, Vec<String>) {
    let add = live
        .iter()
        .filter(|id| !registered.contains(id))
        .cloned()
        .collect();
    let remove = registered
        .iter()
        .filter(|id| !live.contains(id))
        .cloned()
        .collect();
    (add, remove)
}

/// Ensures the load balancer, its listener and target group, and the targets; answers them.
pub(crate) async fn ensure<E, L>(
    ec2: &E,
    deployment: &Deployment,
    balancers: &L,
    state: &CreateState,
    security_group_id: &str,
) -> Result<(ApiBalancer, usize, usize), StageError>
where
    E: Instances + SecurityGroups,
    L: LoadBalancers,
{
    let planes = nodes::live(ec2, &state.cluster_id, Role::ControlPlane).await?;
    if planes.is_empty() {
        return Err(StageError::InstanceTerminated(
            "the cluster has no live control plane to put behind its load balancer".into(),
        ));
    }
    // The control planes' own subnets: those the spec named, or the default subnet the launch
    // chose when it named none.
    let mut subnet_ids: Vec<String> = planes.iter().filter_map(|i| i.subnet_id.clone()).collect();
    subnet_ids.sort();
    subnet_ids.dedup();
    let subnets = ec2.subnets(&subnet_ids).await?;
    let vpc_id = subnets.first().map(|s| s.vpc_id.clone()).ok_or_else(|| {
        StageError::Cloud(format!(
            "none of the control planes' subnets ({}) was found",
            subnet_ids.join(", ")
        ))
    })?;
    let wanted = request(
        deployment,
        &state.cluster_id,
        &state.spec,
        &subnet_ids,
        &vpc_id,
        security_group_id,
    );
    let target_group_arn = match balancers.find_target_group(&wanted.name).await? {
        Some(arn) => arn,
        None => balancers.create_target_group(&wanted).await?,
    };
    let balancer = match balancers.find_balancer(&wanted.name).await? {
        Some(found) => found,
        None => balancers.create_balancer(&wanted).await?,
    };
    let listener_arn = match balancers
        .listeners(&balancer.arn)
        .await?
        .into_iter()
        .find(|(_, port, _)| *port == wanted.port)
    {
        Some((arn, _, _)) => arn,
        None => {
            balancers
                .create_listener(&balancer.arn, &target_group_arn, &wanted)
                .await?
        }
    };
    let live: Vec<String> = planes.iter().map(|i| i.instance_id.clone()).collect();
    let registered = balancers.targets(&target_group_arn).await?;
    let (add, remove) = target_changes(&live, &registered);
    if !add.is_empty() {
        balancers.register(&target_group_arn, &add).await?;
    }
    if !remove.is_empty() {
        balancers.deregister(&target_group_arn, &remove).await?;
    }
    Ok((
        ApiBalancer {
            dns_name: balancer.dns_name,
            load_balancer_arn: balancer.arn,
            listener_arn,
            target_group_arn,
        },
        add.len(),
        remove.len(),
    ))
}

/// Runs the stage.
pub async fn run<E, L, R, P, S>(
    ports: &Ports<'_, E, R, P, S>,
    balancers: &L,
    state: CreateState,
) -> Result<CreateState, StageError>
where
    E: Instances + SecurityGroups,
    L: LoadBalancers,
    S: ClusterStore,
{
    if state.spec.api_endpoint != ApiEndpoint::Nlb {
        return Ok(state);
    }
    let store = ports.store;
    let record = records::enter(store, &state.cluster_id, STAGE).await?;
    let group = state
        .security_group_id
        .clone()
        .or(record.security_group_id)
        .ok_or_else(|| StageError::InvalidState("the cluster has no security group yet".into()))?;
    let (balancer, added, removed) = ensure(
        ports.ec2,
        &ports.config.deployment,
        balancers,
        &state,
        &group,
    )
    .await?;
    records::modify(store, &state.cluster_id, |r| {
        let changed = r.balancer.as_ref() != Some(&balancer);
        r.balancer = Some(balancer.clone());
        Ok(changed)
    })
    .await?;
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!(
            "network load balancer {} on TCP {}: {added} control plane(s) registered, {removed} deregistered",
            balancer.dns_name,
            microk8s::PORT_API
        ),
    )
    .await?;
    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fakes::{FakeBalancers, FakeCloud, FakeStore};
    use crate::ports::InstanceState;
    use crate::stages::{
        await_nodes, await_terminated, bootstrap, delete_load_balancer, delete_parameters,
        delete_security_group, fixtures, join_nodes, launch_nodes, resolve_ami, security_group,
        store_kubeconfig, terminate_nodes,
    };

    /// A registered HA cluster over three subnets with `api_endpoint: "nlb"`, its group made and
    /// its control planes online.
    pub(crate) async fn online_nlb() -> (FakeCloud, FakeStore, CreateState) {
        let (cloud, store, mut state) = fixtures::registered(3, 0).await;
        for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c"]
            .iter()
            .enumerate()
        {
            cloud.add_subnet(&format!("subnet-0000000{i}"), "vpc-1", zone);
        }
        state.spec.subnet_ids = (0..3).map(|i| format!("subnet-0000000{i}")).collect();
        state.spec.subnet_id = state.spec.subnet_ids.first().cloned();
        state.spec.api_endpoint = ApiEndpoint::Nlb;
        let config = fixtures::config();
        cloud.put_public(
            &resolve_ami::ami_parameter(&config.ami_parameter_prefix, &state.spec),
            "ami-0abc",
        );
        let ports = fixtures::ports(&cloud, &store);
        let state = resolve_ami::run(&ports, state).await.unwrap();
        let mut state = security_group::run(&ports, state).await.unwrap();
        state.target = Some(Role::ControlPlane);
        let state = launch_nodes::run(&ports, state).await.unwrap();
        let state = await_nodes::run(&ports, state).await.unwrap();
        assert!(state.poll.done);
        (cloud, store, state)
    }

    /// [`online_nlb`] with the stage run once: its load balancer, listener and group made.
    pub(crate) async fn balanced() -> (FakeCloud, FakeStore, FakeBalancers, CreateState) {
        let (cloud, store, state) = online_nlb().await;
        let balancers = FakeBalancers::default();
        run(&fixtures::ports(&cloud, &store), &balancers, state.clone())
            .await
            .unwrap();
        (cloud, store, balancers, state)
    }

    #[tokio::test]
    async fn makes_one_balancer_listener_and_group_with_every_control_plane_run_twice() {
        let (cloud, store, balancers, state) = balanced().await;
        let ports = fixtures::ports(&cloud, &store);
        run(&ports, &balancers, state.clone()).await.unwrap();
        assert_eq!(balancers.creates(), 3, "one balancer, listener and group");
        let lb = &balancers.balancers()[0];
        assert_eq!(
            lb.name,
            Deployment::default().balancer_name(&state.cluster_id)
        );
        assert!(lb
            .tags
            .contains(&(resources::TAG_DEPLOYMENT.into(), "mecplane".into())));
        assert_eq!(lb.subnet_ids.len(), 3, "over the three subnets");
        assert_eq!(
            lb.security_group_ids,
            vec![state.security_group_id.clone().unwrap()]
        );
        assert!(lb
            .tags
            .contains(&(resources::TAG_CLUSTER.into(), state.cluster_id.clone())));
        assert!(lb.tags.contains(&("team".into(), "edge".into())));
        let group = &balancers.target_groups()[0];
        assert_eq!((group.port, group.vpc_id.as_str()), (16443, "vpc-1"));
        let mut planes: Vec<String> = cloud
            .live_instances()
            .iter()
            .map(|i| i.instance.instance_id.clone())
            .collect();
        planes.sort();
        let mut targets = group.targets.clone();
        targets.sort();
        assert_eq!(targets, planes);
        let listener = &balancers.listeners()[0];
        assert_eq!(listener.port, 16443);
        assert_eq!(listener.target_group_arn, group.arn);
        let record = store.records()[0].clone();
        let recorded = record.balancer.expect("recorded");
        assert_eq!(recorded.dns_name, lb.dns_name);
        assert_eq!(recorded.listener_arn, listener.arn);
    }

    #[tokio::test]
    async fn a_gone_control_plane_is_deregistered_and_a_new_one_registered() {
        let (cloud, store, balancers, state) = balanced().await;
        let ports = fixtures::ports(&cloud, &store);
        let gone = cloud.live_instances()[1].instance.instance_id.clone();
        cloud.set_state(&gone, InstanceState::Terminated);
        run(&ports, &balancers, state.clone()).await.unwrap();
        let targets = balancers.target_groups()[0].targets.clone();
        assert_eq!(targets.len(), 2);
        assert!(!targets.contains(&gone));
        assert_eq!(balancers.creates(), 3, "nothing made again");
    }

    #[test]
    fn nlb_control_planes_must_be_in_availability_zones() {
        use crate::placement::check_zones;
        use crate::ports::Subnet;
        let mut spec = fixtures::spec(3, 2);
        spec.api_endpoint = ApiEndpoint::Nlb;
        spec.subnet_ids = vec!["subnet-0000000a".into(), "subnet-0000000b".into()];
        spec.worker_subnet_ids = vec!["subnet-0000000c".into()];
        let subnet = |id: &str, zone: &str| Subnet {
            subnet_id: id.into(),
            vpc_id: "vpc-1".into(),
            zone: zone.into(),
        };
        let zones = [
            fixtures::zone("us-east-1a", "availability-zone", true),
            fixtures::zone("us-east-1-bos-1a", "local-zone", true),
        ];
        let offered = vec!["us-east-1a".to_string(), "us-east-1-bos-1a".to_string()];
        // Workers at the edge are fine: the balancer spans the control planes' subnets.
        let edge_workers = [
            subnet("subnet-0000000a", "us-east-1a"),
            subnet("subnet-0000000b", "us-east-1a"),
            subnet("subnet-0000000c", "us-east-1-bos-1a"),
        ];
        assert!(check_zones(&spec, &edge_workers, &zones, &offered).is_ok());
        // A control plane in a Local Zone is refused, naming api_endpoint and the subnet.
        let edge_plane = [
            subnet("subnet-0000000a", "us-east-1a"),
            subnet("subnet-0000000b", "us-east-1-bos-1a"),
            subnet("subnet-0000000c", "us-east-1a"),
        ];
        let refused = check_zones(&spec, &edge_plane, &zones, &offered).unwrap_err();
        assert_eq!(refused.error.field, "api_endpoint");
        assert!(
            refused
                .error
                .message
                .contains("subnet-0000000b (subnet_ids[1])"),
            "{}",
            refused.error.message
        );
        // The same placement with the node endpoint is fine.
        spec.api_endpoint = ApiEndpoint::Node;
        assert!(check_zones(&spec, &edge_plane, &zones, &offered).is_ok());
    }

    #[tokio::test]
    async fn a_node_endpoint_makes_nothing() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let balancers = FakeBalancers::default();
        let out = run(&fixtures::ports(&cloud, &store), &balancers, state.clone())
            .await
            .unwrap();
        assert_eq!(out, state);
        assert_eq!(balancers.creates(), 0);
        assert!(store.records()[0].balancer.is_none());
    }

    #[tokio::test]
    async fn every_control_plane_certificate_and_the_kubeconfig_name_the_balancer() {
        let (cloud, store, mut state) = online_nlb().await;
        state.spec.extra_sans = vec!["api.edge.example".into()];
        let balancers = FakeBalancers::default();
        let ports = fixtures::ports(&cloud, &store);
        let state = run(&ports, &balancers, state).await.unwrap();
        let dns = balancers.balancers()[0].dns_name.clone();
        let state =
            fixtures::poll_until_done(state, |s| async { bootstrap::run(&ports, s).await }).await;
        let boot = &cloud.commands_of("bootstrap")[0];
        let sans = boot
            .text
            .lines()
            .find(|l| l.starts_with("export EXTRA_SANS="))
            .expect("EXTRA_SANS")
            .to_string();
        assert!(
            sans.contains(&dns) && sans.contains("api.edge.example"),
            "{sans}"
        );
        let mut state = state;
        state.poll = Default::default();
        let state =
            fixtures::poll_until_done(state, |s| async { join_nodes::run(&ports, s).await }).await;
        let joins = cloud.commands_of("join");
        assert_eq!(joins.len(), 2);
        for join in &joins {
            assert!(
                join.text.contains(&dns) && join.text.contains("api.edge.example"),
                "a joining control plane's certificate names the balancer too: {}",
                join.text
            );
        }
        let mut state = state;
        state.poll = Default::default();
        let state =
            fixtures::poll_until_done(state, |s| async { store_kubeconfig::run(&ports, s).await })
                .await;
        let (kubeconfig, _) =
            cloud.parameters()[state.kubeconfig_parameter.as_deref().unwrap()].clone();
        assert!(
            kubeconfig.contains(&format!("server: https://{dns}:16443")),
            "{kubeconfig}"
        );
        assert_eq!(
            store.records()[0].endpoint.as_deref(),
            Some(format!("https://{dns}:16443").as_str())
        );
    }

    #[tokio::test]
    async fn a_create_failing_after_the_balancer_exists_leaves_nothing_after_its_teardown() {
        let (cloud, store, balancers, state) = balanced().await;
        let ports = fixtures::ports(&cloud, &store);
        // The bootstrap fails on the node: the create's Catch tears down what was made, the
        // load balancer before the security group it is in.
        fixtures::fail_script(&cloud, "bootstrap", "bootstrap: snap install failed");
        let sent = bootstrap::run(&ports, state).await;
        let failed = match sent {
            Ok(s) => bootstrap::run(&ports, s).await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(failed.name(), "CommandFailed");
        let t: crate::state::TeardownState = serde_json::from_value(serde_json::json!({
            "cluster_id": store.records()[0].id,
            "reason": "create-failed",
        }))
        .unwrap();
        for _ in 0..2 {
            let t = terminate_nodes::run(&ports, t.clone()).await.unwrap();
            let t = await_terminated::run(&ports, t).await.unwrap();
            let t = delete_load_balancer::run(&ports, &balancers, t)
                .await
                .unwrap();
            let t = delete_security_group::run(&ports, t).await.unwrap();
            delete_parameters::run(&ports, t).await.unwrap();
        }
        assert!(cloud.live_instances().is_empty());
        assert!(cloud.groups().is_empty());
        assert!(balancers.balancers().is_empty());
        assert!(balancers.listeners().is_empty());
        assert!(balancers.target_groups().is_empty());
    }

    #[tokio::test]
    async fn a_failed_listener_leaves_what_a_retry_adopts() {
        let (cloud, store, state) = online_nlb().await;
        let balancers = FakeBalancers::default();
        let ports = fixtures::ports(&cloud, &store);
        balancers.fail_next(
            "create_listener",
            crate::error::CloudError::Transient("Throttling".into()),
        );
        let err = run(&ports, &balancers, state.clone()).await.unwrap_err();
        assert_eq!(err.name(), "Transient");
        assert!(store.records()[0].balancer.is_none());
        run(&ports, &balancers, state).await.unwrap();
        assert_eq!(balancers.balancers().len(), 1);
        assert_eq!(balancers.target_groups().len(), 1);
        assert_eq!(balancers.listeners().len(), 1);
    }
}
