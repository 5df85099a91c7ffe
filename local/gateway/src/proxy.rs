//! Everything that is not a Lambda invocation, `/api` or `/_sim`: SSM Run Command targets go to the
//! node simulator, EC2 form calls ask the simulator for an injected fault first (`RunInstances`, `TerminateInstances`), and the rest
//! is forwarded to moto unchanged (method, path, query, headers, body), streaming the answer back.
//! A `TerminateInstances` or `StopInstances` that moto accepted then sends the `reconcile`
//! function its EC2 state-change events, in the background ([`crate::reconcile`]).
//!
//! DynamoDB calls are forwarded one at a time. DynamoDB makes a conditional write atomic and a
//! `TransactWriteItems` serializable; moto's threaded server checks a condition and writes without
//! a lock, so two racing claims of one cluster name could both succeed there. moto finishes a
//! request before it answers, so holding a lock until the answer's head arrives restores the
//! guarantee the control plane relies on.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mecplane_nodesim::Simulator;

use crate::app::AppState;

/// One DynamoDB call at a time (see the module docs).
static DYNAMODB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `X-Amz-Target` prefix of every DynamoDB operation.
const DYNAMODB_TARGET: &str = "DynamoDB_20120810.";

/// Largest form body buffered to look for an injected EC2 fault.
const FORM_LIMIT: usize = 16 * 1024 * 1024;

/// Largest SSM JSON request handed to the simulator.
const SSM_LIMIT: usize = 1024 * 1024;

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An HTTP client for moto.
#[derive(Clone)]
pub struct Moto {
    endpoint: String,
    client: Client<HttpConnector, Body>,
}

impl Moto {
    /// A client for moto at `endpoint` (`http://127.0.0.1:47501`).
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// moto's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one request to moto (the path and query of `uri` are kept).
    pub async fn send(
        &self,
        method: axum::http::Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, String> {
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let target: Uri = format!("{}{pq}", self.endpoint)
            .parse()
            .map_err(|e| format!("bad upstream uri: {e}"))?;
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(target)
            .body(body)
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("moto unreachable at {}: {e}", self.endpoint))?;
        let (mut parts, body) = resp.into_parts();
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// A JSON POST to moto; returns the status.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<u16, String> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let uri: Uri = path.parse().map_err(|e| format!("{e}"))?;
        let resp = self
            .send(
                axum::http::Method::POST,
                &uri,
                &headers,
                Body::from(body.to_string()),
            )
            .await?;
        Ok(resp.status().as_u16())
    }

    /// Whether moto answers at all.
    pub async fn is_up(&self) -> bool {
        let uri = Uri::from_static("/moto-api/");
        self.send(
            axum::http::Method::GET,
            &uri,
            &HeaderMap::new(),
            Body::empty(),
        )
        .await
        .is_ok()
    }
}

fn bad_gateway(msg: &str) -> Response {
    tracing::warn!(error = %msg, "forwarding to moto failed");
    (
        StatusCode::BAD_GATEWAY,
        [("content-type", "application/json")],
        serde_json::json!({"message": msg}).to_string(),
    )
        .into_response()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

/// The fallback route: simulator for SSM Run Command, EC2 fault check, else moto.
pub async fn handle(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _dynamodb = match &target {
        Some(t) if t.starts_with(DYNAMODB_TARGET) => Some(DYNAMODB.lock().await),
        _ => None,
    };
    if let Some(target) = target.filter(|t| Simulator::handles_ssm_target(t)) {
        app.calls.record(&parts.headers, &[]);
        let Some(sim) = &app.sim else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/x-amz-json-1.1")],
                serde_json::json!({"__type": "ServiceUnavailable", "message": "the node simulator is off (--sim off)"}).to_string(),
            )
                .into_response();
        };
        return match axum::body::to_bytes(body, SSM_LIMIT).await {
            Ok(bytes) => {
                let region = crate::calls::credential_scope(&parts.headers).map(|(r, _)| r);
                sim.handle_ssm(&target, region.as_deref(), bytes).await
            }
            Err(_) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
    }
    let mut state_change = None;
    let body = if parts.method == axum::http::Method::POST && is_form(&parts.headers) {
        let bytes: Bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
            Ok(b) => b,
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
        app.calls.record(&parts.headers, &bytes);
        if let Some(sim) = app.sim.as_ref() {
            if let Some(fault) = sim.ec2_fault(&bytes).await {
                return fault;
            }
        }
        state_change = crate::reconcile::requested_state_change(&bytes);
        Body::from(bytes)
    } else if crate::calls::needs_body(&parts.headers) {
        let bytes: Bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
            Ok(b) => b,
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
        app.calls.record(&parts.headers, &bytes);
        Body::from(bytes)
    } else {
        app.calls.record(&parts.headers, &[]);
        body
    };
    match app
        .moto
        .send(parts.method, &parts.uri, &parts.headers, body)
        .await
    {
        Ok(resp) => {
            if let Some(change) = state_change {
                crate::reconcile::after_ec2_request(&app, &parts.headers, change, resp.status());
            }
            resp
        }
        Err(e) => bad_gateway(&e),
    }
}
