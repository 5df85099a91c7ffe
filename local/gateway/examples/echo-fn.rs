//! A tiny Lambda function for the gateway's tests, built on `lambda_runtime`.
//!
//! Event fields (all optional):
//! - `"fail": "<ErrorType>"` — fail with that `errorType` (and `"message"` as `errorMessage`);
//! - `"exit": <code>` — exit the process mid-invocation;
//! - `"sleep_ms": <n>` — sleep before answering;
//! - an API Gateway event whose `body` is `{"respond": <value>}` — answer `<value>` (to test the
//!   response mapping).
//!
//! Otherwise answers `{"echo": <event>, "function": <AWS_LAMBDA_FUNCTION_NAME>, "handler":
//! <_HANDLER>, "pid": <pid>,
//! "request_id": <id>, "invoked_arn": <arn>, "table": <MECPLANE_TABLE>}`.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, ctx) = event.into_parts();
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(code as i32);
    }
    let respond = payload
        .get("body")
        .and_then(Value::as_str)
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|b| b.get("respond").cloned());
    if let Some(value) = respond {
        return Ok(value);
    }
    if let Some(kind) = payload.get("fail").and_then(Value::as_str) {
        return Err(Diagnostic {
            error_type: kind.to_string(),
            error_message: payload
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("asked to fail")
                .to_string(),
        });
    }
    Ok(json!({
        "echo": payload,
        "function": std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
        "handler": std::env::var("_HANDLER").unwrap_or_default(),
        "pid": std::process::id(),
        "request_id": ctx.request_id,
        "invoked_arn": ctx.invoked_function_arn,
        "table": std::env::var("MECPLANE_TABLE").unwrap_or_default(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handle)).await
}
