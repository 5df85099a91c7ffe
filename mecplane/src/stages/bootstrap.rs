//! Stage `bootstrap`: installs MicroK8s on the first control plane (pinned channel, refresh held,
//! launch configuration with the API certificate's extra SANs, the add-ons and the Pod Security
//! admission of the spec's level, wait-ready with a timeout). It makes no join token: each join gets a new single-use one, made on a member
//! control plane and sealed to the joining node (`join_nodes`).

use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, Instances, NodeCommands, Parameters};
use crate::record::{NodeState, Phase};
use crate::resources;
use crate::scripts::Script;
use crate::state::CreateState;

use super::commands::{self, Wanted};
use super::{nodes, records, Ports};

/// The stage's name in events and the record.
pub const STAGE: &str = "bootstrap";

/// Runs one poll.
pub async fn run<E: Instances, R: NodeCommands, P: Parameters, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    let record = records::enter(store, &state.cluster_id, STAGE).await?;
    let now = clock::now_epoch();
    state.poll.tick(now, state.timing.command_timeout_seconds);
    let first = nodes::first_control_plane(instances, &state.cluster_id).await?;
    let balancer = record.balancer.as_ref().map(|b| b.dns_name.as_str());
    let sans = nodes::api_sans(&first, balancer, &state.spec.extra_sans);
    let wanted = Wanted {
        cluster_id: state.cluster_id.clone(),
        instance_id: first.instance_id.clone(),
        script: Script::Bootstrap,
        key: resources::command_key(&state.cluster_id, "bootstrap", &first.instance_id),
        env: vec![
            ("MK8S_CHANNEL", state.spec.microk8s_channel.clone()),
            (
                "MK8S_ADDONS",
                crate::microk8s::addons_env(&state.spec.addons),
            ),
            ("EXTRA_SANS", sans.join(",")),
            ("POD_SECURITY", state.spec.pod_security.as_str().to_string()),
            (
                "WAIT_TIMEOUT",
                state
                    .timing
                    .command_timeout_seconds
                    .saturating_sub(60)
                    .max(30)
                    .to_string(),
            ),
        ],
        timeout_seconds: state.timing.command_timeout_seconds,
        secrets: Vec::new(),
    };
    if commands::poll(commands, instances, &mut state, wanted, now)
        .await?
        .is_some()
    {
        state.poll.finish();
        records::modify(store, &state.cluster_id, |r| {
            r.set_node_state(&first.instance_id, NodeState::Joined);
            Ok(true)
        })
        .await?;
        let detail = format!(
            "MicroK8s {} on {} with add-ons {}",
            state.spec.microk8s_channel,
            first.instance_id,
            state.spec.addons.join(",")
        );
        records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::CommandStatus;
    use crate::stages::fixtures;

    #[tokio::test]
    async fn bootstraps_once_and_makes_no_join_token() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let sent = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        assert!(!sent.poll.done && sent.command.is_some());
        // A retry with the same input adopts the command already sent instead of sending another
        // (the fake finishes a command on its first poll, so the adopted one is already done).
        let retried = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert!(retried.poll.done && retried.command.is_none());
        assert_eq!(cloud.commands_of("bootstrap").len(), 1);
        let first = run(&fixtures::ports(&cloud, &store), sent).await.unwrap();
        assert_eq!(cloud.commands_of("bootstrap").len(), 1);
        assert!(first.poll.done && first.command.is_none());
        assert!(
            !cloud.parameters().values().any(|(_, secure)| *secure),
            "no join token is stored: {:?}",
            cloud.parameters().keys()
        );
        let text = &cloud.commands_of("bootstrap")[0].text;
        assert!(
            text.contains("export MK8S_CHANNEL='1.32/stable'")
                && text.contains("export MK8S_ADDONS='dns'")
                && text.contains("export POD_SECURITY='baseline'")
        );
    }

    #[tokio::test]
    async fn a_failing_bootstrap_is_a_named_failure_with_the_reason() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        cloud.respond_with(|_, _| CommandStatus::Failed {
            status: "Failed".into(),
            exit_code: 1,
            stdout: String::new(),
            stderr: "error: snap \"microk8s\" has no channel 1.99/stable\n".into(),
        });
        let sent = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        let err = run(&fixtures::ports(&cloud, &store), sent)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "CommandFailed");
        assert!(err.to_string().contains("bootstrap on i-") && err.to_string().contains("exit 1"));
        assert!(err.to_string().contains("has no channel"));
    }

    #[tokio::test]
    async fn what_a_failing_command_printed_on_stdout_is_never_the_reason() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        cloud.respond_with(|_, _| CommandStatus::Failed {
            status: "Failed".into(),
            exit_code: 2,
            stdout: "client-key-data: c2VjcmV0\n".into(),
            stderr: String::new(),
        });
        let sent = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        let err = run(&fixtures::ports(&cloud, &store), sent)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "CommandFailed");
        assert!(!err.to_string().contains("client-key-data"), "{err}");
        assert!(
            err.to_string().contains("exit 2): no error output"),
            "{err}"
        );
    }
}
