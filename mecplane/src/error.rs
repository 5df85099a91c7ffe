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

impl From<CloudError> for StageError {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Transient(m) => StageError::Transient(m),
            CloudError::AgentNotReady(m) => {
                StageError::Transient(format!("SSM agent not ready: {m}"))
            }
            CloudError::ConditionFailed => StageError::RecordConflict,
            CloudError::InsufficientCapacity(m) => StageError::InsufficientCapacity(m),
            CloudError::DependencyViolation(m) => StageError::DependencyViolation(m),
            e @ (CloudError::NotFound(_) | CloudError::Rejected(_) | CloudError::Other(_)) => {
                StageError::Cloud(e.to_string())
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
            .filter(|n| !n.starts_with("States.") && !n.starts_with("Lambda."))
            .collect();
        assert!(!ours.is_empty());
        for name in &ours {
            assert!(
                StageError::NAMES.contains(&name.as_str()),
                "the ASL matches {name}, which no stage emits"
            );
        }
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
