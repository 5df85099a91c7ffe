//! The state passed between Step Functions states: one typed struct per state machine
//! ([`CreateState`], [`TeardownState`]) that every stage function takes and returns whole, plus the
//! inputs a person or the API starts an execution with. Secrets never live here: the state holds
//! parameter names, not tokens or kubeconfigs, because the execution history keeps every state.

use serde::{Deserialize, Serialize};

use crate::record::Role;
use crate::spec::{ClusterRequest, ClusterSpec, ValidationError};

/// How long to wait between polls and when to give up. Comes from the execution input, so the
/// local stack can poll every second while a deployed stack polls every ten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// Seconds of every Wait state (`SecondsPath`).
    pub poll_seconds: u32,
    /// Deadline for instances to run with their SSM agent online.
    pub nodes_timeout_seconds: u32,
    /// Execution timeout of each node command.
    pub command_timeout_seconds: u32,
    /// Deadline for all nodes to report Ready.
    pub ready_timeout_seconds: u32,
    /// Not used since join tokens are single-use and travel sealed (`join_nodes`); still read
    /// and checked so inputs that set it keep working.
    pub token_ttl_seconds: u32,
    /// Deadline for instances to terminate.
    pub terminate_timeout_seconds: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll_seconds: 10,
            nodes_timeout_seconds: 900,
            command_timeout_seconds: 900,
            ready_timeout_seconds: 600,
            token_ttl_seconds: 300,
            terminate_timeout_seconds: 900,
        }
    }
}

impl Timing {
    /// Rejects timings that would make a loop spin or never end.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let checks = [
            ("timing.poll_seconds", self.poll_seconds, 1, 300),
            (
                "timing.nodes_timeout_seconds",
                self.nodes_timeout_seconds,
                1,
                7200,
            ),
            (
                "timing.command_timeout_seconds",
                self.command_timeout_seconds,
                1,
                3600,
            ),
            (
                "timing.ready_timeout_seconds",
                self.ready_timeout_seconds,
                1,
                7200,
            ),
            (
                "timing.token_ttl_seconds",
                self.token_ttl_seconds,
                30,
                86400,
            ),
            (
                "timing.terminate_timeout_seconds",
                self.terminate_timeout_seconds,
                1,
                7200,
            ),
        ];
        for (field, value, low, high) in checks {
            if !(low..=high).contains(&value) {
                return Err(ValidationError {
                    field: field.into(),
                    message: format!("must be between {low} and {high}"),
                });
            }
        }
        Ok(())
    }
}

/// Progress of a polling stage; the Choice after each polling Task reads `done`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Poll {
    pub done: bool,
    /// Epoch seconds after which the stage fails with a named error.
    pub deadline: Option<i64>,
    /// How many times the stage has polled.
    pub polls: u32,
}

impl Poll {
    /// Starts the deadline on the first poll and counts the poll.
    pub fn tick(&mut self, now: i64, timeout_seconds: u32) {
        if self.deadline.is_none() {
            self.deadline = Some(now + i64::from(timeout_seconds));
        }
        self.done = false;
        self.polls += 1;
    }

    /// Whether the deadline has passed.
    pub fn expired(&self, now: i64) -> bool {
        self.deadline.is_some_and(|d| now > d)
    }

    /// Marks the stage done and clears the deadline for the next polling stage.
    pub fn finish(&mut self) {
        *self = Poll {
            done: true,
            deadline: None,
            polls: 0,
        };
    }
}

/// A node command sent and not yet seen to finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCommand {
    pub command_id: String,
    pub instance_id: String,
    /// The node script's name (`bootstrap`, `join`, …).
    pub script: String,
    /// The idempotency key written as the command's comment: the same key is never sent twice.
    pub key: String,
    /// When it was sent (epoch seconds): a command not finished by its execution timeout plus a
    /// grace period has been lost with its instance.
    pub sent_at: i64,
}

/// One node's join, as far as it has come, without a secret: the public half of the one-time
/// RSA key the node made for it (the private half never leaves the node and is deleted after the
/// join) and, once a member control plane has made and registered a single-use token, that token
/// sealed to the key (`sealed` format): only the joining node can open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTicket {
    /// The joining node.
    pub instance_id: String,
    /// Base64 X.509 SubjectPublicKeyInfo DER of the node's one-time RSA key.
    pub public_key: String,
    #[serde(default)]
    pub sealed: Option<SealedToken>,
}

/// A join token sealed to a joining node's key by the control plane that registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedToken {
    /// The control plane that made and registered the token: the node joins through it (a
    /// MicroK8s token is known only to the node it was added on).
    pub issuer: String,
    /// The `MECPLANE_SEALED v1 …` line its issue-token command printed.
    pub line: String,
}

