//! Step Functions: named executions ([`Executions`]).
//!
//! Starting a name twice answers the first execution's ARN: Step Functions does so itself while the
//! first one runs with the same input; after it finished (or with another input) it answers
//! `ExecutionAlreadyExists`, and the adapter then looks the first execution up by its ARN. A start
//! whose input differs from the existing execution's is `Rejected` — it asks for other work than
//! the execution of that name does.

use async_trait::async_trait;
use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::types::ExecutionStatus as SfnStatus;
use aws_sdk_sfn::Client;

use super::classify_sdk_error;
use crate::error::CloudError;
use crate::ports::{ExecutionStatus, Executions};

/// The Step Functions adapter: one client, built once per cold start.
#[derive(Debug, Clone)]
pub struct StepFunctions {
    client: Client,
}

impl StepFunctions {
    /// Builds the Step Functions client from the shared configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        StepFunctions {
            client: Client::new(config),
        }
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: Client) -> Self {
        StepFunctions { client }
    }
}

pub use crate::resources::execution_arn;

/// Whether two execution inputs say the same (as JSON values when both parse, else as text).
fn same_input(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn map_status(status: &SfnStatus) -> Result<ExecutionStatus, CloudError> {
    Ok(match status {
        SfnStatus::Running => ExecutionStatus::Running,
        SfnStatus::Succeeded => ExecutionStatus::Succeeded,
        // Failed and waiting for a redrive is failed until someone redrives it.
        SfnStatus::Failed | SfnStatus::PendingRedrive => ExecutionStatus::Failed,
        SfnStatus::TimedOut => ExecutionStatus::TimedOut,
        SfnStatus::Aborted => ExecutionStatus::Aborted,
        other => {
            return Err(CloudError::Other(format!(
                "unknown execution status {}",
                other.as_str()
            )))
        }
    })
}

#[async_trait]
impl Executions for StepFunctions {
    async fn start(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<String, CloudError> {
        let result = self
            .client
            .start_execution()
            .state_machine_arn(state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await;
        let err = match result {
            Ok(out) => return Ok(out.execution_arn().to_string()),
            Err(e) if e.code() == Some("ExecutionAlreadyExists") => e,
            Err(e) => return Err(classify_sdk_error(&e)),
        };
        let arn = execution_arn(state_machine_arn, name).ok_or_else(|| classify_sdk_error(&err))?;
        let existing = self
            .client
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        match existing.input() {
            Some(first) if !same_input(first, input) => Err(CloudError::Rejected(format!(
                "execution {name} already exists with another input"
            ))),
            _ => Ok(existing.execution_arn().to_string()),
        }
    }

    async fn status(&self, execution_arn: &str) -> Result<ExecutionStatus, CloudError> {
        let out = self
            .client
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        map_status(out.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_arns_are_built_from_the_machine() {
        assert_eq!(
            execution_arn(
                "arn:aws:states:eu-west-1:123456789012:stateMachine:create",
                "c-1"
            )
            .as_deref(),
            Some("arn:aws:states:eu-west-1:123456789012:execution:create:c-1")
        );
        assert_eq!(
            execution_arn("arn:aws-cn:states:cn-north-1:1:stateMachine:m", "x").as_deref(),
            Some("arn:aws-cn:states:cn-north-1:1:execution:m:x")
        );
        assert_eq!(execution_arn("arn:aws:states:r:1:execution:m:x", "y"), None);
        assert_eq!(execution_arn("garbage", "y"), None);
    }

    #[test]
    fn inputs_compare_as_json() {
        assert!(same_input("{\"a\": 1, \"b\": 2}", "{\"b\":2,\"a\":1}"));
        assert!(!same_input("{\"a\": 1}", "{\"a\": 2}"));
        assert!(same_input("not json", "not json"));
    }
}
