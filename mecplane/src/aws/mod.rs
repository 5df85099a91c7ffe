//! The AWS adapters: the ports implemented with the AWS SDK for Rust. Each adapter wraps one
//! service client, built once per cold start from one shared `SdkConfig` ([`load_config`]).

pub mod dynamodb;
pub mod ec2;
pub mod elbv2;
pub mod sfn;
pub mod ssm;

use aws_config::BehaviorVersion;
// Throttling and transient error codes: the SDK's own retry classification, so they never drift
// from what its retries do.
use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
// Every service crate re-exports the same `aws_smithy_runtime_api::client::result::SdkError`
// (with `HttpResponse` as its response type); this one names it for all adapters.
use aws_sdk_sfn::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::CloudError;

/// Loads the SDK configuration once: region, credentials, endpoint and retries from the
/// environment, the SDK's own defaults otherwise (standard retries, three attempts: the SDK
/// retries throttling twice before a stage reports `Transient` and Step Functions takes over).
/// Nothing here knows about the local stack; it sets `AWS_ENDPOINT_URL` and `AWS_MAX_ATTEMPTS=1`
/// for the functions it hosts.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// The EC2 and ELB clients of each region for `deployment`: each lists and acts on only what
/// that deployment owns.
pub fn owned_by(
    base: &aws_config::SdkConfig,
    deployment: &crate::resources::Deployment,
) -> (Regional<ec2::Ec2>, Regional<elbv2::Elbv2>) {
    let (a, b) = (deployment.clone(), deployment.clone());
    (
        Regional::new(base, move |c| ec2::Ec2::new(c, a.clone())),
        Regional::new(base, move |c| elbv2::Elbv2::new(c, b.clone())),
    )
}

/// Clients of one regional service (EC2, SSM Run Command, the public AMI parameters) for the
/// regions clusters live in: the control plane's own region is built at cold start, any other
/// the first time a cluster there needs it, then kept for the life of the execution environment.
/// Clients share the cold start's credentials, retry settings and endpoint; only the region
/// differs. DynamoDB, Step Functions and the kubeconfig parameters stay in the home region.
pub struct Regional<C> {
    base: aws_config::SdkConfig,
    make: Box<dyn Fn(&aws_config::SdkConfig) -> C + Send + Sync>,
    home: String,
    clients: std::sync::Mutex<std::collections::HashMap<String, C>>,
}

impl<C: Clone> Regional<C> {
    /// The home-region client from `base`, built now, and the recipe for the others.
    pub fn new(
        base: &aws_config::SdkConfig,
        make: impl Fn(&aws_config::SdkConfig) -> C + Send + Sync + 'static,
    ) -> Self {
        let home = base.region().map(|r| r.to_string()).unwrap_or_default();
        let clients = std::collections::HashMap::from([(home.clone(), make(base))]);
        Regional {
            base: base.clone(),
            make: Box::new(make),
            home,
            clients: std::sync::Mutex::new(clients),
        }
    }

    /// The client for `region` (the home region's when `region` is empty).
    pub fn region(&self, region: &str) -> C {
        let region = if region.is_empty() {
            &self.home
        } else {
            region
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let config = self
                    .base
                    .to_builder()
                    .region(aws_config::Region::new(region.to_string()))
                    .build();
                (self.make)(&config)
            })
            .clone()
    }
}

/// Error codes of server-side faults (also reported with a 5xx status, but not always).
const SERVER_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerErrorException",
    "InternalServiceError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
];

/// Error codes meaning "the thing addressed does not exist" that do not end in `NotFound`.
const MISSING_CODES: &[&str] = &[
    "ParameterNotFound",
    "ExecutionDoesNotExist",
    "StateMachineDoesNotExist",
    "InvocationDoesNotExist",
];