/// The error a `Catch` stores at `$.error`, as Step Functions writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl StepError {
    /// The human-readable reason: the `errorMessage` inside a Lambda error's cause, or the cause;
    /// without ARNs or account ids (a cause from Lambda or Step Functions itself may carry them).
    pub fn reason(&self) -> String {
        #[derive(Deserialize)]
        struct LambdaCause {
            #[serde(rename = "errorMessage")]
            error_message: String,
        }
        let reason = serde_json::from_str::<LambdaCause>(&self.cause)
            .map(|c| c.error_message)
            .unwrap_or_else(|_| self.cause.clone());
        crate::redact::aws_details(&reason)
    }
}

/// The create state machine's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateState {
    pub cluster_id: String,
    pub spec: ClusterSpec,
    #[serde(default)]
    pub timing: Timing,
    /// The role the next launch/await/join stage works on (set by the machine's Pass states).
    #[serde(default)]
    pub target: Option<Role>,
    #[serde(default)]
    pub ami_id: Option<String>,
    #[serde(default)]
    pub security_group_id: Option<String>,
    /// The join under way (join stages): the joining node's public key and, once issued, its
    /// sealed token. Nothing in it is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinTicket>,
    /// Instances that have joined the cluster (the first control plane bootstraps, it does not join).
    #[serde(default)]
    pub joined: Vec<String>,
    #[serde(default)]
    pub command: Option<PendingCommand>,
    #[serde(default)]
    pub poll: Poll,
    #[serde(default)]
    pub kubeconfig_parameter: Option<String>,
    /// Set by a `Catch`.
    #[serde(default)]
    pub error: Option<StepError>,
    /// Set when the state works on an update of a live cluster (the update state machine), not
    /// on a create. Absent from a create's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateInfo>,
}

impl CreateState {
    /// A fresh state for a registered cluster.
    pub fn new(cluster_id: String, spec: ClusterSpec, timing: Timing) -> Self {
        CreateState {
            cluster_id,
            spec,
            timing,
            target: None,
            ami_id: None,
            security_group_id: None,
            join: None,
            joined: Vec::new(),
            command: None,
            poll: Poll::default(),
            kubeconfig_parameter: None,
            error: None,
            update: None,
        }
    }

    /// The role the current stage works on; the state machine sets it before each role stage.
    pub fn target_role(&self) -> Role {
        self.target.unwrap_or(Role::ControlPlane)
    }
}

/// Which branch of the update state machine runs; its Choice reads it (`$.update.route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateRoute {
    /// Workers are launched and joined.
    Up,
    /// Workers are drained, removed and terminated.
    Down,
    /// Nodes are upgraded one at a time (`upgrade-nodes`).
    Upgrade,
    /// Add-ons are disabled and enabled on a control plane (`apply-addons`).
    Addons,
    /// One node is removed and terminated (`remove-workers` with the node chosen), then a new one
    /// with its role and index launched and joined.
    Replace,
    /// The security group's rules are made those of the new `exposed_ports` (`security-group`).
    Ports,
    /// Nothing to do but record the update as done.
    None,
}

impl UpdateRoute {
    /// The route of a scale from `from` workers to `to`.
    pub fn of_scale(from: u32, to: u32) -> UpdateRoute {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => UpdateRoute::Up,
            std::cmp::Ordering::Less => UpdateRoute::Down,
            std::cmp::Ordering::Equal => UpdateRoute::None,
        }
    }
}

/// The update a [`CreateState`] works on (the update state machine's part of the state): which
/// update of the record, its route, and how far each kind of change has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateInfo {
    /// The record's update id (`u-…`).
    pub id: String,
    pub route: UpdateRoute,
    /// A scale: the workers it goes from and to (the workers of the cluster otherwise).
    pub from: u32,
    pub to: u32,
    /// A scale down: the workers chosen for removal (instance ids, highest index first), once
    /// chosen.
    #[serde(default)]
    pub remove: Option<Vec<String>>,
    /// A scale down: the workers already drained and removed from the cluster.
    #[serde(default)]
    pub removed: Vec<String>,
    /// An upgrade's rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Rollout>,
    /// An add-on change: the names to disable and the entries to enable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addons: Option<AddonPlan>,
}

/// Where one node's upgrade is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStep {
    /// Cordon and drain it (from a control plane).
    #[default]
    Drain,
    /// `snap refresh` it to the new channel and wait until MicroK8s is ready (on the node).
    Refresh,
    /// Uncordon it and wait until Kubernetes reports it Ready (from a control plane).
    Uncordon,
}

