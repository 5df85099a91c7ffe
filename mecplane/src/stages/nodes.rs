//! The cluster's instances as the stages see them: by role, ordered by index, live ones only.

use crate::error::StageError;
use crate::ports::{Instance, Instances};
use crate::record::Role;
use crate::state::CreateState;

/// Live (not shutting down or terminated) instances of `role`, ordered by index.
pub(crate) async fn live<I: Instances>(
    instances: &I,
    cluster_id: &str,
    role: Role,
) -> Result<Vec<Instance>, StageError> {
    let mut found: Vec<Instance> = instances
        .find(cluster_id)
        .await?
        .into_iter()
        .filter(|i| i.role == Some(role) && !i.state.is_gone())
        .collect();
    found.sort_by_key(|i| (i.index.unwrap_or(u32::MAX), i.instance_id.clone()));
    Ok(found)
}

/// The address a cluster's API is reached at, written into its kubeconfig: a load balancer's DNS
/// name when the cluster has one, else the first control plane's carrier IP (Wavelength), public
/// IP or private IP, the first it has.
pub fn api_host(first: &Instance, balancer: Option<&str>) -> Option<String> {
    balancer
        .or(first.carrier_ip.as_deref())
        .or(first.public_ip.as_deref())
        .or(first.private_ip.as_deref())
        .map(str::to_string)
}

/// The names and addresses the API server's certificate carries besides MicroK8s' own
/// (`EXTRA_SANS` of the bootstrap): every address of the first control plane, then the load
/// balancer's DNS name, then the user's own names (`extra`), each once.
pub fn api_sans(first: &Instance, balancer: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = Vec::new();
    let all = [
        first.private_ip.as_deref(),
        first.public_ip.as_deref(),
        first.carrier_ip.as_deref(),
        first.private_dns.as_deref(),
        balancer,
    ]
    .into_iter()
    .flatten()
    .chain(extra.iter().map(String::as_str));
    for san in all {
        if !sans.iter().any(|s| s == san) {
            sans.push(san.to_string());
        }
    }
    sans
}

/// The first control plane: the node that bootstraps the cluster and answers joins.
pub(crate) async fn first_control_plane<I: Instances>(
    instances: &I,
    cluster_id: &str,
) -> Result<Instance, StageError> {
    live(instances, cluster_id, Role::ControlPlane)
        .await?
        .into_iter()
        .find(|i| i.index == Some(0))
        .ok_or_else(|| {
            StageError::InstanceTerminated(
                "the first control plane (index 0) was terminated or is shutting down".into(),
            )
        })
}

/// The control plane the join and verify stages talk to. In a create, the first control plane
/// (index 0: the one bootstrapped). In an update, the live control plane with the lowest index
/// among the cluster's members (`state.joined`, from the record), so a first control plane being
/// replaced is not asked.
pub(crate) async fn anchor<I: Instances>(
    instances: &I,
    state: &CreateState,
) -> Result<Instance, StageError> {
    if state.update.is_none() {
        return first_control_plane(instances, &state.cluster_id).await;
    }
    live(instances, &state.cluster_id, Role::ControlPlane)
        .await?
        .into_iter()
        .find(|i| state.joined.contains(&i.instance_id))
        .ok_or_else(|| {
            StageError::InstanceTerminated("no member control plane of the cluster is live".into())
        })
}

/// Whether the instance is gone (terminated or shutting down, or unknown).
pub(crate) async fn is_gone<I: Instances>(
    instances: &I,
    cluster_id: &str,
    instance_id: &str,
) -> Result<bool, StageError> {
    Ok(instances
        .find(cluster_id)
        .await?
        .iter()
        .find(|i| i.instance_id == instance_id)
        .is_none_or(|i| i.state.is_gone()))
}

/// The address of a node as the other nodes reach it.
pub(crate) fn private_ip(instance: &Instance) -> Result<&str, StageError> {
    instance
        .private_ip
        .as_deref()
        .ok_or_else(|| StageError::Internal(format!("{} has no private IP", instance.instance_id)))
}

/// The control plane that acts on `target` (drains, uncordons, changes add-ons): the live control
/// plane with the lowest index other than `target` — so a control plane being upgraded is never
/// the one draining it when another exists — else `target` itself (a one-control-plane cluster).
pub(crate) async fn operator<I: Instances>(
    instances: &I,
    cluster_id: &str,
    target: Option<&str>,
) -> Result<Instance, StageError> {
    let planes = live(instances, cluster_id, Role::ControlPlane).await?;
    planes
        .iter()
        .find(|i| Some(i.instance_id.as_str()) != target)
        .or_else(|| planes.first())
        .cloned()
        .ok_or_else(|| {
            StageError::InstanceTerminated("the cluster has no live control plane".into())
        })
}
