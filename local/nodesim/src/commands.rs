//! Run Command's commands and invocations: the store, and the lifecycle of one invocation
//! (Pending → InProgress → Success / Failed / TimedOut / Cancelled) as SSM and its agent report it.

use crate::faults::FaultKind;
use crate::sandbox::{self, RunSpec};
use crate::Core;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// SSM cuts `StandardOutputContent` / `StandardErrorContent` at this many characters.
pub const OUTPUT_LIMIT: usize = 24_000;
/// SSM cuts a plugin's `Output` (ListCommandInvocations with Details) at this many characters.
pub const PLUGIN_OUTPUT_LIMIT: usize = 2_500;
/// The agent's exit code for a command it stopped (timeout or cancel): 128 + SIGKILL.
pub const STOPPED_EXIT_CODE: i32 = 137;
/// How long after start the `terminate_during_command` fault terminates the instance.
const TERMINATE_AFTER: Duration = Duration::from_millis(300);

/// A command as SendCommand accepted it.
#[derive(Debug, Clone)]
pub struct CommandRec {
    /// uuid.
    pub command_id: String,
    /// Always `AWS-RunShellScript`.
    pub document_name: String,
    /// The caller's comment.
    pub comment: String,
    /// The parameters as sent (name → list of strings).
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The targeted instances.
    pub instance_ids: Vec<String>,
    /// When SendCommand was called.
    pub requested: SystemTime,
    /// The delivery timeout (`TimeoutSeconds`, default 3600).
    pub timeout_seconds: u64,
    /// `executionTimeout` (default 3600).
    pub execution_timeout: u64,
    /// The text run (`commands` joined with newlines).
    pub text: String,
    /// The node script named by a `# mecplane-script: <name>` line, if any.
    pub script: Option<String>,
}

/// The status of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not started yet.
    Pending,
    /// Running (or the agent is gone and SSM is still waiting for it).
    InProgress,
    /// Exit code 0.
    Success,
    /// Non-zero exit code.
    Failed,
    /// Execution or delivery timeout.
    TimedOut,
    /// CancelCommand.
    Cancelled,
}

impl Status {
    /// The `Status` string of the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "InProgress",
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::TimedOut => "TimedOut",
            Status::Cancelled => "Cancelled",
        }
    }

    /// Whether no further change happens.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::InProgress)
    }
}

/// One invocation (a command on one instance).
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The status.
    pub status: Status,
    /// `StatusDetails` (`Pending`, `InProgress`, `Success`, `Failed`, `ExecutionTimedOut`, `DeliveryTimedOut`, `Cancelled`).
    pub details: &'static str,
    /// Exit code, -1 until known.
    pub response_code: i32,
    /// When the agent started it.
    pub start: Option<SystemTime>,
    /// When it reached a terminal state.
    pub end: Option<SystemTime>,
    /// Standard output (first 24,000 characters).
    pub stdout: String,
    /// Standard error (first 24,000 characters).
    pub stderr: String,
    /// The process group while running.
    pub pgid: Option<u32>,
    /// The agent went away (instance terminated) while it ran: SSM keeps it InProgress until the
    /// delivery timeout.
    pub agent_lost: bool,
}

impl Invocation {
    fn pending() -> Self {
        Self {
            status: Status::Pending,
            details: "Pending",
            response_code: -1,
            start: None,
            end: None,
            stdout: String::new(),
            stderr: String::new(),
            pgid: None,
            agent_lost: false,
        }
    }

    fn finish(&mut self, status: Status, details: &'static str, code: i32) {
        self.status = status;
        self.details = details;
        self.response_code = code;
        self.end = Some(SystemTime::now());
        self.pgid = None;
    }
}

/// The command store.
#[derive(Default)]
pub struct Commands {
    commands: Mutex<Vec<CommandRec>>,
    invocations: Mutex<HashMap<(String, String), Invocation>>,
}

impl Commands {
    /// Stores a command with a Pending invocation per instance.
    pub fn insert(&self, cmd: CommandRec) {
        let mut inv = self.invocations.lock().expect("invocations lock");
        for id in &cmd.instance_ids {
            inv.insert((cmd.command_id.clone(), id.clone()), Invocation::pending());
        }
        self.commands.lock().expect("commands lock").push(cmd);
    }

    /// One command.
    pub fn command(&self, command_id: &str) -> Option<CommandRec> {
        self.commands
            .lock()
            .expect("commands lock")
            .iter()
            .find(|c| c.command_id == command_id)
            .cloned()
    }

    /// Every command, newest first.
    pub fn all_commands(&self) -> Vec<CommandRec> {
        let mut v = self.commands.lock().expect("commands lock").clone();
        v.reverse();
        v
    }

