//! The two error layers. [`CloudError`] is what an adapter reports about an AWS call; [`StageError`]
//! is what a stage reports to Step Functions. A stage error's [`StageError::name`] is its Lambda
//! `errorType`, exactly the string the state machines' `Retry`/`Catch` `ErrorEquals` match, so the
//! names are stable API: [`StageError::NAMES`] lists them and a test checks the ASL against it.

use crate::spec::ValidationError;

/// An AWS call's outcome, classified for the stages.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// Throttling or a server-side error: worth retrying with backoff.
    #[error("transient AWS error: {0}")]
    Transient(String),
    /// The thing addressed does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// SSM does not (yet) accept commands for the instance (`InvalidInstanceId`).
    #[error("SSM agent not ready: {0}")]
    AgentNotReady(String),
    /// EC2 has no capacity for the instance type in the zone.
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    /// AWS rejected the request as malformed or not permitted.
    #[error("request rejected: {0}")]
    Rejected(String),
    /// A conditional write lost (DynamoDB `ConditionalCheckFailed`, a transaction cancelled).
    #[error("conditional write lost")]
    ConditionFailed,
    /// The resource is still in use (a security group with ENIs attached).
    #[error("resource in use: {0}")]
    DependencyViolation(String),
    /// Anything else.
    #[error("AWS error: {0}")]
    Other(String),
}

