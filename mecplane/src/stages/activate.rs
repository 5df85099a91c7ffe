//! Stage `activate`: the cluster is up; the record becomes `ACTIVE` and the execution's output
//! says what was made.

use super::Ports;
use crate::error::StageError;
use crate::ports::ClusterStore;
use crate::record::{Phase, Status};
use crate::state::{CreateOutput, CreateState};

use super::records;

/// The stage's name in events and the record.
pub const STAGE: &str = "activate";

/// Runs the stage.
pub async fn run<E, R, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    state: CreateState,
) -> Result<CreateOutput, StageError> {
    let store = ports.store;
    records::enter(store, &state.cluster_id, STAGE).await?;
    let record = records::modify(store, &state.cluster_id, |r| {
        if !r.status.can_become(Status::Active) {
            return Err(StageError::InvalidState(format!(
                "cluster {} is {} and cannot become ACTIVE",
                r.id, r.status
            )));
        }
        let changed = r.status != Status::Active;
        r.status = Status::Active;
        Ok(changed)
    })
    .await?;
    let detail = format!(
        "ACTIVE: {} node(s), API {}",
        record.nodes.len(),
        record.endpoint.clone().unwrap_or_default()
    );
    records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    Ok(CreateOutput {
        cluster_id: record.id,
        name: record.spec.name,
        status: record.status,
        endpoint: record.endpoint,
        kubeconfig_parameter: record.kubeconfig_parameter,
        nodes: record.nodes.len(),
    })
}