    /// One invocation.
    pub fn invocation(&self, command_id: &str, instance_id: &str) -> Option<Invocation> {
        self.invocations
            .lock()
            .expect("invocations lock")
            .get(&(command_id.to_string(), instance_id.to_string()))
            .cloned()
    }

    fn update<R>(
        &self,
        command_id: &str,
        instance_id: &str,
        f: impl FnOnce(&mut Invocation) -> R,
    ) -> Option<R> {
        self.invocations
            .lock()
            .expect("invocations lock")
            .get_mut(&(command_id.to_string(), instance_id.to_string()))
            .map(f)
    }

    /// Cancels the unfinished invocations of a command (all of them or those on `instance_ids`).
    pub fn cancel(&self, command_id: &str, instance_ids: &[String]) {
        let mut inv = self.invocations.lock().expect("invocations lock");
        for ((c, i), v) in inv.iter_mut() {
            if c == command_id
                && (instance_ids.is_empty() || instance_ids.contains(i))
                && !v.status.is_terminal()
            {
                if let Some(pgid) = v.pgid {
                    sandbox::kill_group(pgid);
                }
                let code = if v.start.is_some() {
                    STOPPED_EXIT_CODE
                } else {
                    -1
                };
                v.finish(Status::Cancelled, "Cancelled", code);
            }
        }
    }

    /// Kills what runs on an instance that is gone; SSM keeps those invocations InProgress.
    pub fn instance_gone(&self, instance_id: &str) -> Vec<String> {
        let mut lost = Vec::new();
        let mut inv = self.invocations.lock().expect("invocations lock");
        for ((c, i), v) in inv.iter_mut() {
            if i == instance_id && !v.status.is_terminal() && !v.agent_lost {
                if let Some(pgid) = v.pgid.take() {
                    sandbox::kill_group(pgid);
                }
                v.agent_lost = true;
                v.status = Status::InProgress;
                v.details = "InProgress";
                lost.push(c.clone());
            }
        }
        lost
    }

    /// Whether anything is running.
    pub fn any_running(&self) -> bool {
        self.invocations
            .lock()
            .expect("invocations lock")
            .values()
            .any(|v| v.pgid.is_some())
    }

    /// Kills every running process group.
    pub fn kill_all(&self) {
        for v in self
            .invocations
            .lock()
            .expect("invocations lock")
            .values_mut()
        {
            if let Some(pgid) = v.pgid.take() {
                sandbox::kill_group(pgid);
            }
        }
    }
}

