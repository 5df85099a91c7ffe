//! Stage `join-control-planes` / `join-workers`: joins the role's nodes to the cluster one at a
//! time (dqlite takes control-plane joins one by one; workers follow the same path so a join
//! failure names one node). Control planes join without `--worker`, workers with it.
//!
//! No join token is ever in clear outside the two nodes that use it: not in a command's
//! parameters (which `ssm:ListCommands` shows for 30 days), its output, the state, a log or
//! Parameter Store. Each join takes three commands:
//! 1. `join-key` on the joining node makes a one-time RSA key pair there (the private half in a
//!    root-only file) and prints the public half;
//! 2. `issue-token` on a member control plane (the anchor) makes a new random token there,
//!    registers it for a single use (`add-node --token … --token-ttl -1`) and prints it only
//!    sealed to that public key (the `sealed` format);
//! 3. `join` on the node carries the sealed token; the node opens it with its private key, joins
//!    through that control plane and deletes the key.
//!
//! Every command's idempotency key derives from the state the stage was given (the node, the
//! execution, the public key, the sealed token), so a retried poll adopts the command it sent.

use crate::clock;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{ClusterStore, Instance, Instances, NodeCommands, Parameters};
use crate::record::{NodeState, Phase, Role};
use crate::resources;
use crate::scripts::{self, Script};
use crate::sealed;
use crate::state::{CreateState, JoinTicket, PendingCommand, SealedToken};

use super::commands::{self, Wanted};
use super::{nodes, records, Ports};

/// The stage's name for a role.
pub fn stage(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "join-control-planes",
        Role::Worker => "join-workers",
    }
}

/// What one pass of the stage does next: the pure decision, from the state, the role's nodes
/// (`candidates`) and the member control plane joins go through (`anchor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Finish (or adopt) the command already pending.
    Resume(PendingCommand),
    /// Every candidate has joined: the stage is done.
    Finished,
    /// The node makes its one-time join key and prints the public half (`join-key`).
    MakeKey(String),
    /// The anchor makes a new single-use token and seals it to the node's key (`issue-token`):
    /// none was issued for this key yet, or it was issued on another control plane.
    IssueToken(String),
    /// The node joins through the anchor with its sealed token (`join`).
    Join(String),
}

/// Decides the next step: a pending command first, then the next node to join (index order,
/// one at a time) through its key, its token and its join.
pub(crate) fn next_step(state: &CreateState, candidates: &[Instance], anchor: &str) -> Step {
    if let Some(pending) = &state.command {
        return Step::Resume(pending.clone());
    }
    let Some(next) = candidates
        .iter()
        .find(|i| !state.joined.contains(&i.instance_id))
    else {
        return Step::Finished;
    };
    let id = next.instance_id.clone();
    match state.join.as_ref().filter(|t| t.instance_id == id) {
        None => Step::MakeKey(id),
        Some(JoinTicket {
            sealed: Some(sealed),
            ..
        }) if sealed.issuer == anchor => Step::Join(id),
        Some(_) => Step::IssueToken(id),
    }
}

/// What makes this run's commands its own: the update's id, or `create`. A node's key is made
/// once per execution (a failed join fails the execution; the next one makes a new key).
fn run_scope(state: &CreateState) -> &str {
    state.update.as_ref().map_or("create", |u| u.id.as_str())
}

/// The execution timeout of a command of this stage.
fn timeout_of(script: Script, state: &CreateState) -> u32 {
    match script {
        Script::Join => state.timing.command_timeout_seconds,
        _ => 300.min(state.timing.command_timeout_seconds),
    }
}

struct Ctx<'a> {
    cluster_id: &'a str,
    anchor: &'a Instance,
    state: &'a CreateState,
    /// The nodes to join (a joining control plane's certificate names its own addresses).
    candidates: &'a [Instance],
    /// The cluster's load balancer's DNS name, when it has one.
    balancer: Option<&'a str>,
}