/// Classifies the error of any AWS SDK call (`SdkError` is the one type every service client
/// re-exports from `aws_smithy_runtime_api::client::result`) into a [`CloudError`]. The single
/// classifier every adapter uses; an adapter looks at a specific code first only where its port
/// documents a different meaning (a delete of something missing is `Ok`, and so on).
///
/// - throttling codes, 5xx answers, timeouts and dispatch (connection) failures: `Transient`;
/// - SSM's `InvalidInstanceId` (agent not registered yet): `AgentNotReady`;
/// - `InsufficientInstanceCapacity`: `InsufficientCapacity`;
/// - `DependencyViolation`, and Elastic Load Balancing's `ResourceInUse`: `DependencyViolation`;
/// - `ConditionalCheckFailedException`, and `TransactionCanceledException` whose reasons include
///   `ConditionalCheckFailed`: `ConditionFailed` (a transaction lost to another one: `Transient`);
/// - `*NotFound`, `ParameterNotFound`, `*DoesNotExist`: `NotFound`;
/// - any other error the service answered: `Rejected`; everything else: `Other`.
pub fn classify_sdk_error<E>(err: &SdkError<E>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify(err, true)
}

/// [`classify_sdk_error`] for calls that carry a secret (a SecureString value, a command with a
/// token): the same classification, but a service error keeps only its code, never its message,
/// which could quote the refused value.
pub fn classify_sdk_error_redacted<E>(err: &SdkError<E>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify(err, false)
}

fn classify<E>(err: &SdkError<E>, with_message: bool) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => {
            CloudError::Transient(format!("timeout: {}", DisplayErrorContext(err)))
        }
        SdkError::DispatchFailure(_) => {
            CloudError::Transient(format!("dispatch failure: {}", DisplayErrorContext(err)))
        }
        SdkError::ResponseError(ctx) => {
            let status = ctx.raw().status().as_u16();
            if status >= 500 || status == 429 {
                CloudError::Transient(format!("HTTP {status}: unreadable response"))
            } else {
                CloudError::Other(format!("HTTP {status}: unreadable response"))
            }
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code();
            if with_message {
                classify_code(code, ctx.err().message(), status)
            } else {
                // The transaction reasons live in the message; no secret-carrying call is a transaction.
                classify_code(code, None, status)
            }
        }
        _ => CloudError::Other(DisplayErrorContext(err).to_string()),
    }
}

