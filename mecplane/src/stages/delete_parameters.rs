//! Stage `delete-parameters`: deletes the cluster's SecureString parameters (join token,
//! kubeconfig); missing ones are fine.

use super::Ports;
use crate::error::StageError;
use crate::ports::{ClusterStore, Parameters};
use crate::record::Phase;
use crate::state::TeardownState;

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "delete-parameters";

/// Runs the stage.
pub async fn run<E, R, P: Parameters, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: TeardownState,
) -> Result<TeardownState, StageError> {
    let (params, store) = (ports.secrets, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let names = ports
        .config
        .deployment
        .cluster_parameters(&state.cluster_id);
    params.delete(&names).await?;
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!("deleted {}", names.join(", ")),
    )
    .await?;
    Ok(state)
}