impl Ctx<'_> {
    fn wanted(
        &self,
        instance_id: &str,
        script: Script,
        key: String,
        env: Vec<(&'static str, String)>,
    ) -> Wanted {
        Wanted {
            cluster_id: self.cluster_id.to_string(),
            instance_id: instance_id.to_string(),
            script,
            key,
            env,
            timeout_seconds: timeout_of(script, self.state),
            // No token ever reaches the control plane in clear: nothing to cut out.
            secrets: Vec::new(),
        }
    }

    fn make_key(&self, instance_id: &str) -> Wanted {
        let key = resources::command_key(
            self.cluster_id,
            "join-key",
            format!("{instance_id} {}", run_scope(self.state)),
        );
        self.wanted(instance_id, Script::JoinKey, key, Vec::new())
    }

    fn issue(&self, ticket: &JoinTicket) -> Wanted {
        // The key names the joining node's public key: a token sealed to another key is never
        // adopted (and `commands::drive` looks only at the anchor's commands).
        let key = resources::command_key(
            self.cluster_id,
            "token",
            format!(
                "{} {}",
                ticket.instance_id,
                sealed::short_digest(ticket.public_key.as_bytes())
            ),
        );
        let env = vec![("JOIN_KEY", ticket.public_key.clone())];
        self.wanted(&self.anchor.instance_id, Script::IssueToken, key, env)
    }

    fn join(&self, instance_id: &str, sealed: &str, role: Role) -> Result<Wanted, StageError> {
        let mut env = vec![
            ("MK8S_CHANNEL", self.state.spec.microk8s_channel.clone()),
            (
                "JOIN_ADDRESS",
                format!(
                    "{}:{}",
                    nodes::private_ip(self.anchor)?,
                    microk8s::PORT_CLUSTER_AGENT
                ),
            ),
            ("SEALED_TOKEN", sealed.to_string()),
            ("NODE_ROLE", role.as_str().to_string()),
            (
                "WAIT_TIMEOUT",
                self.state
                    .timing
                    .command_timeout_seconds
                    .saturating_sub(60)
                    .max(30)
                    .to_string(),
            ),
        ];
        // A control plane serves the API too: its certificate carries the same names as the
        // first one's (the load balancer forwards to any of them), with its own addresses.
        if let (Role::ControlPlane, Some(node)) = (
            role,
            self.candidates
                .iter()
                .find(|i| i.instance_id == instance_id),
        ) {
            let sans = nodes::api_sans(node, self.balancer, &self.state.spec.extra_sans);
            env.push(("EXTRA_SANS", sans.join(",")));
        }
        // Its API server enforces the cluster's Pod Security level (a worker runs none).
        if role == Role::ControlPlane {
            let level = self.state.spec.pod_security.as_str();
            env.push(("POD_SECURITY", level.to_string()));
        }
        // One sealed token, one join command: a new token is a new command.
        let key = resources::command_key(
            self.cluster_id,
            "join",
            format!("{instance_id} {}", sealed::short_digest(sealed.as_bytes())),
        );
        Ok(self.wanted(instance_id, Script::Join, key, env))
    }

    /// The pending command, to be finished as it was sent (it is never sent again).
    fn resume(&self, pending: &PendingCommand) -> Result<Wanted, StageError> {
        let script = Script::named(&pending.script).ok_or_else(|| {
            StageError::Internal(format!(
                "pending command {} runs an unknown script {}",
                pending.command_id, pending.script
            ))
        })?;
        Ok(self.wanted(
            &pending.instance_id,
            script,
            pending.key.clone(),
            Vec::new(),
        ))
    }
}