/// An upgrade's rollout: the nodes in order (control planes first, then workers, each by
/// index), taken in batches (a control plane alone, up to `max_unavailable` workers together),
/// each batch through the three steps node by node, and those done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub from: String,
    pub to: String,
    /// Workers out of service at once (at least 1).
    #[serde(default = "one")]
    pub max_unavailable: u32,
    /// Instance ids, once chosen (nodes already on `to` are left out).
    #[serde(default)]
    pub order: Option<Vec<String>>,
    #[serde(default)]
    pub done: Vec<String>,
    /// The nodes being upgraded together.
    #[serde(default)]
    pub batch: Vec<String>,
    /// The step the batch is at, and its nodes through it already.
    #[serde(default)]
    pub step: RolloutStep,
    #[serde(default)]
    pub stepped: Vec<String>,
    /// The node whose refresh failed and why: the batch is put back into service (each node on the
    /// version it runs) before the rollout stops.
    #[serde(default)]
    pub failed: Option<(String, String)>,
}

fn one() -> u32 {
    1
}

impl Rollout {
    /// The node being acted on: the first of the batch not through the step yet.
    pub fn current(&self) -> Option<&String> {
        self.batch.iter().find(|id| !self.stepped.contains(id))
    }
}

/// An add-on change: what `apply-addons` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddonPlan {
    /// Names to `microk8s disable`.
    pub disable: Vec<String>,
    /// Entries (`name` or `name:args`) to `microk8s enable`.
    pub enable: Vec<String>,
}

/// The update state machine's input, as the API starts it (`<cluster id>-update-<update id>`):
/// `{"cluster_id", "update_id", "region"}`, and optionally the `timing` of its polls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateInput {
    pub cluster_id: String,
    pub update_id: String,
    /// The cluster's region (informative: the record says where the cluster lives).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub timing: Option<Timing>,
}

/// What the begin-update stage receives: the execution input and the execution's ARN.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginUpdateEvent {
    pub input: serde_json::Value,
    pub execution_arn: String,
}

/// The update execution's output: what the cluster is now, never a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateOutput {
    pub cluster_id: String,
    pub update_id: String,
    pub status: crate::record::Status,
    pub update_status: crate::record::UpdateStatus,
    pub workers: u32,
    pub nodes: usize,
}

/// How an execution of the create state machine may be started.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateInput {
    /// Started by the API after it registered the record.
    Registered {
        cluster_id: String,
        spec: ClusterSpec,
        timing: Timing,
    },
    /// Started by hand (the console): `{"spec": {...}, "timing": {...}}`.
    Request {
        spec: ClusterRequest,
        timing: Timing,
    },
}

impl CreateInput {
    /// Reads an execution input: the API's `{cluster_id, spec, timing}`, a console
    /// `{spec, timing}`, or a bare spec `{name, workers, ...}`. A bad input names the field.
    pub fn parse(raw: &serde_json::Value) -> Result<CreateInput, ValidationError> {
        let bad = |field: &str, e: serde_json::Error| ValidationError {
            field: field.into(),
            message: e.to_string(),
        };
        let obj = raw.as_object().ok_or_else(|| ValidationError {
            field: "input".into(),
            message: "must be a JSON object: a cluster spec, or {\"spec\": {...}}".into(),
        })?;
        let timing = match obj.get("timing") {
            Some(t) => serde_json::from_value::<Timing>(t.clone()).map_err(|e| bad("timing", e))?,
            None => Timing::default(),
        };
        timing.validate()?;
        if let Some(id) = obj.get("cluster_id") {
            let cluster_id: String =
                serde_json::from_value(id.clone()).map_err(|e| bad("cluster_id", e))?;
            let spec = obj.get("spec").ok_or_else(|| ValidationError {
                field: "spec".into(),
                message: "is required".into(),
            })?;
            let spec: ClusterSpec =
                serde_json::from_value(spec.clone()).map_err(|e| bad("spec", e))?;
            return Ok(CreateInput::Registered {
                cluster_id,
                spec,
                timing,
            });
        }
        let spec_value = match obj.get("spec") {
            Some(spec) => spec.clone(),
            None => {
                let mut bare = obj.clone();
                bare.remove("timing");
                serde_json::Value::Object(bare)
            }
        };
        let spec: ClusterRequest =
            serde_json::from_value(spec_value).map_err(|e| bad("spec", e))?;
        Ok(CreateInput::Request { spec, timing })
    }
}

/// What the register stage receives: the execution input and the execution's ARN (`$$.Execution.Id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterEvent {
    pub input: serde_json::Value,
    pub execution_arn: String,
}

/// Why resources are being torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeardownReason {
    /// The user deleted the cluster: the record ends `DELETED`.
    Delete,
    /// The create failed: the record stays `FAILED`.
    CreateFailed,
}

