//! Stage `store-kubeconfig`: reads the cluster's kubeconfig from the first control plane, points
//! its server at an address the user can reach (the public IP when there is one) and stores it as
//! a SecureString. The kubeconfig never enters the state, a log or an event.

use crate::clock;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{ClusterStore, Instances, NodeCommands, Parameters};
use crate::record::Phase;
use crate::resources;
use crate::scripts::{self, Script};
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

/// Runs one poll.
pub async fn run<E: Instances, R: NodeCommands, P: Parameters, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, params, store) = (ports.ec2, ports.ssm, ports.secrets, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let now = clock::now_epoch();
    state.poll.tick(now, state.timing.command_timeout_seconds);
    let first = nodes::first_control_plane(instances, &state.cluster_id).await?;
    let wanted = Wanted {
        cluster_id: state.cluster_id.clone(),
        instance_id: first.instance_id.clone(),
        script: Script::Kubeconfig,
        key: resources::command_key(&state.cluster_id, "kubeconfig", &first.instance_id),
        env: Vec::new(),
        timeout_seconds: 120.min(state.timing.command_timeout_seconds),
        secrets: Vec::new(),
    };
    let Some(stdout) = commands::poll(commands, instances, &mut state, wanted, now).await? else {
        return Ok(state);
    };
    let payload = scripts::payload_of(&stdout);
    if !payload.contains("clusters:") {
        return Err(StageError::CommandFailed(format!(
            "kubeconfig on {} printed no kubeconfig",
            first.instance_id
        )));
    }
    let host = first
        .public_ip
        .as_deref()
        .or(first.private_ip.as_deref())
        .unwrap_or_default();
    let endpoint = format!("https://{host}:{}", microk8s::PORT_API);
    let name = resources::kubeconfig_parameter(&state.cluster_id);
    params
        .put_secret(&name, &with_server(&payload, &endpoint))
        .await?;
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
}
