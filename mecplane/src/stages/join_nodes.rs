//! Stage `join-control-planes` / `join-workers`: joins the role's nodes to the cluster one at a
//! time (dqlite takes control-plane joins one by one; workers follow the same path so a join
//! failure names one node). Before joining it (re)issues the cluster's token on a member control
//! plane (the first, unless it is being replaced) with a short TTL (`add-node --token`), so no output is scraped and no long-lived token
//! sits on a node. Control planes join without `--worker`, workers with it.

use crate::clock;
use crate::error::StageError;
use crate::microk8s;
use crate::ports::{ClusterStore, Instance, Instances, NodeCommands, Parameters};
use crate::record::{NodeState, Phase, Role};
use crate::resources;
use crate::scripts::Script;
use crate::state::{CreateState, PendingCommand};

use super::commands::{self, Wanted};
use super::{bootstrap, nodes, records, Ports};

/// The stage's name for a role.
pub fn stage(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "join-control-planes",
        Role::Worker => "join-workers",
    }
}

/// Whether a token issued at `issued_at` still has more than half its life left.
fn token_fresh(issued_at: Option<i64>, ttl: u32, now: i64) -> bool {
    issued_at.is_some_and(|t| now - t < i64::from(ttl / 2))
}

/// What one pass of the stage does next: the pure decision, from the state, the role's nodes
/// (`candidates`) and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Finish (or adopt) the command already pending.
    Resume(PendingCommand),
    /// Every candidate has joined: the stage is done.
    Finished,
    /// The token was never issued or has used half its life: (re)issue it before the next join.
    IssueToken,
    /// Join this node (the first candidate not joined yet).
    Join(String),
}

/// Decides the next step: a pending command first, then the next node to join, with a fresh
/// token; nodes join in the order given (index order), one at a time.
pub(crate) fn next_step(state: &CreateState, candidates: &[Instance], now: i64) -> Step {
    if let Some(pending) = &state.command {
        return Step::Resume(pending.clone());
    }
    let Some(next) = candidates
        .iter()
        .find(|i| !state.joined.contains(&i.instance_id))
    else {
        return Step::Finished;
    };
    if token_fresh(state.token_issued_at, state.timing.token_ttl_seconds, now) {
        Step::Join(next.instance_id.clone())
    } else {
        Step::IssueToken
    }
}

struct Ctx<'a> {
    cluster_id: &'a str,
    first: &'a Instance,
    token: &'a str,
    state: &'a CreateState,
    /// The nodes to join (a joining control plane's certificate names its own addresses).
    candidates: &'a [Instance],
    /// The cluster's load balancer's DNS name, when it has one.
    balancer: Option<&'a str>,
}

impl Ctx<'_> {
    fn issue(&self, key: String) -> Wanted {
        Wanted {
            cluster_id: self.cluster_id.to_string(),
            instance_id: self.first.instance_id.clone(),
            script: Script::IssueToken,
            key,
            env: vec![
                ("JOIN_TOKEN", self.token.to_string()),
                ("TOKEN_TTL", self.state.timing.token_ttl_seconds.to_string()),
            ],
            timeout_seconds: 300.min(self.state.timing.command_timeout_seconds),
            secrets: vec![self.token.to_string()],
        }
    }

    fn join(&self, instance_id: &str, role: Role) -> Result<Wanted, StageError> {
        let mut extra = Vec::new();
        // A control plane serves the API too: its certificate carries the same names as the
        // first one's (the load balancer forwards to any of them), with its own addresses.
        if let (Role::ControlPlane, Some(node)) = (
            role,
            self.candidates
                .iter()
                .find(|i| i.instance_id == instance_id),
        ) {
            let sans = nodes::api_sans(node, self.balancer, &self.state.spec.extra_sans);
            extra.push(("EXTRA_SANS", sans.join(",")));
        }
        // Its API server enforces the cluster's Pod Security level (a worker runs none).
        if role == Role::ControlPlane {
            let level = self.state.spec.pod_security.as_str();
            extra.push(("POD_SECURITY", level.to_string()));
        }
        Ok(Wanted {
            cluster_id: self.cluster_id.to_string(),
            instance_id: instance_id.to_string(),
            script: Script::Join,
            key: resources::command_key(self.cluster_id, "join", instance_id),
            env: vec![
                ("MK8S_CHANNEL", self.state.spec.microk8s_channel.clone()),
                (
                    "JOIN_ADDRESS",
                    format!(
                        "{}:{}",
                        nodes::private_ip(self.first)?,
                        microk8s::PORT_CLUSTER_AGENT
                    ),
                ),
                ("JOIN_TOKEN", self.token.to_string()),
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
            ]
            .into_iter()
            .chain(extra)
            .collect(),
            timeout_seconds: self.state.timing.command_timeout_seconds,
            secrets: vec![self.token.to_string()],
        })
    }

    /// The wanted command a pending one belongs to.
    fn resume(&self, pending: &PendingCommand, role: Role) -> Result<Wanted, StageError> {
        if pending.script == Script::IssueToken.name() {
            Ok(self.issue(pending.key.clone()))
        } else {
            self.join(&pending.instance_id, role)
        }
    }
}

