//! The Lambda Runtime API (`/2018-06-01/runtime/...`) one sandbox talks to, on its own
//! 127.0.0.1 listener (its `AWS_LAMBDA_RUNTIME_API`):
//!
//! - `GET  /2018-06-01/runtime/invocation/next` — long-polls; 200 with the event and the
//!   `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`, `-Invoked-Function-Arn`, `-Trace-Id`
//!   (and `-Client-Context`) headers.
//! - `POST /2018-06-01/runtime/invocation/{id}/response` — 202 `{"status":"OK"}`.
//! - `POST /2018-06-01/runtime/invocation/{id}/error` — `{"errorType","errorMessage"}` body and the
//!   `Lambda-Runtime-Function-Error-Type` header; 202.
//! - `POST /2018-06-01/runtime/init/error` — 202; the process is expected to exit.
//!
//! An unknown request id answers 400 `InvalidRequestID`, as Lambda's RAPID does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::functions::{normalize_error, FunctionPool, Outcome, RuntimeApiError};

/// Lambda's response payload limit (6 MB) plus slack for framing.
const RESPONSE_LIMIT: usize = 6 * 1024 * 1024 + 1024;

#[derive(Clone)]
struct Sandbox {
    pool: Arc<FunctionPool>,
    sid: u64,
}

/// The Runtime API router of sandbox `sid` of `pool`.
pub fn router(pool: Arc<FunctionPool>, sid: u64) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{request_id}/response",
            post(response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{request_id}/error",
            post(error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .layer(DefaultBodyLimit::max(RESPONSE_LIMIT))
        .with_state(Sandbox { pool, sid })
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

fn api_error(err: RuntimeApiError) -> Response {
    let (status, kind) = match err {
        RuntimeApiError::InvalidRequestId => (StatusCode::BAD_REQUEST, "InvalidRequestID"),
        RuntimeApiError::Gone => (StatusCode::INTERNAL_SERVER_ERROR, "Runtime.Gone"),
    };
    (
        status,
        Json(serde_json::json!({"errorMessage": err.to_string(), "errorType": kind})),
    )
        .into_response()
}

async fn next(State(sb): State<Sandbox>) -> Response {
    let meta = match sb.pool.next_invocation(sb.sid).await {
        Ok(meta) => meta,
        Err(e) => return api_error(e),
    };
    let mut headers = HeaderMap::new();
    let pairs = [
        ("lambda-runtime-aws-request-id", meta.request_id.clone()),
        ("lambda-runtime-deadline-ms", meta.deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", meta.invoked_arn),
        ("lambda-runtime-trace-id", meta.trace_id),
        ("content-type", "application/json".to_string()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if let Some(ctx) = meta.client_context {
        if let Ok(v) = HeaderValue::from_str(&ctx) {
            headers.insert("lambda-runtime-client-context", v);
        }
    }
    (StatusCode::OK, headers, meta.payload).into_response()
}

async fn response(
    State(sb): State<Sandbox>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> Response {
    match sb
        .pool
        .complete(sb.sid, &request_id, Outcome::Success(body))
    {
        Ok(()) => accepted(),
        Err(e) => api_error(e),
    }
}

fn error_type_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
}

async fn error(
    State(sb): State<Sandbox>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let payload = normalize_error(&body, error_type_header(&headers));
    match sb
        .pool
        .complete(sb.sid, &request_id, Outcome::Error(payload))
    {
        Ok(()) => accepted(),
        Err(e) => api_error(e),
    }
}

async fn init_error(State(sb): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let payload = normalize_error(
        &body,
        error_type_header(&headers).or(Some("Runtime.InitError")),
    );
    tracing::warn!(function = %sb.pool.name(), error = %String::from_utf8_lossy(&payload), "init error");
    sb.pool.init_error(sb.sid, payload);
    accepted()
}