/// What a finished command of the stage changes in the state; answers the node that joined.
fn finished(
    state: &mut CreateState,
    script: Script,
    instance_id: &str,
    stdout: &str,
) -> Result<Option<String>, StageError> {
    match script {
        Script::JoinKey => {
            let public_key = scripts::result_of(stdout)
                .and_then(|r| r.get("public-key").cloned())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    StageError::CommandFailed(format!(
                        "join-key on {instance_id} printed no public key"
                    ))
                })?;
            state.join = Some(JoinTicket {
                instance_id: instance_id.to_string(),
                public_key,
                sealed: None,
            });
            Ok(None)
        }
        Script::IssueToken => {
            // A command sent for no join under way (a state from before sealed tokens, whose
            // token was registered in clear) changes nothing.
            let Some(ticket) = state.join.as_mut() else {
                return Ok(None);
            };
            let line = sealed::sealed_line(stdout).ok_or_else(|| {
                StageError::CommandFailed(format!(
                    "issue-token on {instance_id} printed no sealed token"
                ))
            })?;
            ticket.sealed = Some(SealedToken {
                issuer: instance_id.to_string(),
                line: line.to_string(),
            });
            Ok(None)
        }
        Script::Join => {
            state.join = None;
            if !state.joined.iter().any(|j| j == instance_id) {
                state.joined.push(instance_id.to_string());
            }
            Ok(Some(instance_id.to_string()))
        }
        _ => Ok(None),
    }
}

/// Runs one poll for `state.target`: finishes what is pending, then starts the next command.
pub async fn run<E: Instances, R: NodeCommands, P: Parameters, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, store) = (ports.ec2, ports.ssm, ports.store);
    let role = state.target_role();
    let stage = stage(role);
    let record = records::enter(store, &state.cluster_id, stage).await?;
    let now = clock::now_epoch();
    let total = state.spec.control_planes + state.spec.workers;
    state.poll.tick(
        now,
        state
            .timing
            .command_timeout_seconds
            .saturating_mul(total + 1),
    );
    let anchor = nodes::anchor(instances, &state).await?;
    let candidates: Vec<Instance> = nodes::live(instances, &state.cluster_id, role)
        .await?
        .into_iter()
        .filter(|i| i.instance_id != anchor.instance_id)
        .collect();
    let snapshot = state.clone();
    let ctx = Ctx {
        cluster_id: &snapshot.cluster_id,
        anchor: &anchor,
        state: &snapshot,
        candidates: &candidates,
        balancer: record.balancer.as_ref().map(|b| b.dns_name.as_str()),
    };

    // Each pass finishes one command or leaves one running; bounded so a bug cannot spin.
    for _ in 0..(4 * candidates.len() + 4) {
        let wanted = match next_step(&state, &candidates, &anchor.instance_id) {
            Step::Resume(pending) => ctx.resume(&pending)?,
            Step::Finished => {
                state.poll.finish();
                state.join = None;
                let detail = format!("{} {} node(s) joined", candidates.len(), role.as_str());
                records::note(store, &state.cluster_id, stage, Phase::Finished, detail).await?;
                return Ok(state);
            }
            Step::MakeKey(instance_id) => ctx.make_key(&instance_id),
            Step::IssueToken(_) => {
                let ticket = state.join.clone().expect("next_step issues for a ticket");
                ctx.issue(&ticket)
            }
            Step::Join(instance_id) => {
                let line = state
                    .join
                    .as_ref()
                    .and_then(|t| t.sealed.as_ref())
                    .map(|s| s.line.clone())
                    .expect("next_step joins with a sealed token");
                ctx.join(&instance_id, &line, role)?
            }
        };
        let script = wanted.script;
        let instance_id = wanted.instance_id.clone();
        let Some(stdout) = commands::poll(commands, instances, &mut state, wanted, now).await?
        else {
            return Ok(state);
        };
        if let Some(joined) = finished(&mut state, script, &instance_id, &stdout)? {
            records::modify(store, &state.cluster_id, |r| {
                r.set_node_state(&joined, NodeState::Joined);
                Ok(true)
            })
            .await?;
            let how = scripts::result_of(&stdout)
                .and_then(|r| r.get("join").cloned())
                .unwrap_or_else(|| "joined".into());
            records::note(
                store,
                &state.cluster_id,
                stage,
                Phase::Progress,
                format!("{joined} {how} as {}", role.as_str()),
            )
            .await?;
        }
    }
    Err(StageError::Internal("join made no progress".into()))
}