/// Runs one invocation to its end.
pub async fn run_invocation(core: Arc<Core>, cmd: CommandRec, instance_id: String) {
    let Some(inst) = core.agents.get(&instance_id) else {
        return;
    };
    let target = inst.target();
    let script = cmd.script.as_deref();
    let fails = core.faults.has(FaultKind::CommandFails, &target, script);
    let hangs = core.faults.has(FaultKind::CommandHangs, &target, script);
    let terminate = core
        .faults
        .has(FaultKind::TerminateDuringCommand, &target, script);
    let stand_in_faults = core.faults.names_for(&target, script);

    let started = core.commands.update(&cmd.command_id, &instance_id, |v| {
        if v.status != Status::Pending {
            return false;
        }
        v.status = Status::InProgress;
        v.details = "InProgress";
        v.start = Some(SystemTime::now());
        true
    });
    if started != Some(true) {
        return;
    }

    if fails && !hangs && !terminate {
        tokio::time::sleep(Duration::from_millis(100)).await;
        core.commands.update(&cmd.command_id, &instance_id, |v| {
            if v.status == Status::InProgress {
                v.stderr = format!(
                    "mecplane-sim: injected fault command_fails ({})\nfailed to run commands: exit status 1",
                    script.unwrap_or("command")
                );
                v.finish(Status::Failed, "Failed", 1);
            }
        });
        return;
    }

    let text = if hangs {
        "# mecplane-sim: command_hangs\nwhile :; do sleep 1; done\n".to_string()
    } else {
        cmd.text.clone()
    };
    let spec = RunSpec {
        sandbox_dir: core.agents.sandbox_dir(&instance_id),
        command_dir: core
            .agents
            .sandbox_dir(&instance_id)
            .join("commands")
            .join(&cmd.command_id),
        stand_ins_dir: core.cfg.stand_ins_dir.clone(),
        net_dir: core.agents.net_dir(),
        instance_id: instance_id.clone(),
        ip: inst.private_ip.clone(),
        hostname: inst.hostname.clone(),
        faults: stand_in_faults,
        script: cmd.script.clone(),
    };
    let mut child = match sandbox::spawn(&spec, &text) {
        Ok(c) => c,
        Err(e) => {
            core.commands.update(&cmd.command_id, &instance_id, |v| {
                v.stderr = format!("failed to run commands: {e}");
                v.finish(Status::Failed, "Failed", 1);
            });
            return;
        }
    };
    let pgid = child.id().unwrap_or(0);
    let still_running = core
        .commands
        .update(&cmd.command_id, &instance_id, |v| {
            if v.status == Status::InProgress {
                v.pgid = Some(pgid);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !still_running {
        sandbox::kill_group(pgid);
    }

    if terminate {
        let core2 = core.clone();
        let id2 = instance_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TERMINATE_AFTER).await;
            terminate_instance(&core2, &id2).await;
        });
    }

    // Waits for the end or the execution timeout; a node that dies meanwhile (`node_dies` writes
    // `<sandbox>/dead`) loses its agent at once: what runs is killed, SSM keeps waiting for it.
    let dead_marker = core.agents.sandbox_dir(&instance_id).join("dead");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cmd.execution_timeout);
    let waited = loop {
        tokio::select! {
            res = child.wait() => break Ok(res),
            _ = tokio::time::sleep_until(deadline) => break Err(()),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if dead_marker.exists() {
                    core.agents.mark_dead(&instance_id);
                    agent_lost(&core, &instance_id);
                }
            }
        }
    };
    let exit = match waited {
        Ok(res) => res.ok().map(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        }),
        Err(_) => {
            sandbox::kill_group(pgid);
            let _ = child.wait().await;
            None
        }
    };
    let stdout = sandbox::read_output(&spec.command_dir.join("stdout"), OUTPUT_LIMIT);
    let stderr = sandbox::read_output(&spec.command_dir.join("stderr"), OUTPUT_LIMIT);
    core.commands.update(&cmd.command_id, &instance_id, |v| {
        if v.status != Status::InProgress || v.agent_lost {
            return;
        }
        v.stdout = stdout;
        match exit {
            Some(0) => {
                v.stderr = stderr;
                v.finish(Status::Success, "Success", 0);
            }
            Some(code) => {
                let mut e = stderr;
                if !e.is_empty() && !e.ends_with('\n') {
                    e.push('\n');
                }
                e.push_str(&format!("failed to run commands: exit status {code}"));
                v.stderr = sandbox::truncate_chars(&e, OUTPUT_LIMIT);
                v.finish(Status::Failed, "Failed", code);
            }
            None => {
                v.stderr = stderr;
                v.finish(Status::TimedOut, "ExecutionTimedOut", STOPPED_EXIT_CODE);
            }
        }
    });
}

/// Terminates an instance in moto (the `terminate_during_command` fault) and lets what ran on it
/// end as SSM reports a lost agent.
pub async fn terminate_instance(core: &Arc<Core>, instance_id: &str) {
    let region = core.agents.get(instance_id).map(|i| i.region);
    let ec2 = region.as_deref().and_then(|r| core.agents.ec2(r));
    match ec2 {
        Some(ec2) => {
            if let Err(e) = ec2
                .terminate_instances()
                .instance_ids(instance_id)
                .send()
                .await
            {
                tracing::warn!(instance_id, error = %crate::agents::error_text(&e), "TerminateInstances in moto failed");
            }
        }
        None => tracing::warn!(instance_id, "no region known for the instance to terminate"),
    }
    core.agents.mark_terminated(instance_id);
    agent_lost(core, instance_id);
}

/// Kills what runs on a gone instance and schedules the delivery timeout of its invocations:
/// without a terminal answer from the agent, SSM marks them `TimedOut` / `DeliveryTimedOut` once
/// `TimeoutSeconds + executionTimeout` have passed since SendCommand.
pub fn agent_lost(core: &Arc<Core>, instance_id: &str) {
    for command_id in core.commands.instance_gone(instance_id) {
        let Some(cmd) = core.commands.command(&command_id) else {
            continue;
        };
        let deadline =
            cmd.requested + Duration::from_secs(cmd.timeout_seconds + cmd.execution_timeout);
        let core2 = core.clone();
        let id2 = instance_id.to_string();
        tokio::spawn(async move {
            let wait = deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            core2.commands.update(&command_id, &id2, |v| {
                if !v.status.is_terminal() {
                    v.finish(Status::TimedOut, "DeliveryTimedOut", -1);
                }
            });
        });
    }
}

/// The node script a command runs, from its `# mecplane-script: <name>` line.
pub fn script_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("# mecplane-script:")
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_script_header() {
        let text =
            "export A='1'\n#!/usr/bin/env bash\n# mecplane-script: join\nset -euo pipefail\n";
        assert_eq!(script_name(text).as_deref(), Some("join"));
        assert_eq!(script_name("echo hi"), None);
    }
}
