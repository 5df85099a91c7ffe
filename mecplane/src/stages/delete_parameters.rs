//! Stage `delete-parameters`: deletes the cluster's SecureString parameters (join token,
//! kubeconfig, transport key); missing ones are fine. After a failed create that retains its
//! resources (`retain_on_failure`) it deletes only the transport key: the private half of a
//! one-time key has nothing left to open once the create has failed, and the rest stays for
//! inspection until the cluster is deleted.

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
    let deployment = &ports.config.deployment;
    let (names, rest) = if state.retain {
        (
            vec![deployment.transport_key_parameter(&state.cluster_id)],
            "; the other parameters are retained (retain_on_failure)",
        )
    } else {
        (deployment.cluster_parameters(&state.cluster_id), "")
    };
    params.delete(&names).await?;
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!("deleted {}{rest}", names.join(", ")),
    )
    .await?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Parameters;
    use crate::stages::fixtures;
    use crate::state::{StepError, TeardownReason};

    /// A failed create with `retain_on_failure` that got as far as the kubeconfig: the machine's
    /// `Retain?` branch runs this stage on the teardown state `mark-failed` answers.
    #[tokio::test]
    async fn a_retained_failed_create_loses_its_transport_key_only() {
        let (cloud, store, mut state) = fixtures::registered(1, 0).await;
        let id = state.cluster_id.clone();
        let (key, token) = (
            crate::resources::Deployment::default().transport_key_parameter(&id),
            crate::resources::Deployment::default().join_token_parameter(&id),
        );
        cloud.put_secret(&key, "private half").await.unwrap();
        cloud.put_secret(&token, "token").await.unwrap();
        state.spec.retain_on_failure = true;
        state.error = Some(StepError {
            error: "CommandFailed".into(),
            cause: "kubeconfig on i-1 failed".into(),
        });
        let teardown = crate::stages::mark_failed::failed_create(&store, state)
            .await
            .unwrap();
        assert!(teardown.retain);
        assert_eq!(teardown.reason, TeardownReason::CreateFailed);

        let ports = fixtures::ports(&cloud, &store);
        for _ in 0..2 {
            run(&ports, teardown.clone()).await.unwrap();
        }
        assert_eq!(cloud.get_secret(&key).await.unwrap(), None, "key removed");
        assert_eq!(
            cloud.get_secret(&token).await.unwrap().as_deref(),
            Some("token"),
            "the rest is retained"
        );
        assert_eq!(store.records()[0].status, crate::record::Status::Failed);

        // Without retain_on_failure every parameter goes.
        let all = TeardownState {
            retain: false,
            ..teardown
        };
        run(&ports, all).await.unwrap();
        assert_eq!(cloud.get_secret(&token).await.unwrap(), None);
    }
}
