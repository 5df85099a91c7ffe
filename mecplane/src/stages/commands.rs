//! Driving one node command across Step Functions polls: send it once (its comment is an
//! idempotency key, so a retried stage adopts the command it already sent instead of sending a
//! second), then report it running, done with its output, or failed with a reason a person can
//! act on — and never with a secret in it.

use crate::error::StageError;
use crate::ports::{CommandStatus, Instances, NodeCommands};
use crate::scripts::{self, Script};
use crate::state::{CreateState, PendingCommand};

use super::nodes;

/// How long past its execution timeout a command may stay unanswered before it counts as lost.
const LOST_GRACE_SECONDS: i64 = 120;

/// One command a stage wants run.
pub(crate) struct Wanted {
    pub cluster_id: String,
    pub instance_id: String,
    pub script: Script,
    /// The idempotency key (SSM comment): the same key means the same command.
    pub key: String,
    pub env: Vec<(&'static str, String)>,
    pub timeout_seconds: u32,
    /// Values to cut out of any message (the join token).
    pub secrets: Vec<String>,
}

/// Where the wanted command is.
#[derive(Debug)]
pub(crate) enum Progress {
    Running(PendingCommand),
    Done { stdout: String },
}

/// The poll every command stage makes: drives the state's pending command (or sends `wanted`).
/// While it runs the state holds it and the answer is `None` (the stage returns the state, and
/// Step Functions waits before the next poll); once done the state holds no command and the
/// answer is its output.
pub(crate) async fn poll<C: NodeCommands, I: Instances>(
    commands: &C,
    instances: &I,
    state: &mut CreateState,
    wanted: Wanted,
    now: i64,
) -> Result<Option<String>, StageError> {
    match drive(commands, instances, state.command.as_ref(), wanted, now).await? {
        Progress::Running(pending) => {
            state.command = Some(pending);
            Ok(None)
        }
        Progress::Done { stdout } => {
            state.command = None;
            Ok(Some(stdout))
        }
    }
}

/// Sends the wanted command if it was never sent, or polls it.
pub(crate) async fn drive<C: NodeCommands, I: Instances>(
    commands: &C,
    instances: &I,
    pending: Option<&PendingCommand>,
    wanted: Wanted,
    now: i64,
) -> Result<Progress, StageError> {
    let pending =
        match pending.filter(|p| p.key == wanted.key && p.instance_id == wanted.instance_id) {
            Some(p) => p.clone(),
            None => match commands
                .sent(&wanted.instance_id)
                .await?
                .into_iter()
                .find(|c| c.comment == wanted.key)
            {
                // Adopted: its clock runs from when SSM received it, not from now.
                Some(found) => PendingCommand {
                    command_id: found.command_id,
                    instance_id: wanted.instance_id.clone(),
                    script: wanted.script.name().into(),
                    key: wanted.key.clone(),
                    sent_at: found.requested_at.unwrap_or(now),
                },
                None => {
                    let env: Vec<(&str, &str)> =
                        wanted.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let text = wanted.script.render(&env);
                    let command_id = commands
                        .send(
                            &wanted.instance_id,
                            &text,
                            &wanted.key,
                            wanted.timeout_seconds,
                        )
                        .await?;
                    tracing::info!(
                        cluster = wanted.cluster_id.as_str(),
                        instance = wanted.instance_id.as_str(),
                        script = wanted.script.name(),
                        command_id,
                        "command sent"
                    );
                    return Ok(Progress::Running(PendingCommand {
                        command_id,
                        instance_id: wanted.instance_id.clone(),
                        script: wanted.script.name().into(),
                        key: wanted.key,
                        sent_at: now,
                    }));
                }
            },
        };
    let what = format!("{} on {}", wanted.script.name(), wanted.instance_id);
    let redact = |text: String| {
        wanted
            .secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text, |t, s| t.replace(s.as_str(), "[redacted]"))
    };
    match commands
        .status(&pending.command_id, &pending.instance_id)
        .await?
    {
        CommandStatus::Success { stdout } => Ok(Progress::Done { stdout }),
        CommandStatus::Running => {
            // SSM keeps a command to a terminated instance in progress until its timeouts pass;
            // looking at the instance fails the stage at once instead.
            if nodes::is_gone(instances, &wanted.cluster_id, &wanted.instance_id).await? {
                return Err(StageError::InstanceTerminated(format!(
                    "{what}: the instance was terminated"
                )));
            }
            if now > pending.sent_at + i64::from(wanted.timeout_seconds) + LOST_GRACE_SECONDS {
                return Err(StageError::CommandTimedOut(format!(
                    "{what} was not answered within {}s",
                    wanted.timeout_seconds
                )));
            }
            Ok(Progress::Running(pending))
        }
        CommandStatus::TimedOut => {
            if nodes::is_gone(instances, &wanted.cluster_id, &wanted.instance_id).await? {
                return Err(StageError::InstanceTerminated(format!(
                    "{what}: the instance was terminated"
                )));
            }
            Err(StageError::CommandTimedOut(format!(
                "{what} did not finish within {}s",
                wanted.timeout_seconds
            )))
        }
        CommandStatus::Failed {
            status,
            exit_code,
            stderr,
            ..
        } => {
            if nodes::is_gone(instances, &wanted.cluster_id, &wanted.instance_id).await? {
                return Err(StageError::InstanceTerminated(format!(
                    "{what}: the instance was terminated"
                )));
            }
            // The scripts say why they failed on stderr; stdout (what a command printed on its
            // way) never becomes a reason.
            let output = if stderr.trim().is_empty() {
                "no error output".to_string()
            } else {
                scripts::tail(&stderr, 3)
            };
            Err(StageError::CommandFailed(redact(format!(
                "{what} failed ({status}, exit {exit_code}): {output}"
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::CommandStatus;
    use crate::stages::fixtures;

    #[tokio::test]
    async fn an_adopted_command_keeps_the_time_it_was_sent() {
        let (cloud, _store, state) = fixtures::online(1, 0).await;
        cloud.respond_with(|_, _| CommandStatus::Running);
        let instance_id = cloud.instances()[0].instance.instance_id.clone();
        let wanted = || Wanted {
            cluster_id: state.cluster_id.clone(),
            instance_id: instance_id.clone(),
            script: Script::Bootstrap,
            key: "mecplane test bootstrap".into(),
            env: Vec::new(),
            timeout_seconds: 60,
            secrets: Vec::new(),
        };
        let sent_at = crate::clock::now_epoch();
        let Progress::Running(first) = drive(&cloud, &cloud, None, wanted(), sent_at)
            .await
            .unwrap()
        else {
            panic!("a new command runs")
        };
        // A retry that lost the pending command, long after: it adopts the command sent before
        // (no second send), and that command's own time has run out.
        let later = sent_at + 60 + LOST_GRACE_SECONDS + 10;
        let err = drive(&cloud, &cloud, None, wanted(), later)
            .await
            .unwrap_err();
        assert_eq!(err.name(), "CommandTimedOut", "{err}");
        assert_eq!(cloud.commands_of("bootstrap").len(), 1);
        // Within its time, the adopted command is the one already sent.
        let Progress::Running(adopted) = drive(&cloud, &cloud, None, wanted(), sent_at + 5)
            .await
            .unwrap()
        else {
            panic!("still running")
        };
        assert_eq!(adopted.command_id, first.command_id);
        assert!((adopted.sent_at - sent_at).abs() <= 1, "{adopted:?}");
    }
}