/// Runs one poll for `state.target`: finishes what is pending, then starts the next command.
pub async fn run<E: Instances, R: NodeCommands, P: Parameters, S: ClusterStore>(
    ports: &Ports<'_, E, R, P, S>,
    mut state: CreateState,
) -> Result<CreateState, StageError> {
    let (instances, commands, params, store) = (ports.ec2, ports.ssm, ports.secrets, ports.store);
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
    let token_parameter = match state.token_parameter.clone() {
        Some(name) => name,
        None => {
            let name = ports
                .config
                .deployment
                .join_token_parameter(&state.cluster_id);
            bootstrap::ensure_token(params, name).await?
        }
    };
    state.token_parameter = Some(token_parameter.clone());
    let token = params.get_secret(&token_parameter).await?.ok_or_else(|| {
        StageError::Internal(format!(
            "the join token parameter {token_parameter} is missing"
        ))
    })?;
    let first = nodes::anchor(instances, &state).await?;
    let candidates: Vec<Instance> = nodes::live(instances, &state.cluster_id, role)
        .await?
        .into_iter()
        .filter(|i| i.instance_id != first.instance_id)
        .collect();
    let snapshot = state.clone();
    let ctx = Ctx {
        cluster_id: &snapshot.cluster_id,
        first: &first,
        token: &token,
        state: &snapshot,
        candidates: &candidates,
        balancer: record.balancer.as_ref().map(|b| b.dns_name.as_str()),
    };

    // Each pass finishes one command or leaves one running; bounded so a bug cannot spin.
    for _ in 0..(2 * candidates.len() + 4) {
        let wanted = match next_step(&state, &candidates, now) {
            Step::Resume(pending) => ctx.resume(&pending, role)?,
            Step::Finished => {
                state.poll.finish();
                let detail = format!("{} {} node(s) joined", candidates.len(), role.as_str());
                records::note(store, &state.cluster_id, stage, Phase::Finished, detail).await?;
                return Ok(state);
            }
            Step::Join(instance_id) => ctx.join(&instance_id, role)?,
            Step::IssueToken => {
                state.token_issued_at = Some(now);
                ctx.issue(resources::command_key(&state.cluster_id, "token", now))
            }
        };
        let script = wanted.script;
        let instance_id = wanted.instance_id.clone();
        let Some(stdout) = commands::poll(commands, instances, &mut state, wanted, now).await?
        else {
            return Ok(state);
        };
        if script == Script::Join {
            state.joined.push(instance_id.clone());
            records::modify(store, &state.cluster_id, |r| {
                r.set_node_state(&instance_id, NodeState::Joined);
                Ok(true)
            })
            .await?;
            let how = crate::scripts::result_of(&stdout)
                .and_then(|r| r.get("join").cloned())
                .unwrap_or_else(|| "joined".into());
            records::note(
                store,
                &state.cluster_id,
                stage,
                Phase::Progress,
                format!("{instance_id} {how} as {}", role.as_str()),
            )
            .await?;
        }
    }
    Err(StageError::Internal("join made no progress".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn next_step_finishes_pending_work_then_joins_in_order_with_a_fresh_token() {
        let mut state = CreateState::new(
            "c-1".into(),
            fixtures::spec(1, 2),
            crate::state::Timing::default(),
        );
        let ttl = i64::from(state.timing.token_ttl_seconds);
        let nodes = [node("i-a"), node("i-b")];
        // No token yet: issue one first.
        assert_eq!(next_step(&state, &nodes, 1000), Step::IssueToken);
        // A fresh token: join the first node not joined.
        state.token_issued_at = Some(1000);
        assert_eq!(next_step(&state, &nodes, 1001), Step::Join("i-a".into()));
        state.joined.push("i-a".into());
        assert_eq!(next_step(&state, &nodes, 1001), Step::Join("i-b".into()));
        // Half the token's life gone: issue again before joining.
        assert_eq!(next_step(&state, &nodes, 1000 + ttl / 2), Step::IssueToken);
        // A pending command comes first, whatever else is true.
        let pending = PendingCommand {
            command_id: "cmd-1".into(),
            instance_id: "i-b".into(),
            script: "join".into(),
            key: "k".into(),
            sent_at: 1001,
        };
        state.command = Some(pending.clone());
        assert_eq!(next_step(&state, &nodes, 1000 + ttl), Step::Resume(pending));
        state.command = None;
        state.joined.push("i-b".into());
        assert_eq!(next_step(&state, &nodes, 1000 + ttl), Step::Finished);
        assert_eq!(next_step(&state, &[], 0), Step::Finished, "nothing to join");
    }
    use crate::ports::CommandStatus;
    use crate::stages::fixtures;

    async fn drive_to_done(
        c: &crate::fakes::FakeCloud,
        s: &crate::fakes::FakeStore,
        mut state: CreateState,
    ) -> CreateState {
        for _ in 0..20 {
            state = run(&fixtures::ports(c, s), state).await.unwrap();
            if state.poll.done {
                return state;
            }
        }
        panic!("join did not finish");
    }

    #[tokio::test]
    async fn control_planes_join_one_at_a_time_without_worker_flag() {
        let (cloud, store, mut state) = fixtures::online(3, 0).await;
        state.target = Some(Role::ControlPlane);
        let done = drive_to_done(&cloud, &store, state).await;
        assert_eq!(done.joined.len(), 2);
        let joins = cloud.commands_of("join");
        assert_eq!(joins.len(), 2);
        assert!(joins
            .iter()
            .all(|c| c.text.contains("export NODE_ROLE='control-plane'")));
        assert!(
            joins
                .iter()
                .all(|c| c.text.contains("export POD_SECURITY='baseline'")),
            "a control plane's API server enforces the cluster's Pod Security level"
        );
        assert_eq!(
            cloud.commands_of("issue-token").len(),
            1,
            "one fresh token covers both joins"
        );
        let order: Vec<String> = cloud.commands().iter().map(|c| c.script.clone()).collect();
        assert_eq!(order, vec!["issue-token", "join", "join"]);
    }

    #[tokio::test]
    async fn a_retried_poll_never_joins_twice() {
        let (cloud, store, mut state) = fixtures::online(1, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, 2).await;
        state.target = Some(Role::Worker);
        // The commands stay in progress, so each poll leaves one pending.
        cloud.respond_with(|_, _| CommandStatus::Running);
        let first = run(&fixtures::ports(&cloud, &store), state.clone())
            .await
            .unwrap();
        let again = run(&fixtures::ports(&cloud, &store), state).await.unwrap();
        assert_eq!(first.command.as_ref().unwrap().script, "issue-token");
        assert_eq!(again.command.as_ref().unwrap().script, "issue-token");
        cloud.respond_with(fixtures::default_outcome);
        let mut s = first;
        for _ in 0..3 {
            s = run(&fixtures::ports(&cloud, &store), s.clone())
                .await
                .unwrap();
            let _ = run(&fixtures::ports(&cloud, &store), s.clone())
                .await
                .unwrap();
        }
        let joined: Vec<String> = cloud
            .commands_of("join")
            .iter()
            .map(|c| c.instance_id.clone())
            .collect();
        let mut unique = joined.clone();
        unique.dedup();
        assert_eq!(joined, unique, "every node gets exactly one join command");
        assert_eq!(joined.len(), 2);
        assert!(
            cloud
                .commands_of("join")
                .iter()
                .all(|c| !c.text.contains("export POD_SECURITY=")),
            "a worker runs no API server"
        );
    }

    #[tokio::test]
    async fn a_failed_join_names_the_node_and_hides_the_token() {
        let (cloud, store, mut state) = fixtures::online(1, 0).await;
        fixtures::add_workers(&cloud, &store, &mut state, 1).await;
        state.target = Some(Role::Worker);
        cloud.respond_with(|cmd, _| {
            if cmd.script == "join" {
                let token = cmd
                    .text
                    .lines()
                    .find_map(|l| l.strip_prefix("export JOIN_TOKEN="))
                    .unwrap_or("")
                    .trim_matches('\'')
                    .to_string();
                CommandStatus::Failed {
                    status: "Failed".into(),
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: format!("Invalid token {token}\n"),
                }
            } else {
                CommandStatus::Success {
                    stdout: "MECPLANE_RESULT token=issued\n".into(),
                }
            }
        });
        let err = drive_err(&cloud, &store, state).await;
        assert_eq!(err.name(), "CommandFailed");
        assert!(err.to_string().contains("join on i-") && err.to_string().contains("[redacted]"));
        let token = cloud
            .parameters()
            .values()
            .find(|(_, secure)| *secure)
            .unwrap()
            .0
            .clone();
        assert!(!err.to_string().contains(&token));
    }

    async fn drive_err(
        cloud: &crate::fakes::FakeCloud,
        store: &crate::fakes::FakeStore,
        mut state: CreateState,
    ) -> StageError {
        for _ in 0..10 {
            match run(&fixtures::ports(cloud, store), state).await {
                Ok(s) => state = s,
                Err(e) => return e,
            }
        }
        panic!("no error");
    }

    #[test]
    fn tokens_are_reissued_at_half_life() {
        assert!(!token_fresh(None, 600, 1000));
        assert!(token_fresh(Some(1000), 600, 1299));
        assert!(!token_fresh(Some(1000), 600, 1300));
    }
}
