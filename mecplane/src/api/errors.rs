//! The API's error answers: one [`ApiError`] type carrying the HTTP status, a stable `code` a
//! client can branch on, a readable message and, for bad input, the field at fault. Every error
//! body is `{"error": {"code", "message", "field"}}` (`field` is `null` when no single field is
//! at fault). [`CloudError`]s from the adapters map here: throttling and outages are `503` with
//! `Retry-After`, anything unexpected is `500 InternalError` — never the answer to bad input.

use serde::Serialize;

use crate::error::CloudError;
use crate::spec::ValidationError;

use super::ApiResponse;

/// Seconds a client should wait before retrying a `503`.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// The error codes the API emits, each with its status. The OpenAPI document lists the same codes.
pub mod codes {
    /// 400: the body is not JSON.
    pub const MALFORMED_JSON: &str = "MalformedJson";
    /// 422: a field is missing, out of range, of the wrong type, or unknown.
    pub const VALIDATION: &str = "ValidationError";
    /// 422: `next_token` is not one this API issued.
    pub const INVALID_TOKEN: &str = "InvalidToken";
    /// 422: an idempotency key was reused with a different request.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IdempotencyKeyReused";
    /// 403: the deployment does not let this principal do this (a reconcile that acts, by a
    /// principal not in `ReconcilePrincipals`).
    pub const NOT_ALLOWED: &str = "NotAllowed";
    /// 404: no such route or cluster.
    pub const NOT_FOUND: &str = "NotFound";
    /// 405: the route exists, the method does not.
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    /// 409: another live cluster has the name.
    pub const NAME_TAKEN: &str = "NameTaken";
    /// 409: the cluster is being created or changed; it can be deleted or changed once that has
    /// finished.
    pub const CLUSTER_BUSY: &str = "ClusterBusy";
    /// 409: the kubeconfig exists only while the cluster is `ACTIVE`.
    pub const CLUSTER_NOT_ACTIVE: &str = "ClusterNotActive";
    /// 409: the principal already has as many live clusters as the deployment allows.
    pub const TOO_MANY_CLUSTERS: &str = "TooManyClusters";
    /// 412: `If-Match` names a version of the record that is no longer the current one.
    pub const PRECONDITION_FAILED: &str = "PreconditionFailed";
    /// 413: the body is larger than [`crate::api::MAX_BODY_BYTES`].
    pub const PAYLOAD_TOO_LARGE: &str = "PayloadTooLarge";
    /// 503: AWS throttled or failed; retry after `Retry-After` seconds.
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    /// 500: a fault of the service, not of the request.
    pub const INTERNAL: &str = "InternalError";

    /// Every code.
    pub const ALL: &[&str] = &[
        MALFORMED_JSON,
        VALIDATION,
        INVALID_TOKEN,
        IDEMPOTENCY_KEY_REUSED,
        NOT_ALLOWED,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        NAME_TAKEN,
        CLUSTER_BUSY,
        CLUSTER_NOT_ACTIVE,
        TOO_MANY_CLUSTERS,
        PRECONDITION_FAILED,
        PAYLOAD_TOO_LARGE,
        SERVICE_UNAVAILABLE,
        INTERNAL,
    ];
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Extra headers (`Allow` on a 405, `Retry-After` on a 503).
    pub headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    field: Option<&'a str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            headers: Vec::new(),
        }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the body is not JSON.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(400, codes::MALFORMED_JSON, message)
    }

    /// 422: a field is wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(422, codes::VALIDATION, message).with_field(field)
    }

    /// 422 with a specific code.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }

    /// 403: the principal may not do this here (the message says why and what it may do).
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(403, codes::NOT_ALLOWED, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, codes::NOT_FOUND, message)
    }

    /// 405 with the `Allow` header listing the methods the route serves.
    pub fn method_not_allowed(method: &str, allow: &[&str]) -> Self {
        let mut e = Self::new(
            405,
            codes::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; use {}", allow.join(", ")),
        );
        e.headers.push(("allow".into(), allow.join(", ")));
        e
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    /// 412.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(412, codes::PRECONDITION_FAILED, message)
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            codes::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, codes::SERVICE_UNAVAILABLE, message);
        e.headers
            .push(("retry-after".into(), RETRY_AFTER_SECONDS.to_string()));
        e
    }

    /// 500. The message is generic: the detail goes to the log, not to the caller.
    pub fn internal() -> Self {
        Self::new(
            500,
            codes::INTERNAL,
            "the service failed; the request may be retried",
        )
    }

    /// The JSON answer.
    pub fn into_response(self) -> ApiResponse {
        let body = serde_json::to_vec(&Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        })
        .unwrap_or_else(|_| {
            br#"{"error":{"code":"InternalError","message":"","field":null}}"#.to_vec()
        });
        let mut response = ApiResponse::json_bytes(self.status, body);
        response.headers.extend(self.headers);
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<CloudError> for ApiError {
    /// Adapter errors the routes did not handle themselves: transient ones are worth a retry;
    /// anything else is the service's fault (logged here, since the caller sees no detail).
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Transient(m) | CloudError::AgentNotReady(m) => {
                tracing::warn!(error = %m, "transient AWS error");
                ApiError::unavailable("AWS is throttling or unavailable; retry shortly")
            }
            CloudError::ConditionFailed => {
                tracing::warn!("conditional write kept losing");
                ApiError::unavailable("the cluster record is being changed; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "unexpected AWS error");
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &ApiResponse) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn envelope_has_code_message_and_field() {
        let r = ApiError::invalid("workers", "must be between 0 and 50").into_response();
        assert_eq!(r.status, 422);
        assert_eq!(
            body(&r),
            serde_json::json!({"error": {"code": "ValidationError", "message": "must be between 0 and 50", "field": "workers"}})
        );
        let r = ApiError::not_found("no cluster x").into_response();
        assert_eq!(body(&r)["error"]["field"], serde_json::Value::Null);
    }

    #[test]
    fn cloud_errors_map_to_retryable_or_internal() {
        let r = ApiError::from(CloudError::Transient("throttled".into())).into_response();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("2"));
        let e = ApiError::from(CloudError::Other("boom".into()));
        assert_eq!((e.status, e.code), (500, codes::INTERNAL));
        assert!(!e.message.contains("boom"), "no internal detail leaks");
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let r = ApiError::method_not_allowed("PUT", &["GET", "DELETE"]).into_response();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, DELETE"));
    }
}
