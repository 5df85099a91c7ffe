//! The Lambda Invoke API: `POST /2015-03-31/functions/{FunctionName}/invocations`.
//!
//! `FunctionName` is a name, a partial or a full ARN (see [`crate::arn`]), with an optional
//! qualifier in the ARN or `?Qualifier=` (only `$LATEST` exists locally). `X-Amz-Invocation-Type`
//! is `RequestResponse` (default), `Event` (202, runs in the background) or `DryRun` (204).
//! A function error is HTTP 200 with `X-Amz-Function-Error: Unhandled` and the
//! `{"errorType","errorMessage"}` payload; an unknown function is 404
//! `ResourceNotFoundException`, as Lambda answers.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::app::AppState;
use crate::arn::{function_arn, FunctionRef};
use crate::functions::Outcome;

/// Lambda's synchronous request payload limit.
pub const REQUEST_LIMIT: usize = 6 * 1024 * 1024;

/// Lambda's asynchronous (`Event`) payload limit.
const EVENT_LIMIT: usize = 256 * 1024;

/// A Lambda service error: `x-amzn-ErrorType` plus the JSON body Lambda sends.
pub fn service_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"Type": "User", "Message": message}).to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(kind) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// `404 ResourceNotFoundException` for a function that does not exist.
pub fn not_found(region: &str, account: &str, name: &str, qualifier: Option<&str>) -> Response {
    service_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        &format!(
            "Function not found: {}",
            function_arn(region, account, name, qualifier)
        ),
    )
}

/// The invocation handler.
pub async fn invoke(
    State(app): State<AppState>,
    Path(function_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let func = match FunctionRef::parse(&function_name) {
        Ok(f) => f,
        Err(e) => {
            return service_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("1 validation error detected: Value '{function_name}' at 'functionName' failed to satisfy constraint: {e}"),
            )
        }
    };
    let region = func.region.clone().unwrap_or_else(|| app.region.clone());
    let account = func
        .account
        .clone()
        .unwrap_or_else(|| app.account.to_string());
    let qualifier = match (&func.qualifier, query.get("Qualifier")) {
        (Some(a), Some(b)) if a != b => return service_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.",
        ),
        (Some(q), _) | (None, Some(q)) => Some(q.clone()),
        (None, None) => None,
    };
    // Another stack's function on the same moto: its gateway serves it.
    if let Some(peer) = app.peers.of(&region).filter(|_| region != app.region) {
        return peer
            .send(Method::POST, &uri, &headers, body.into())
            .await
            .unwrap_or_else(|e| service_error(StatusCode::BAD_GATEWAY, "ServiceException", &e));
    }
    let pool = match app.functions.get(&func.name) {
        Some(pool)
            if region == app.region
                && account == app.account
                && qualifier.as_deref().is_none_or(|q| q == "$LATEST") =>
        {
            pool.clone()
        }
        _ => return not_found(&region, &account, &func.name, qualifier.as_deref()),
    };
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse")
        .to_string();
    let limit = if invocation_type == "Event" {
        EVENT_LIMIT
    } else {
        REQUEST_LIMIT
    };
    if body.len() > limit {
        return service_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        );
    }
    let payload = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let client_context = headers
        .get("x-amz-client-context")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let invoked_arn = function_arn(&region, &account, &func.name, func.qualifier.as_deref());

    match invocation_type.as_str() {
        "RequestResponse" => {
            let (request_id, outcome) = pool.invoke(payload, invoked_arn, client_context).await;
            outcome_response(&request_id, outcome)
        }
        "Event" => {
            tokio::spawn(async move {
                let (request_id, outcome) = pool.invoke(payload, invoked_arn, client_context).await;
                if let Outcome::Error(e) = outcome {
                    tracing::warn!(function = %pool.name(), %request_id, error = %String::from_utf8_lossy(&e), "asynchronous invocation failed");
                }
            });
            let mut resp = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            resp
        }
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        other => service_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("Unsupported invocation type {other}"),
        ),
    }
}

/// The HTTP answer of a synchronous invocation.
pub fn outcome_response(request_id: &str, outcome: Outcome) -> Response {
    let (body, error) = match outcome {
        Outcome::Success(b) => (b, false),
        Outcome::Error(b) => (b, true),
    };
    let mut resp = (
        StatusCode::OK,
        [
            ("content-type", "application/json"),
            ("x-amz-executed-version", "$LATEST"),
        ],
        body,
    )
        .into_response();
    if error {
        resp.headers_mut().insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}