/// A stage failure as Step Functions sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageError {
    #[error("invalid cluster spec: {0}")]
    Validation(#[from] ValidationError),
    #[error("a cluster named '{0}' already exists")]
    NameTaken(String),
    #[error("no cluster {0}")]
    ClusterNotFound(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    Transient(String),
    #[error("the cluster record changed under this stage; retrying")]
    RecordConflict,
    #[error("{0}")]
    InsufficientCapacity(String),
    #[error("{0}")]
    AmiNotFound(String),
    #[error("{0}")]
    NodesNotReady(String),
    #[error("{0}")]
    InstanceTerminated(String),
    #[error("{0}")]
    CommandFailed(String),
    #[error("{0}")]
    CommandTimedOut(String),
    #[error("{0}")]
    DependencyViolation(String),
    #[error("{0}")]
    TeardownTimedOut(String),
    #[error("{0}")]
    Cloud(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl StageError {
    /// Every error name a stage can emit.
    pub const NAMES: &'static [&'static str] = &[
        "ValidationError",
        "NameTaken",
        "ClusterNotFound",
        "InvalidState",
        "Transient",
        "RecordConflict",
        "InsufficientCapacity",
        "AmiNotFound",
        "NodesNotReady",
        "InstanceTerminated",
        "CommandFailed",
        "CommandTimedOut",
        "DependencyViolation",
        "TeardownTimedOut",
        "CloudError",
        "InternalError",
    ];

    /// The Lambda `errorType`: what `ErrorEquals` matches.
    pub fn name(&self) -> &'static str {
        match self {
            StageError::Validation(_) => "ValidationError",
            StageError::NameTaken(_) => "NameTaken",
            StageError::ClusterNotFound(_) => "ClusterNotFound",
            StageError::InvalidState(_) => "InvalidState",
            StageError::Transient(_) => "Transient",
            StageError::RecordConflict => "RecordConflict",
            StageError::InsufficientCapacity(_) => "InsufficientCapacity",
            StageError::AmiNotFound(_) => "AmiNotFound",
            StageError::NodesNotReady(_) => "NodesNotReady",
            StageError::InstanceTerminated(_) => "InstanceTerminated",
            StageError::CommandFailed(_) => "CommandFailed",
            StageError::CommandTimedOut(_) => "CommandTimedOut",
            StageError::DependencyViolation(_) => "DependencyViolation",
            StageError::TeardownTimedOut(_) => "TeardownTimedOut",
            StageError::Cloud(_) => "CloudError",
            StageError::Internal(_) => "InternalError",
        }
    }
}

/// A stage's error message reaches the execution history and the record's `failure.reason`:
/// AWS's message loses its ARNs and account ids on the way ([`crate::redact::aws_details`]).
impl From<CloudError> for StageError {
    fn from(e: CloudError) -> Self {
        let public = |m: String| crate::redact::aws_details(&m);
        match e {
            CloudError::Transient(m) => StageError::Transient(public(m)),
            CloudError::AgentNotReady(m) => {
                StageError::Transient(format!("SSM agent not ready: {}", public(m)))
            }
            CloudError::ConditionFailed => StageError::RecordConflict,
            CloudError::InsufficientCapacity(m) => StageError::InsufficientCapacity(public(m)),
            CloudError::DependencyViolation(m) => StageError::DependencyViolation(public(m)),
            e @ (CloudError::NotFound(_) | CloudError::Rejected(_) | CloudError::Other(_)) => {
                StageError::Cloud(public(e.to_string()))
            }
        }
    }
}

#[cfg(feature = "lambda")]
impl From<StageError> for lambda_runtime::Diagnostic {
    fn from(e: StageError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.name().into(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_name_is_listed_once() {
        let samples = [
            StageError::Validation(ValidationError {
                field: "f".into(),
                message: "m".into(),
            }),
            StageError::NameTaken("a".into()),
            StageError::ClusterNotFound("a".into()),
            StageError::InvalidState("a".into()),
            StageError::Transient("a".into()),
            StageError::RecordConflict,
            StageError::InsufficientCapacity("a".into()),
            StageError::AmiNotFound("a".into()),
            StageError::NodesNotReady("a".into()),
            StageError::InstanceTerminated("a".into()),
            StageError::CommandFailed("a".into()),
            StageError::CommandTimedOut("a".into()),
            StageError::DependencyViolation("a".into()),
            StageError::TeardownTimedOut("a".into()),
            StageError::Cloud("a".into()),
            StageError::Internal("a".into()),
        ];
        let names: Vec<&str> = samples.iter().map(|e| e.name()).collect();
        assert_eq!(names, StageError::NAMES);
    }

    #[cfg(feature = "lambda")]
    #[test]
    fn stage_errors_are_lambda_diagnostics_named_for_the_asl() {
        let d: lambda_runtime::Diagnostic = StageError::NameTaken("edge".into()).into();
        assert_eq!(d.error_type, "NameTaken");
        assert_eq!(d.error_message, "a cluster named 'edge' already exists");
    }
}

#[cfg(test)]
mod asl_tests {
    //! The state machines' `Retry`/`Catch` name errors as strings; these tests read the ASL files
    //! and check both sides agree, so renaming an error cannot silently turn a retry into a failure.

    use super::StageError;
    use std::collections::BTreeSet;

    fn error_names_in(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "ErrorEquals" {
                        for name in v
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|n| n.as_str())
                        {
                            out.insert(name.to_string());
                        }
                    } else {
                        error_names_in(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| error_names_in(v, out)),
            _ => {}
        }
    }

    fn asl_names() -> BTreeSet<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../statemachine");
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("statemachine/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).expect("read");
                error_names_in(&serde_json::from_str(&text).expect("json"), &mut names);
            }
        }
        names
    }

    #[test]
    fn every_error_the_machines_match_is_one_the_stages_emit() {
        let ours: Vec<String> = asl_names()
            .into_iter()
            .filter(|n| {
                !n.starts_with("States.") && !n.starts_with("Lambda.") && !n.starts_with("Sandbox.")
            })
            .collect();
        assert!(!ours.is_empty());
        for name in &ours {
            assert!(
                StageError::NAMES.contains(&name.as_str()),
                "the ASL matches {name}, which no stage emits"
            );
        }
    }

    fn machine(file: &str) -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../statemachine/").to_string() + file;
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json")
    }

    /// The errors every Task retries like `Transient`: the stages' own, Lambda's service trouble,
    /// and a Lambda that timed out (`Sandbox.Timedout`, `Lambda.ClientExecutionTimeoutException`)
    /// — a timeout is a reason to try again, not to tear the cluster down.
    const RETRIED_BY_EVERY_TASK: [&str; 8] = [
        "Transient",
        "RecordConflict",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Sandbox.Timedout",
        "Lambda.ClientExecutionTimeoutException",
    ];

    #[test]
    fn every_task_retries_transient_errors_and_lambda_timeouts() {
        for file in [
            "create-cluster.asl.json",
            "delete-cluster.asl.json",
            "update-cluster.asl.json",
        ] {
            let m = machine(file);
            let states = m["States"].as_object().expect("States");
            let tasks: Vec<_> = states.iter().filter(|(_, s)| s["Type"] == "Task").collect();
            assert!(!tasks.is_empty(), "{file}");
            for (name, task) in tasks {
                let retried: BTreeSet<&str> = task["Retry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
                    .filter_map(|n| n.as_str())
                    .collect();
                for error in RETRIED_BY_EVERY_TASK {
                    assert!(
                        retried.contains(error),
                        "{file}: Task {name} does not retry {error}"
                    );
                }
            }
        }
    }

    /// Follows `Next` and a Choice's `Default` through Pass and Choice states to the first Task or
    /// terminal state.
    fn next_task<'a>(states: &'a serde_json::Value, mut name: &'a str) -> &'a str {
        for _ in 0..states.as_object().map_or(0, |s| s.len()) {
            let state = &states[name];
            name = match state["Type"].as_str() {
                Some("Pass") => state["Next"].as_str().unwrap_or(name),
                Some("Choice") => state["Default"].as_str().unwrap_or(name),
                _ => return name,
            };
        }
        name
    }

    #[test]
    fn a_failure_inside_mark_failed_still_runs_the_cleanup() {
        let m = machine("create-cluster.asl.json");
        let states = &m["States"];
        let resource = |name: &str| states[name]["Resource"].as_str().unwrap_or_default();
        // MarkFailed: the Task that records a failed create and goes on to the cleanup (the one
        // that records a failed cleanup goes on to the end).
        let mark_failed = states
            .as_object()
            .expect("States")
            .iter()
            .filter(|(_, s)| s["Type"] == "Task")
            .filter(|(_, s)| s["Resource"] == "${MarkFailedFunctionArn}")
            .map(|(name, _)| name.as_str())
            .find(|name| {
                resource(next_task(states, name_next(states, name)))
                    == "${TerminateNodesFunctionArn}"
            })
            .expect("a MarkFailed Task that goes on to the cleanup");
        let catches = states[mark_failed]["Catch"].as_array().expect("Catch");
        assert!(!catches.is_empty());
        for catch in catches {
            let to = next_task(states, catch["Next"].as_str().expect("Next"));
            assert_eq!(
                resource(to),
                "${TerminateNodesFunctionArn}",
                "a failure inside {mark_failed} goes to {to}, not to the cleanup"
            );
        }
        // The execution still ends with a named error: the one that failed the create.
        let fail = states
            .as_object()
            .expect("States")
            .values()
            .find(|s| s["Type"] == "Fail" && s["ErrorPath"] == "$.error.Error");
        assert!(fail.is_some(), "a Fail state reporting $.error");
    }

    fn name_next<'a>(states: &'a serde_json::Value, name: &str) -> &'a str {
        states[name]["Next"].as_str().unwrap_or_default()
    }

    #[test]
    fn retried_errors_are_retried_and_permanent_ones_are_not() {
        let names = asl_names();
        for retried in ["Transient", "RecordConflict", "DependencyViolation"] {
            assert!(
                names.contains(retried),
                "{retried} must be retried by the state machines"
            );
        }
        for permanent in ["InsufficientCapacity", "ValidationError", "NameTaken"] {
            assert!(
                !names.contains(permanent),
                "{permanent} must not be retried"
            );
        }
    }
}
