//! Stage `terminate-nodes`: terminates every instance tagged for the cluster — found by tag, not
//! from the record, so instances the record never learned of go too.

use super::Ports;
use crate::error::StageError;
use crate::ports::{ClusterStore, Instances};
use crate::record::{NodeState, Phase};
use crate::state::TeardownState;

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "terminate-nodes";

/// Runs the stage.
pub async fn run<E: Instances, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: TeardownState,
) -> Result<TeardownState, StageError> {
    let (instances, store) = (ports.ec2, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let live: Vec<String> = instances
        .find(&state.cluster_id)
        .await?
        .into_iter()
        .filter(|i| !i.state.is_gone())
        .map(|i| i.instance_id)
        .collect();
    if !live.is_empty() {
        instances.terminate(&live).await?;
    }
    records::modify(store, &state.cluster_id, |r| {
        let before = r.nodes.clone();
        for n in r.nodes.iter_mut() {
            n.state = NodeState::Terminated;
        }
        Ok(before != r.nodes)
    })
    .await?;
    let detail = if live.is_empty() {
        "no instances left".to_string()
    } else {
        format!("terminating {}", live.join(", "))
    };
    records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    Ok(state)
}