/// Classifies a service's error code (with its message and HTTP status); see [`classify_sdk_error`].
pub fn classify_code(code: Option<&str>, message: Option<&str>, status: u16) -> CloudError {
    let message = message.unwrap_or("");
    let Some(code) = code else {
        return if status >= 500 || status == 429 {
            CloudError::Transient(format!("HTTP {status}: {message}"))
        } else {
            CloudError::Other(format!("HTTP {status}: {message}"))
        };
    };
    let text = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    if THROTTLING_ERRORS.contains(&code)
        || TRANSIENT_ERRORS.contains(&code)
        || SERVER_CODES.contains(&code)
    {
        return CloudError::Transient(text);
    }
    match code {
        "InvalidInstanceId" => return CloudError::AgentNotReady(text),
        "InsufficientInstanceCapacity" => return CloudError::InsufficientCapacity(text),
        // Elastic Load Balancing's: a target group a listener still forwards to.
        "DependencyViolation" | "ResourceInUse" => return CloudError::DependencyViolation(text),
        "ConditionalCheckFailedException" => return CloudError::ConditionFailed,
        "TransactionCanceledException" => {
            // The reasons are listed in the message: `[ConditionalCheckFailed, None]`.
            return if message.contains("ConditionalCheckFailed") {
                CloudError::ConditionFailed
            } else if message.contains("TransactionConflict") || message.contains("ThrottlingError")
            {
                CloudError::Transient(text)
            } else {
                CloudError::Rejected(text)
            };
        }
        _ => {}
    }
    if MISSING_CODES.contains(&code)
        || code.ends_with("NotFound")
        || code.ends_with("NotFoundException")
    {
        return CloudError::NotFound(text);
    }
    if status >= 500 {
        return CloudError::Transient(text);
    }
    CloudError::Rejected(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_clients_are_built_once_per_region_with_that_region() {
        static BUILT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn make(config: &aws_config::SdkConfig) -> String {
            BUILT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            config.region().map(|r| r.to_string()).unwrap_or_default()
        }
        let base = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let clients = Regional::new(&base, make);
        assert_eq!(clients.region(""), "us-east-1");
        assert_eq!(clients.region("us-east-1"), "us-east-1");
        assert_eq!(clients.region("eu-west-1"), "eu-west-1");
        assert_eq!(clients.region("eu-west-1"), "eu-west-1");
        assert_eq!(BUILT.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
    use aws_sdk_sfn::config::http::HttpResponse;
    use aws_sdk_sfn::error::ConnectorError;
    use aws_sdk_sfn::operation::describe_execution::DescribeExecutionError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service(code: &str, message: &str, status: u16) -> SdkError<DescribeExecutionError> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(DescribeExecutionError::generic(meta), raw)
    }

    /// Code, message, HTTP status, and what the classification must satisfy.
    type Case = (&'static str, &'static str, u16, fn(&CloudError) -> bool);

    #[test]
    fn codes_are_classified_as_documented() {
        let cases: &[Case] = &[
            ("Throttling", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("ThrottlingException", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("RequestLimitExceeded", "", 503, |e| matches!(e, CloudError::Transient(_))),
            ("ProvisionedThroughputExceededException", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("BandwidthLimitExceeded", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("LimitExceededException", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("RequestTimeout", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("SomethingBroke", "", 502, |e| matches!(e, CloudError::Transient(_))),
            ("InternalError", "", 400, |e| matches!(e, CloudError::Transient(_))),
            ("InvalidInstanceId", "", 400, |e| matches!(e, CloudError::AgentNotReady(_))),
            ("InsufficientInstanceCapacity", "", 500, |e| matches!(e, CloudError::InsufficientCapacity(_))),
            ("DependencyViolation", "in use", 400, |e| matches!(e, CloudError::DependencyViolation(_))),
            ("ResourceInUse", "in use by a listener", 400, |e| matches!(e, CloudError::DependencyViolation(_))),
            ("ConditionalCheckFailedException", "", 400, |e| *e == CloudError::ConditionFailed),
            (
                "TransactionCanceledException",
                "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed]",
                400,
                |e| *e == CloudError::ConditionFailed,
            ),
            (
                "TransactionCanceledException",
                "Transaction cancelled [TransactionConflict, None]",
                400,
                |e| matches!(e, CloudError::Transient(_)),
            ),
            ("InvalidGroup.NotFound", "", 400, |e| matches!(e, CloudError::NotFound(_))),
            ("InvalidInstanceID.NotFound", "", 400, |e| matches!(e, CloudError::NotFound(_))),
            ("ParameterNotFound", "", 400, |e| matches!(e, CloudError::NotFound(_))),
            ("ResourceNotFoundException", "", 400, |e| matches!(e, CloudError::NotFound(_))),
            ("ExecutionDoesNotExist", "", 400, |e| matches!(e, CloudError::NotFound(_))),
            ("InvalidParameterValue", "bad", 400, |e| matches!(e, CloudError::Rejected(m) if m == "InvalidParameterValue: bad")),
            ("UnauthorizedOperation", "", 403, |e| matches!(e, CloudError::Rejected(_))),
        ];
        for (code, message, status, check) in cases {
            let e = classify_sdk_error(&service(code, message, *status));
            assert!(check(&e), "{code} ({status}) -> {e:?}");
        }
    }

    #[test]
    fn redacted_errors_keep_the_code_only() {
        let e = classify_sdk_error_redacted(&service(
            "ValidationException",
            "Value 's3cret' is too long",
            400,
        ));
        assert_eq!(e, CloudError::Rejected("ValidationException".into()));
    }

    #[test]
    fn transport_failures_are_transient() {
        let timeout: SdkError<DescribeExecutionError> = SdkError::timeout_error("slow");
        assert!(matches!(
            classify_sdk_error(&timeout),
            CloudError::Transient(_)
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let dispatch: SdkError<DescribeExecutionError> =
            SdkError::dispatch_failure(ConnectorError::io(io.into()));
        assert!(matches!(
            classify_sdk_error(&dispatch),
            CloudError::Transient(_)
        ));
        let construction: SdkError<DescribeExecutionError> =
            SdkError::construction_failure("missing field");
        assert!(matches!(
            classify_sdk_error(&construction),
            CloudError::Other(_)
        ));
        assert!(matches!(
            classify_code(None, None, 503),
            CloudError::Transient(_)
        ));
        assert!(matches!(
            classify_code(None, None, 400),
            CloudError::Other(_)
        ));
    }
}
