//! Stage `apply-addons`: an add-on change, as one command on a control plane (`addons` script):
//! `microk8s disable` each name the change drops (or lists again with other arguments), then
//! `microk8s enable` each entry it adds, arguments intact. Polled like every command stage; the
//! command's key names the update, so a retried poll adopts the command it already sent.

use crate::clock;
use crate::error::StageError;
use crate::ports::{ClusterStore, Instances, NodeCommands};
use crate::record::Phase;
use crate::resources;
use crate::scripts::Script;
use crate::state::CreateState;

use super::commands::{self, Wanted};
use super::{nodes, records, Ports};

/// The stage's name in events and the record.
pub const STAGE: &str = "apply-addons";

/// Runs one poll.
pub async fn run<E: Instances, R: NodeCommands, P, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    records::enter(store, &state.cluster_id, STAGE).await?;
    let now = clock::now_epoch();
    let info = state
        .update
        .clone()
        .ok_or_else(|| StageError::Internal("apply-addons runs on an update".into()))?;
    let plan = info
        .addons
        .clone()
        .ok_or_else(|| StageError::Internal("apply-addons runs on an add-on change".into()))?;
    state.poll.tick(now, state.timing.command_timeout_seconds);
    let operator = nodes::operator(instances, &state.cluster_id, None).await?;
    let wanted = Wanted {
        cluster_id: state.cluster_id.clone(),
        instance_id: operator.instance_id.clone(),
        script: Script::Addons,
        key: resources::command_key(&state.cluster_id, "addons", &info.id),
        env: vec![
            ("DISABLE", plan.disable.join(" ")),
            // Space-separated: a comma inside arguments does not split the list.
            ("ENABLE", crate::microk8s::addons_env(&plan.enable)),
            (
                "WAIT_TIMEOUT",
                state.timing.ready_timeout_seconds.to_string(),
            ),
        ],
        timeout_seconds: state.timing.command_timeout_seconds,
        secrets: Vec::new(),
    };
    let Some(_) = commands::poll(commands, instances, &mut state, wanted, now).await? else {
        return Ok(state);
    };
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            l.join(", ")
        }
    };
    let detail = format!(
        "on {}: disabled [{}], enabled [{}]",
        operator.instance_id,
        list(&plan.disable),
        list(&plan.enable)
    );
    records::note(store, &state.cluster_id, STAGE, Phase::Finished, detail).await?;
    state.poll.finish();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Change;
    use crate::record::Status;
    use crate::stages::{begin_update, fixtures};

    async fn changing_addons(
        to: &[&str],
    ) -> (
        crate::fakes::FakeCloud,
        crate::fakes::FakeStore,
        CreateState,
    ) {
        let (cloud, store, state) = fixtures::online(1, 0).await;
        fixtures::set_status(&store, &state.cluster_id, Status::Active).await;
        let change = Change::Addons {
            from: state.spec.addons.clone(),
            to: to.iter().map(|s| s.to_string()).collect(),
        };
        begin_update::tests::start_change(&store, &state.cluster_id, &change).await;
        let state = begin_update::run(
            &fixtures::records(&store),
            begin_update::tests::event(&state.cluster_id),
        )
        .await
        .unwrap();
        (cloud, store, state)
    }

    #[tokio::test]
    async fn one_command_with_arguments_intact_every_poll_run_twice() {
        let (cloud, store, mut state) =
            changing_addons(&["metallb:10.0.0.10-10.0.0.20,10.0.1.0/24"]).await;
        for _ in 0..5 {
            let _ = run(&fixtures::ports(&cloud, &store), state.clone())
                .await
                .unwrap();
            state = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
            if state.poll.done {
                break;
            }
        }
        assert!(state.poll.done);
        let sent = cloud.commands_of("addons");
        assert_eq!(sent.len(), 1, "adopted, never sent twice");
        assert!(
            sent[0]
                .text
                .contains("export ENABLE='metallb:10.0.0.10-10.0.0.20,10.0.1.0/24'"),
            "{}",
            sent[0].text
        );
        assert!(
            sent[0].text.contains("export DISABLE='dns'"),
            "{}",
            sent[0].text
        );
    }

    #[tokio::test]
    async fn a_failed_enable_fails_the_stage_with_the_reason() {
        let (cloud, store, state) = changing_addons(&["dns", "ingress"]).await;
        fixtures::fail_script(&cloud, "addons", "addons: microk8s enable ingress failed\n");
        let ports = fixtures::ports(&cloud, &store);
        let err = fixtures::until_failure(state, 3, |s| run(&ports, s)).await;
        assert_eq!(err.name(), "CommandFailed");
        assert!(err.to_string().contains("enable ingress failed"), "{err}");
    }
}
