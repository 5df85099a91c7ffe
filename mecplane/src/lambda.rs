//! What every stage binary does once per cold start: logging in Lambda's format, and the
//! configuration the stages read from the function's environment.

/// Sets up `tracing` as Lambda expects: JSON lines when `AWS_LAMBDA_LOG_FORMAT=JSON`, the level
/// from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The public SSM parameter tree holding Ubuntu's AMI ids.
pub const DEFAULT_AMI_PARAMETER_PREFIX: &str = "/aws/service/canonical/ubuntu/server";

/// Deployment settings the stages need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    /// The DynamoDB table (`MECPLANE_TABLE`).
    pub table: String,
    /// The instance profile nodes are launched with (`MECPLANE_NODE_INSTANCE_PROFILE`).
    pub node_instance_profile: String,
    /// Where Ubuntu's AMI parameters live (`MECPLANE_AMI_PARAMETER_PREFIX`).
    pub ami_parameter_prefix: String,
}

impl StageConfig {
    /// Reads the environment; a missing table is an error because nothing works without it.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Ok(StageConfig {
            table: var("MECPLANE_TABLE").ok_or("MECPLANE_TABLE is not set")?,
            node_instance_profile: var("MECPLANE_NODE_INSTANCE_PROFILE")
                .unwrap_or_else(|| "mecplane-node".into()),
            ami_parameter_prefix: var("MECPLANE_AMI_PARAMETER_PREFIX")
                .unwrap_or_else(|| DEFAULT_AMI_PARAMETER_PREFIX.into())
                .trim_end_matches('/')
                .to_string(),
        })
    }
}

/// Serves Lambda invocations with a stage function: the payload is deserialized into the
/// stage's input type, and a [`StageError`](crate::StageError) becomes the function error whose
/// `errorType` the state machine's `Retry`/`Catch` match.
pub async fn serve<I, O, F, Fut>(stage: F) -> Result<(), lambda_runtime::Error>
where
    I: serde::de::DeserializeOwned,
    O: serde::Serialize,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<O, crate::StageError>>,
{
    let stage = &stage;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<I>| async move {
            stage(event.payload)
                .await
                .inspect_err(|e| tracing::warn!(error_type = e.name(), "stage failed: {e}"))
        },
    ))
    .await
}
