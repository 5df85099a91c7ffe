//! Stage `await-terminated`: one poll of whether every instance tagged for the cluster has
//! terminated (the security group can only go once their network interfaces have). Past
//! `timing.terminate_timeout_seconds` it fails with `TeardownTimedOut`.

use super::Ports;
use crate::clock;
use crate::error::StageError;
use crate::ports::{InstanceState, Instances};
use crate::state::TeardownState;

/// The stage's name.
pub const STAGE: &str = "await-terminated";

/// Runs one poll.
pub async fn run<E: Instances, R, P, S>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: TeardownState,
) -> Result<TeardownState, StageError> {
    let instances = ports.ec2;
    let now = clock::now_epoch();
    state.poll.tick(now, state.timing.terminate_timeout_seconds);
    let remaining: Vec<String> = instances
        .find(&state.cluster_id)
        .await?
        .into_iter()
        .filter(|i| i.state != InstanceState::Terminated)
        .map(|i| i.instance_id)
        .collect();
    if remaining.is_empty() {
        state.poll.finish();
    } else if state.poll.expired(now) {
        return Err(StageError::TeardownTimedOut(format!(
            "{} instance(s) not terminated after {}s: {}",
            remaining.len(),
            state.timing.terminate_timeout_seconds,
            remaining.join(", ")
        )));
    }
    Ok(state)
}
