//! Stage `delete-load-balancer`: removes a cluster's API load balancer (`api_endpoint: "nlb"`),
//! found by its name: the listener first, then the load balancer, then the target group (which
//! AWS refuses to delete while a listener still forwards to it: `DependencyViolation`, retried by
//! the state machine). Runs before the security group is deleted (the load balancer is in it).
//! Whatever is already gone is skipped, so it is safe to run twice and on any cluster.

use super::{records, Ports};
use crate::error::StageError;
use crate::ports::{ClusterStore, LoadBalancers};
use crate::record::Phase;
use crate::resources::Deployment;
use crate::state::TeardownState;

/// The stage's name in events and the record.
pub const STAGE: &str = "delete-load-balancer";

/// Deletes the listener, load balancer and target group named for the cluster; answers what it
/// deleted, for the event. The reconcile removes an orphan's with it too.
pub(crate) async fn remove<L: LoadBalancers + ?Sized>(
    balancers: &L,
    deployment: &Deployment,
    cluster_id: &str,
) -> Result<Vec<String>, StageError> {
    let name = deployment.balancer_name(cluster_id);
    let mut deleted = Vec::new();
    if let Some(balancer) = balancers.find_balancer(&name).await? {
        for (listener, _, _) in balancers.listeners(&balancer.arn).await? {
            balancers.delete_listener(&listener).await?;
        }
        balancers.delete_balancer(&balancer.arn).await?;
        deleted.push(format!("load balancer {}", balancer.dns_name));
    }
    if let Some(group) = balancers.find_target_group(&name).await? {
        balancers.delete_target_group(&group).await?;
        deleted.push(format!("target group {name}"));
    }
    Ok(deleted)
}

/// Runs the stage.
pub async fn run<L, E, R, P, S>(
    ports: &Ports<'_, E, R, P, S>,
    balancers: &L,
    state: TeardownState,
) -> Result<TeardownState, StageError>
where
    L: LoadBalancers,
    S: ClusterStore,
{
    let store = ports.store;
    records::enter(store, &state.cluster_id, STAGE).await?;
    let deleted = remove(balancers, &ports.config.deployment, &state.cluster_id).await?;
    records::modify(store, &state.cluster_id, |r| {
        Ok(r.balancer.take().is_some())
    })
    .await?;
    if !deleted.is_empty() {
        records::note(
            store,
            &state.cluster_id,
            STAGE,
            Phase::Finished,
            format!("{} deleted", deleted.join(" and ")),
        )
        .await?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CloudError;
    use crate::fakes::FakeBalancers;
    use crate::stages::{fixtures, load_balancer};
    use crate::state::TeardownReason;

    fn teardown(cluster_id: &str) -> TeardownState {
        serde_json::from_value(serde_json::json!({
            "cluster_id": cluster_id,
            "reason": TeardownReason::CreateFailed,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn removes_listener_balancer_and_group_and_a_second_run_finds_nothing() {
        let (cloud, store, balancers, state) = load_balancer::tests::balanced().await;
        let ports = fixtures::ports(&cloud, &store);
        // The target group in use by the listener cannot go first.
        let group = balancers.target_groups()[0].arn.clone();
        assert!(matches!(
            balancers.delete_target_group(&group).await,
            Err(CloudError::DependencyViolation(_))
        ));
        let t = teardown(&state.cluster_id);
        run(&ports, &balancers, t.clone()).await.unwrap();
        run(&ports, &balancers, t).await.unwrap();
        assert!(balancers.balancers().is_empty());
        assert!(balancers.listeners().is_empty());
        assert!(balancers.target_groups().is_empty());
        assert!(store.records()[0].balancer.is_none());
    }

    #[tokio::test]
    async fn a_cluster_without_a_balancer_passes() {
        let (cloud, store, state) = fixtures::registered(1, 0).await;
        let balancers = FakeBalancers::default();
        run(
            &fixtures::ports(&cloud, &store),
            &balancers,
            teardown(&state.cluster_id),
        )
        .await
        .unwrap();
        assert_eq!(balancers.creates(), 0);
    }

    #[tokio::test]
    async fn a_group_still_in_use_is_a_dependency_violation_then_goes_on_retry() {
        let (cloud, store, balancers, state) = load_balancer::tests::balanced().await;
        let ports = fixtures::ports(&cloud, &store);
        balancers.fail_next(
            "delete_target_group",
            CloudError::DependencyViolation("ResourceInUse".into()),
        );
        let t = teardown(&state.cluster_id);
        let err = run(&ports, &balancers, t.clone()).await.unwrap_err();
        assert_eq!(err.name(), "DependencyViolation");
        assert!(balancers.balancers().is_empty());
        run(&ports, &balancers, t).await.unwrap();
        assert!(balancers.target_groups().is_empty());
    }
}