/// How the in-memory fakes answer this stage's key and token commands, as the scripts do on a
/// node: `join-key` prints the public half of a new key pair, `issue-token` a random token
/// sealed to `JOIN_KEY`.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn fake_answer(script: &str, text: &str) -> Option<crate::ports::CommandStatus> {
    use crate::ports::CommandStatus;
    let stdout = match script {
        "join-key" => {
            let key = sealed::TransportKey::generate().ok()?;
            format!(
                "MECPLANE_RESULT join-key=ready public-key={}\n",
                key.public_base64()
            )
        }
        "issue-token" => {
            let public = text
                .lines()
                .find_map(|l| l.strip_prefix("export JOIN_KEY="))?
                .trim_matches('\'');
            let token: String = (0..16)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            let line = sealed::seal(public, &token).ok()?;
            format!("{line}\nMECPLANE_RESULT token=sealed\n")
        }
        _ => return None,
    };
    Some(CommandStatus::Success { stdout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeCloud, FakeCommand, FakeStore};
    use crate::ports::CommandStatus;
    use crate::stages::fixtures;
    use crate::state::UpdateInfo;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    fn node(id: &str) -> Instance {
        Instance {
            instance_id: id.into(),
            role: Some(Role::Worker),
            index: None,
            state: crate::ports::InstanceState::Running,
            private_ip: None,
            public_ip: None,
            carrier_ip: None,
            private_dns: None,
            zone: None,
            subnet_id: None,
        }
    }

    fn ticket(instance_id: &str, issuer: Option<&str>) -> Option<JoinTicket> {
        Some(JoinTicket {
            instance_id: instance_id.into(),
            public_key: format!("key-of-{instance_id}"),
            sealed: issuer.map(|i| SealedToken {
                issuer: i.into(),
                line: format!("MECPLANE_SEALED v1 a b c {instance_id}"),
            }),
        })
    }

    #[test]
    fn next_step_makes_a_key_then_a_token_then_joins_each_node_in_order() {
        let mut state = CreateState::new(
            "c-1".into(),
            fixtures::spec(1, 2),
            crate::state::Timing::default(),
        );
        let nodes = [node("i-a"), node("i-b")];
        // Nothing yet: the first node makes its key.
        assert_eq!(
            next_step(&state, &nodes, "i-cp"),
            Step::MakeKey("i-a".into())
        );
        // Its public key is known: the anchor issues a token sealed to it.
        state.join = ticket("i-a", None);
        assert_eq!(
            next_step(&state, &nodes, "i-cp"),
            Step::IssueToken("i-a".into())
        );
        // Sealed by the anchor: the node joins through it.
        state.join = ticket("i-a", Some("i-cp"));
        assert_eq!(next_step(&state, &nodes, "i-cp"), Step::Join("i-a".into()));
        // Sealed by a control plane that is no longer the anchor (a MicroK8s token is known only
        // where it was added): a new token from the anchor, sealed to the same key.
        assert_eq!(
            next_step(&state, &nodes, "i-cp2"),
            Step::IssueToken("i-a".into())
        );
        // The next node never reuses another node's key or token.
        state.joined.push("i-a".into());
        assert_eq!(
            next_step(&state, &nodes, "i-cp"),
            Step::MakeKey("i-b".into())
        );
        // A pending command comes first, whatever else is true.
        let pending = PendingCommand {
            command_id: "cmd-1".into(),
            instance_id: "i-b".into(),
            script: "join".into(),
            key: "k".into(),
            sent_at: 1001,
        };
        state.command = Some(pending.clone());
        assert_eq!(next_step(&state, &nodes, "i-cp"), Step::Resume(pending));
        state.command = None;
        state.joined.push("i-b".into());
        assert_eq!(next_step(&state, &nodes, "i-cp"), Step::Finished);
        assert_eq!(
            next_step(&state, &[], "i-cp"),
            Step::Finished,
            "nothing to join"
        );
    }

    #[test]
    fn finished_commands_fill_the_ticket_and_a_join_ends_it() {
        let mut state = CreateState::new(
            "c-1".into(),
            fixtures::spec(1, 1),
            crate::state::Timing::default(),
        );
        // An issue-token command of a state from before sealed tokens (no ticket) changes nothing.
        assert_eq!(
            finished(
                &mut state,
                Script::IssueToken,
                "i-cp",
                "MECPLANE_RESULT token=issued\n"
            )
            .unwrap(),
            None
        );
        assert_eq!(state.join, None);
        let err =
            finished(&mut state, Script::JoinKey, "i-a", "MECPLANE_RESULT x=y\n").unwrap_err();
        assert_eq!(err.name(), "CommandFailed");
        assert!(
            err.to_string()
                .contains("join-key on i-a printed no public key"),
            "{err}"
        );
        finished(
            &mut state,
            Script::JoinKey,
            "i-a",
            "MECPLANE_RESULT join-key=ready public-key=QUJD==\n",
        )
        .unwrap();
        assert_eq!(state.join.as_ref().unwrap().public_key, "QUJD==");
        let err = finished(
            &mut state,
            Script::IssueToken,
            "i-cp",
            "MECPLANE_RESULT token=issued\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("printed no sealed token"), "{err}");
        finished(
            &mut state,
            Script::IssueToken,
            "i-cp",
            "noise\nMECPLANE_SEALED v1 a b c d\nMECPLANE_RESULT token=sealed\n",
        )
        .unwrap();
        let sealed = state.join.as_ref().unwrap().sealed.clone().unwrap();
        assert_eq!(
            (sealed.issuer.as_str(), sealed.line.as_str()),
            ("i-cp", "MECPLANE_SEALED v1 a b c d")
        );
        for _ in 0..2 {
            assert_eq!(
                finished(
                    &mut state,
                    Script::Join,
                    "i-a",
                    "MECPLANE_RESULT join=joined\n"
                )
                .unwrap(),
                Some("i-a".into())
            );
        }
        assert_eq!(
            (state.join.as_ref(), state.joined.as_slice()),
            (None, &["i-a".to_string()][..])
        );
    }

    /// What the nodes hold, as the fake answers for them: each node's one-time key, the tokens
    /// registered and not used yet, and every token ever made.
    #[derive(Default)]
    struct Nodes {
        keys: BTreeMap<String, sealed::TransportKey>,
        open: BTreeSet<String>,
        made: Vec<String>,
        joined: Vec<String>,
    }

    fn env_of(cmd: &FakeCommand, name: &str) -> String {
        cmd.text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_default()
            .trim_matches('\'')
            .to_string()
    }

    /// Answers the join commands as the scripts and MicroK8s do: join-key keeps a private key on
    /// its node, issue-token registers a single-use token and seals it to JOIN_KEY, join opens
    /// SEALED_TOKEN with its node's key (and forgets the key) and consumes the token.
    fn emulate_nodes(cloud: &FakeCloud) -> Arc<Mutex<Nodes>> {
        let nodes = Arc::new(Mutex::new(Nodes::default()));
        let shared = nodes.clone();
        cloud.respond_with(move |cmd, all| {
            let mut n = shared.lock().unwrap();
            let fail = |why: &str| CommandStatus::Failed {
                status: "Failed".into(),
                exit_code: 1,
                stdout: String::new(),
                stderr: format!("{}: {why}\n", cmd.script),
            };
            match cmd.script.as_str() {
                "join-key" => {
                    let key = n
                        .keys
                        .entry(cmd.instance_id.clone())
                        .or_insert_with(|| sealed::TransportKey::generate().unwrap());
                    CommandStatus::Success {
                        stdout: format!(
                            "MECPLANE_RESULT join-key=ready public-key={}\n",
                            key.public_base64()
                        ),
                    }
                }
                "issue-token" => {
                    let token: String = (0..16)
                        .map(|_| format!("{:02x}", rand::random::<u8>()))
                        .collect();
                    let line = sealed::seal(&env_of(cmd, "JOIN_KEY"), &token).unwrap();
                    n.open.insert(token.clone());
                    n.made.push(token);
                    CommandStatus::Success {
                        stdout: format!("{line}\nMECPLANE_RESULT token=sealed\n"),
                    }
                }
                "join" => {
                    let Some(key) = n.keys.remove(&cmd.instance_id) else {
                        return fail("this node has no join key");
                    };
                    let Ok(token) = key.open(&env_of(cmd, "SEALED_TOKEN")) else {
                        return fail("the token is not sealed to this node's join key");
                    };
                    if !n.open.remove(&token) {
                        return fail("Connection failed. Invalid token (500).");
                    }
                    n.joined.push(cmd.instance_id.clone());
                    CommandStatus::Success {
                        stdout: "MECPLANE_RESULT join=joined\n".into(),
                    }
                }
                _ => fixtures::default_outcome(cmd, all),
            }
        });
        nodes
    }

    async fn drive_to_done(c: &FakeCloud, s: &FakeStore, mut state: CreateState) -> CreateState {
        for _ in 0..30 {
            state = run(&fixtures::ports(c, s), state).await.unwrap();
            if state.poll.done {
                return state;
            }
        }
        panic!("join did not finish");
    }

    #[tokio::test]
    async fn control_planes_join_one_at_a_time_each_with_its_own_sealed_single_use_token() {
        let (cloud, store, mut state) = fixtures::online(3, 0).await;
        state.target = Some(Role::ControlPlane);
        let nodes = emulate_nodes(&cloud);
        let done = drive_to_done(&cloud, &store, state).await;
        assert_eq!(done.joined.len(), 2);
        assert_eq!(done.join, None);
        let order: Vec<String> = cloud.commands().iter().map(|c| c.script.clone()).collect();
        assert_eq!(
            order,
            [
                "join-key",
                "issue-token",
                "join",
                "join-key",
                "issue-token",
                "join"
            ]
        );
        let joins = cloud.commands_of("join");
        assert!(joins
            .iter()
            .all(|c| c.text.contains("export NODE_ROLE='control-plane'")));
        assert!(
            joins
                .iter()
                .all(|c| c.text.contains("export POD_SECURITY='baseline'")),
            "a control plane's API server enforces the cluster's Pod Security level"
        );
        // Every join used a token of its own, made for it, once; none is left to use.
        {
            let n = nodes.lock().unwrap();
            assert_eq!(n.made.len(), 2);
            assert!(n.open.is_empty(), "every token issued was consumed");
            assert!(n.keys.is_empty(), "every join key was used up");
            // No token is in any command's parameters, the state, or Parameter Store.
            let state_json = serde_json::to_string(&done).unwrap();
            for token in &n.made {
                assert!(cloud
                    .commands()
                    .iter()
                    .all(|c| !c.text.contains(token.as_str())));
                assert!(!state_json.contains(token.as_str()));
            }
        }
        assert!(!cloud.parameters().values().any(|(_, secure)| *secure));
        // The issue-token commands run on the anchor and carry the joining node's public key.
        let anchor = nodes::first_control_plane(&cloud, &done.cluster_id)
            .await
            .unwrap();
        for (issue, join) in cloud.commands_of("issue-token").iter().zip(&joins) {
            assert_eq!(issue.instance_id, anchor.instance_id);
            assert!(join.text.contains(&format!(
                "export JOIN_ADDRESS='{}:25000'",
                anchor.private_ip.clone().unwrap()
            )));
        }
    }

    #[tokio::test]
    async fn a_retried_poll_never_sends_a_command_twice() {
        let (cloud, store, mut state) = fixtures::online(1, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, 2).await;
        state.target = Some(Role::Worker);
        // The commands stay in progress, so each poll leaves one pending.
        cloud.respond_with(|_, _| CommandStatus::Running);
        let first = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        let again = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert_eq!(first.command.as_ref().unwrap().script, "join-key");
        assert_eq!(
            first.command, again.command,
            "the retry adopted the command"
        );
        let nodes = emulate_nodes(&cloud);
        let mut s = first;
        for _ in 0..12 {
            // Each poll runs twice with the same input, as a retried Lambda would.
            let _ = run(&fixtures::ports(&cloud, &store), s.clone())
                .await
                .unwrap();
            s = run(&fixtures::ports(&cloud, &store), s.clone())
                .await
                .unwrap();
            if s.poll.done {
                break;
            }
        }
        assert!(s.poll.done);
        for script in ["join-key", "issue-token", "join"] {
            let per_node: Vec<String> = cloud
                .commands_of(script)
                .iter()
                .map(|c| c.text.clone())
                .collect();
            assert_eq!(per_node.len(), 2, "{script}: one command per node");
        }
        assert!(
            cloud
                .commands_of("join")
                .iter()
                .all(|c| !c.text.contains("export POD_SECURITY=")),
            "a worker runs no API server"
        );
        let n = nodes.lock().unwrap();
        assert_eq!(n.joined.len(), 2);
        assert!(n.open.is_empty());
    }

    #[tokio::test]
    async fn a_failed_join_names_the_node_and_the_next_execution_starts_with_a_new_key() {
        let (cloud, store, mut state) = fixtures::online(1, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, 1).await;
        state.target = Some(Role::Worker);
        fixtures::fail_script(
            &cloud,
            "join",
            "join: microk8s join 10.0.0.1:25000 as worker failed",
        );
        let err = fixtures::until_failure(state.clone(), 10, |s| {
            let (cloud, store) = (&cloud, &store);
            async move { run(&fixtures::ports(cloud, store), s).await }
        })
        .await;
        assert_eq!(err.name(), "CommandFailed");
        assert!(err.to_string().contains("join on i-"), "{err}");
        // The next update's run makes a new key (the token was used up by the failed attempt):
        // none of its commands is adopted from the failed run.
        emulate_nodes(&cloud);
        state.update = Some(UpdateInfo {
            id: "u-0000000000000002".into(),
            route: crate::state::UpdateRoute::Up,
            from: 0,
            to: 1,
            remove: None,
            removed: Vec::new(),
            upgrade: None,
            addons: None,
        });
        state.joined = vec![
            nodes::first_control_plane(&cloud, &state.cluster_id)
                .await
                .unwrap()
                .instance_id,
        ];
        let done = drive_to_done(&cloud, &store, state).await;
        assert_eq!(done.joined.len(), 2);
        assert_eq!(cloud.commands_of("join-key").len(), 2);
        assert_eq!(cloud.commands_of("issue-token").len(), 2);
        assert_eq!(cloud.commands_of("join").len(), 2);
    }

    #[tokio::test]
    async fn a_token_sealed_to_another_key_is_refused_by_the_node() {
        let (cloud, store, mut state) = fixtures::online(1, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, 1).await;
        state.target = Some(Role::Worker);
        let nodes = emulate_nodes(&cloud);
        // A ticket whose sealed token was made for another key (a stale or forged state).
        let worker = nodes::live(&cloud, &state.cluster_id, Role::Worker)
            .await
            .unwrap()[0]
            .instance_id
            .clone();
        let anchor = nodes::first_control_plane(&cloud, &state.cluster_id)
            .await
            .unwrap();
        nodes
            .lock()
            .unwrap()
            .keys
            .insert(worker.clone(), sealed::TransportKey::generate().unwrap());
        let other = sealed::TransportKey::generate().unwrap();
        state.join = Some(JoinTicket {
            instance_id: worker,
            public_key: other.public_base64(),
            sealed: Some(SealedToken {
                issuer: anchor.instance_id,
                line: sealed::seal(&other.public_base64(), &"0".repeat(32)).unwrap(),
            }),
        });
        let err = fixtures::until_failure(state, 10, |s| {
            let (cloud, store) = (&cloud, &store);
            async move { run(&fixtures::ports(cloud, store), s).await }
        })
        .await;
        assert!(
            err.to_string()
                .contains("not sealed to this node's join key"),
            "{err}"
        );
    }
}
