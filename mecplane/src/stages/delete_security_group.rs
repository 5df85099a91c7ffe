//! Stage `delete-security-group`: deletes the cluster's security group. While network interfaces
//! of terminated instances linger it fails with `DependencyViolation`, which the state machine
//! retries with backoff; a group already gone is success.

use super::Ports;
use crate::error::StageError;
use crate::ports::{ClusterStore, SecurityGroups};
use crate::record::Phase;
use crate::state::TeardownState;

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "delete-security-group";

/// Runs the stage.
pub async fn run<E: SecurityGroups, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: TeardownState,
) -> Result<TeardownState, StageError> {
    let (groups, store) = (ports.ec2, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let detail = match groups.find_group(&state.cluster_id).await? {
        Some(id) => {
            groups.delete_group(&id).await?;
            format!("{id} deleted")
        }
        None => "no security group left".into(),
    };
    records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    Ok(state)
}
