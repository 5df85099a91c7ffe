//! Stage `store-kubeconfig`: reads the cluster's kubeconfig from the first control plane, points
//! its server at an address the user can reach (the public IP when there is one) and stores it as
//! a SecureString. The kubeconfig never enters the state, a log, an event or the SSM command
//! output: the node seals it to a one-time key of this stage (`sealed`), whose private half waits
//! between polls in a SecureString of the cluster and is deleted once the kubeconfig is stored.

use crate::clock;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{ClusterStore, Instances, NodeCommands, Parameters};
use crate::record::Phase;
use crate::resources;
use crate::scripts::Script;
use crate::sealed::TransportKey;
use crate::state::CreateState;

use super::commands::{self, Wanted};
use super::{nodes, records, Ports};

/// The stage's name in events and the record.
pub const STAGE: &str = "store-kubeconfig";

/// Points every `server:` entry of a kubeconfig at `endpoint`.
pub fn with_server(kubeconfig: &str, endpoint: &str) -> String {
    let mut out: String = kubeconfig
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server:") {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}server: {endpoint}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// The stored transport key, or a new one stored first (also when the stored one is unreadable).
async fn transport_key<P: Parameters>(params: &P, name: &str) -> Result<TransportKey, StageError> {
    if let Some(text) = params.get_secret(name).await? {
        if let Ok(key) = TransportKey::from_pkcs8_base64(&text) {
            return Ok(key);
        }
        tracing::warn!(parameter = name, "unreadable transport key replaced");
    }
    let key = TransportKey::generate()
        .map_err(|e| StageError::Internal(format!("transport key: {e}")))?;
    let stored = key
        .to_pkcs8_base64()
        .map_err(|e| StageError::Internal(format!("transport key: {e}")))?;
    params.put_secret(name, &stored).await?;
    Ok(key)
}

/// Runs one poll.
pub async fn run<E: Instances, R: NodeCommands, P: Parameters, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, params, store) = (ports.ec2, ports.ssm, ports.secrets, ports.store);
    let record = records::enter(store, &state.cluster_id, STAGE).await?;
    if let Some(stored) = record.kubeconfig_parameter.clone() {
        // Stored by an earlier invocation (its transport key is gone): done, nothing to send.
        state.command = None;
        state.kubeconfig_parameter = Some(stored);
        state.poll.finish();
        return Ok(state);
    }
    let now = clock::now_epoch();
    state.poll.tick(now, state.timing.command_timeout_seconds);
    let first = nodes::first_control_plane(instances, &state.cluster_id).await?;
    let key_parameter = ports
        .config
        .deployment
        .transport_key_parameter(&state.cluster_id);
    let key = transport_key(params, &key_parameter).await?;
    let wanted = Wanted {
        cluster_id: state.cluster_id.clone(),
        instance_id: first.instance_id.clone(),
        script: Script::Kubeconfig,
        // The key names the transport key too: a command sealed to another key is never adopted.
        key: resources::command_key(
            &state.cluster_id,
            "kubeconfig",
            format!("{} {}", first.instance_id, key.fingerprint()),
        ),
        env: vec![("TRANSPORT_KEY", key.public_base64())],
        timeout_seconds: 120.min(state.timing.command_timeout_seconds),
        secrets: Vec::new(),
    };
    let Some(stdout) = commands::poll(commands, instances, &mut state, wanted, now).await? else {
        return Ok(state);
    };
    let payload = key.open(&stdout).map_err(|e| {
        StageError::CommandFailed(format!(
            "the kubeconfig from {} could not be opened: {e}",
            first.instance_id
        ))
    })?;
    if !payload.contains("clusters:") {
        return Err(StageError::CommandFailed(format!(
            "kubeconfig on {} printed no kubeconfig",
            first.instance_id
        )));
    }
    let balancer = record.balancer.as_ref().map(|b| b.dns_name.as_str());
    let host = nodes::api_host(&first, balancer).unwrap_or_default();
    let endpoint = format!("https://{host}:{}", microk8s::PORT_API);
    let name = ports
        .config
        .deployment
        .kubeconfig_parameter(&state.cluster_id);
    params
        .put_secret(&name, &with_server(&payload, &endpoint))
        .await?;
    params.delete(std::slice::from_ref(&key_parameter)).await?;
    records::modify(store, &state.cluster_id, |r| {
        r.kubeconfig_parameter = Some(name.clone());
        r.endpoint = Some(endpoint.clone());
        Ok(true)
    })
    .await?;
    records::note(
        store,
        &state.cluster_id,
        STAGE,
        Phase::Finished,
        format!("kubeconfig for {endpoint} stored in {name}"),
    )
    .await?;
    state.kubeconfig_parameter = Some(name);
    state.poll.finish();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::CommandStatus;
    use crate::stages::fixtures;

    #[test]
    fn server_is_rewritten_keeping_indentation() {
        let k = "clusters:\n- cluster:\n    server: https://10.0.0.1:16443\n  name: x\n";
        assert_eq!(
            with_server(k, "https://203.0.113.5:16443"),
            "clusters:\n- cluster:\n    server: https://203.0.113.5:16443\n  name: x\n"
        );
    }

    #[tokio::test]
    async fn stored_as_secure_string_and_never_in_state_or_events() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let sent = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        let out = run(&fixtures::ports(&cloud, &store), sent).await.unwrap();
        let name = out.kubeconfig_parameter.clone().unwrap();
        let (value, secure) = cloud.parameters()[&name].clone();
        assert!(secure);
        assert!(value.contains("server: https://198.51.100."));
        assert!(!value.contains("MECPLANE_RESULT"));
        let everything = format!(
            "{}{:?}{:?}",
            serde_json::to_string(&out).unwrap(),
            store.records(),
            store.all_events()
        );
        assert!(!everything.contains("secret-admin-token"));
    }

    #[tokio::test]
    async fn the_kubeconfig_leaves_the_node_sealed_to_a_key_that_is_then_deleted() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        let ports = fixtures::ports(&cloud, &store);
        let sent = run(&ports, state.clone()).await.unwrap();
        let key_parameter =
            resources::Deployment::default().transport_key_parameter(&sent.cluster_id);
        assert!(
            cloud.parameters()[&key_parameter].1,
            "the private key is a SecureString"
        );
        // The same input again (a retried Lambda) adopts the command sealed to the same key.
        let out = run(&ports, state.clone()).await.unwrap();
        // And once more, after the kubeconfig is stored and the transport key deleted: done,
        // without a new key or command.
        let again = run(&ports, sent.clone()).await.unwrap();
        assert_eq!(again.kubeconfig_parameter, out.kubeconfig_parameter);
        assert!(again.command.is_none());
        let commands = cloud.commands_of("kubeconfig");
        assert_eq!(commands.len(), 1);
        for secret in ["secret-admin-token", "certificate-authority-data", "token:"] {
            assert!(
                !format!("{:?}", commands[0]).contains(secret),
                "{secret} in the clear"
            );
        }
        assert!(out.kubeconfig_parameter.is_some());
        assert!(
            !cloud.parameters().contains_key(&key_parameter),
            "the transport key is deleted once the kubeconfig is stored"
        );
    }

    #[tokio::test]
    async fn output_not_sealed_to_this_key_fails_and_stores_nothing() {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        cloud.respond_with(|cmd, instances| match cmd.script.as_str() {
            // A node that prints the kubeconfig in clear (or sealed to someone else).
            "kubeconfig" => CommandStatus::Success {
                stdout: format!(
                    "{}MECPLANE_RESULT kubeconfig=ok\n",
                    crate::fakes::FAKE_KUBECONFIG
                ),
            },
            _ => crate::fakes::default_outcome(cmd, instances),
        });
        let ports = fixtures::ports(&cloud, &store);
        let sent = run(&ports, state).await.unwrap();
        let err = run(&ports, sent.clone()).await.unwrap_err();
        assert!(matches!(err, StageError::CommandFailed(_)), "{err:?}");
        assert!(err.to_string().contains("could not be opened"), "{err}");
        assert!(!err.to_string().contains("secret-admin-token"));
        let kubeconfig = resources::Deployment::default().kubeconfig_parameter(&sent.cluster_id);
        assert!(!cloud.parameters().contains_key(&kubeconfig));
    }
}