/// The teardown state: the delete state machine's, and the create machine's failure path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeardownState {
    pub cluster_id: String,
    pub reason: TeardownReason,
    /// The cluster's region (its instances and security group live there); empty means the
    /// control plane's own region.
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub poll: Poll,
    /// Keep the cloud resources (a failed create with `retain_on_failure`).
    #[serde(default)]
    pub retain: bool,
    /// The failure being cleaned up after; the machine's final `Fail` state reports it.
    #[serde(default)]
    pub error: Option<StepError>,
    /// Set by a cleanup step's `Catch`: removing what was made failed too.
    #[serde(default)]
    pub cleanup_error: Option<StepError>,
}

/// What `mark-failed` receives: the create state a stage's `Catch` passed on (the create failed),
/// or the teardown state a cleanup step's `Catch` passed on (removing what was made failed too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FailedInput {
    /// A teardown state (it has `reason`, which a create state never has).
    Cleanup(TeardownState),
    Create(Box<CreateState>),
}

/// The delete state machine's input: `{"id": ...}` or `{"name": ...}`, from the API or the console.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub timing: Option<Timing>,
    /// `create-failed`: remove the resources of a `FAILED` cluster and leave the record `FAILED`
    /// (the reconcile's teardown of a create that ended without a result); default `delete`.
    #[serde(default)]
    pub reason: Option<TeardownReason>,
}

/// What the begin-delete stage receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginDeleteEvent {
    pub input: serde_json::Value,
    pub execution_arn: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_input_accepts_the_three_shapes() {
        let bare = CreateInput::parse(&json!({"name": "edge", "workers": 2})).unwrap();
        assert!(matches!(bare, CreateInput::Request { ref spec, .. } if spec.workers == Some(2)));
        let wrapped =
            CreateInput::parse(&json!({"spec": {"name": "edge"}, "timing": {"poll_seconds": 1}}))
                .unwrap();
        assert!(
            matches!(wrapped, CreateInput::Request { ref timing, .. } if timing.poll_seconds == 1)
        );
        let err = CreateInput::parse(&json!({"name": "edge", "wrokers": 2})).unwrap_err();
        assert_eq!(err.field, "spec");
        assert!(err.message.contains("wrokers"));
        let err =
            CreateInput::parse(&json!({"spec": {"name": "e"}, "timing": {"poll_seconds": 0}}))
                .unwrap_err();
        assert_eq!(err.field, "timing.poll_seconds");
        assert_eq!(CreateInput::parse(&json!([1])).unwrap_err().field, "input");
    }

    #[test]
    fn step_error_reason_unwraps_lambda_causes() {
        let e = StepError {
            error: "CommandFailed".into(),
            cause: r#"{"errorType":"CommandFailed","errorMessage":"bootstrap failed"}"#.into(),
        };
        assert_eq!(e.reason(), "bootstrap failed");
        let e = StepError {
            error: "States.Timeout".into(),
            cause: "timed out".into(),
        };
        assert_eq!(e.reason(), "timed out");
    }

    #[test]
    fn poll_deadline() {
        let mut p = Poll::default();
        p.tick(100, 10);
        assert_eq!(p.deadline, Some(110));
        p.tick(105, 10);
        assert_eq!(p.deadline, Some(110));
        assert!(!p.expired(110));
        assert!(p.expired(111));
        p.finish();
        assert!(p.done && p.deadline.is_none());
    }
}

/// The create execution's output: what was made, never a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateOutput {
    pub cluster_id: String,
    pub name: String,
    pub status: crate::record::Status,
    pub endpoint: Option<String>,
    /// The SecureString parameter holding the kubeconfig (its name only).
    pub kubeconfig_parameter: Option<String>,
    pub nodes: usize,
}

/// The delete execution's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteOutput {
    pub cluster_id: String,
    pub status: crate::record::Status,
}

/// Where the cluster a stage input is about lives: the region whose EC2 and SSM Run Command the
/// stage talks to. Empty means the control plane's own region (an input that is not yet about a
/// placed cluster, such as a registration).
pub trait InRegion {
    /// The cluster's region, or `""` for the control plane's own.
    fn region(&self) -> &str;
}

impl InRegion for CreateState {
    fn region(&self) -> &str {
        &self.spec.region
    }
}

impl InRegion for TeardownState {
    fn region(&self) -> &str {
        &self.region
    }
}

impl InRegion for FailedInput {
    fn region(&self) -> &str {
        match self {
            FailedInput::Cleanup(state) => state.region(),
            FailedInput::Create(state) => state.region(),
        }
    }
}

impl InRegion for RegisterEvent {
    fn region(&self) -> &str {
        ""
    }
}

impl InRegion for BeginDeleteEvent {
    fn region(&self) -> &str {
        ""
    }
}

impl InRegion for BeginUpdateEvent {
    fn region(&self) -> &str {
        ""
    }
}
