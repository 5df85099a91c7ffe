//! The HTTP API of the `api` function, framework-agnostic: an [`ApiRequest`] in, an
//! [`ApiResponse`] out, through [`handle`], which is generic over the ports so tests drive it with
//! the fakes and the Lambda binary with the AWS adapters.
//!
//! - [`routes`]: the route table and the router (`404` unknown path, `405` + `Allow` wrong method).
//! - [`clusters`]: create, get, delete, events, kubeconfig — the operations on one cluster.
//! - [`updates`]: `PATCH` (a change to a live cluster, `If-Match`/`ETag`) and the update history.
//! - [`pagination`]: `GET /clusters` and its query.
//! - [`body`]: decoding the create body with errors that name the field.
//! - [`idempotency`]: `Idempotency-Key` / `client_token` and the request hash.
//! - [`principal`]: who owns a cluster (an assumed role, not its session) and who may act fleet-wide.
//! - [`reconcile`]: `POST /reconcile` (who may run one that acts, what an owner may see of it).
//! - [`errors`]: [`ApiError`] and the `{"error": {"code", "message", "field"}}` envelope.
//!
//! `docs/openapi.yaml` describes every route, body and error; a test here checks that it lists
//! every route, method and status of [`routes::ROUTES`].

pub mod body;
pub mod clusters;
pub mod errors;
pub mod idempotency;
pub mod pagination;
pub mod principal;
pub mod reconcile;
pub mod routes;
pub mod updates;

#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::ports::{ClusterStore, Executions, Parameters};
use crate::spec::Policy;
use crate::state::Timing;

pub use errors::ApiError;
pub use routes::Route;

/// The largest body accepted (64 KiB); a larger one is `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An HTTP request, as any front end (API Gateway, a test) hands it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiRequest {
    /// Upper-case method (`GET`).
    pub method: String,
    /// The path without the stage or any mount prefix, percent-encoded as received (`/clusters/edge`).
    pub path: String,
    /// Decoded query parameters in order; a name may repeat.
    pub query: Vec<(String, String)>,
    /// Header names in any case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The IAM principal that signed the request (API Gateway's `authorizer.iam.userArn`), when
    /// known; idempotency keys belong to it.
    pub caller: Option<String>,
}

impl ApiRequest {
    /// A request with no query, headers or body.
    pub fn new(method: &str, path: &str) -> Self {
        ApiRequest {
            method: method.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    /// The first value of a header, matched without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response. Header names are lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// A JSON answer.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::json_bytes(status, body),
            Err(e) => {
                tracing::error!(error = %e, "could not serialize a response");
                ApiError::internal().into_response()
            }
        }
    }

    pub(crate) fn json_bytes(status: u16, body: Vec<u8>) -> Self {
        ApiResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of a header, matched without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Deployment settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub create_state_machine_arn: String,
    pub delete_state_machine_arn: String,
    /// The update state machine (changes to a live cluster).
    pub update_state_machine_arn: String,
    /// Defaults and limits for cluster requests.
    pub policy: Policy,
    /// The timing passed to every execution.
    pub timing: Timing,
}

/// A missing or unreadable setting; the function cannot start without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
}

impl ApiConfig {
    /// Create state machine (`MECPLANE_CREATE_STATE_MACHINE_ARN`).
    pub const CREATE_ARN_VAR: &'static str = "MECPLANE_CREATE_STATE_MACHINE_ARN";
    /// Delete state machine (`MECPLANE_DELETE_STATE_MACHINE_ARN`).
    pub const DELETE_ARN_VAR: &'static str = "MECPLANE_DELETE_STATE_MACHINE_ARN";
    /// Update state machine (`MECPLANE_UPDATE_STATE_MACHINE_ARN`).
    pub const UPDATE_ARN_VAR: &'static str = "MECPLANE_UPDATE_STATE_MACHINE_ARN";
    /// Seconds between polls in the executions (`MECPLANE_POLL_SECONDS`; the local stack sets 1).
    pub const POLL_SECONDS_VAR: &'static str = "MECPLANE_POLL_SECONDS";

    /// Reads the environment (and [`Policy::from_env`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut timing = Timing::default();
        if let Some(v) = var(Self::POLL_SECONDS_VAR) {
            timing.poll_seconds = v.trim().parse().map_err(|_| ConfigError::Invalid {
                name: Self::POLL_SECONDS_VAR,
                message: format!("'{v}' is not a number of seconds"),
            })?;
        }
        timing.validate().map_err(|e| ConfigError::Invalid {
            name: Self::POLL_SECONDS_VAR,
            message: e.to_string(),
        })?;
        Ok(ApiConfig {
            create_state_machine_arn: var(Self::CREATE_ARN_VAR)
                .ok_or(ConfigError::Missing(Self::CREATE_ARN_VAR))?,
            delete_state_machine_arn: var(Self::DELETE_ARN_VAR)
                .ok_or(ConfigError::Missing(Self::DELETE_ARN_VAR))?,
            update_state_machine_arn: var(Self::UPDATE_ARN_VAR)
                .ok_or(ConfigError::Missing(Self::UPDATE_ARN_VAR))?,
            policy: Policy::from_env(),
            timing,
        })
    }
}

/// What every request needs, built once per cold start.
pub struct ApiContext<S, E, P> {
    pub store: S,
    pub executions: E,
    pub parameters: P,
    pub config: ApiConfig,
}

/// Answers one request. Never fails: every error becomes its JSON answer. Without fleet access
/// `POST /reconcile`, and a `POST /clusters` naming subnets or a VPC, answer `503` (see
/// [`handle_with`]).
pub async fn handle<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: ApiRequest,
) -> ApiResponse {
    handle_with(ctx, req, None).await
}

/// [`handle`], with the fleet access `POST /reconcile` runs on (the api function's EC2 clients),
/// which `POST /clusters` also uses to check where the nodes go ([`crate::placement`]).
pub async fn handle_with<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: ApiRequest,
    fleet: Option<&crate::reconcile::Fleet<'_>>,
) -> ApiResponse {
    let response = match dispatch(ctx, &req, fleet).await {
        Ok(response) => response,
        Err(e) => {
            if e.status < 500 {
                tracing::info!(code = e.code, field = e.field.as_deref(), message = %e.message, "request refused");
            }
            e.into_response()
        }
    };
    tracing::info!(method = %req.method, path = %req.path, status = response.status, "request");
    response
}

async fn dispatch<S: ClusterStore, E: Executions, P: Parameters>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    fleet: Option<&crate::reconcile::Fleet<'_>>,
) -> Result<ApiResponse, ApiError> {
    let mut route = routes::route(&req.method, &req.path)?;
    if req.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    if ctx.config.policy.own_clusters_only {
        route = own_cluster_only(ctx, req, route).await?;
    }
    match route {
        Route::Healthz => Ok(ApiResponse::json(200, &serde_json::json!({"status": "ok"}))),
        Route::CreateCluster => clusters::create(ctx, req, fleet).await,
        Route::ListClusters => {
            let query = pagination::parse_query(&req.query)?;
            let mut page = pagination::list(&ctx.store, &query).await?;
            if ctx.config.policy.own_clusters_only {
                // A page may come out shorter than max_results; next_token still goes on.
                page.clusters.retain(|r| owned_by(r, req));
            }
            Ok(ApiResponse::json(200, &page))
        }
        Route::GetCluster(id) => Ok(updates::record_answer(
            200,
            &clusters::find(&ctx.store, &id).await?,
        )),
        Route::PatchCluster(id) => updates::patch(ctx, req, &id).await,
        Route::DeleteCluster(id) => clusters::delete(ctx, &id).await,
        Route::ClusterUpdates(id) => updates::list(&ctx.store, &id).await,
        Route::ClusterUpdate(id, update_id) => updates::get(&ctx.store, &id, &update_id).await,
        Route::Reconcile => reconcile::post(ctx, req, fleet).await,
        Route::ReplaceNode(id, instance_id) => {
            updates::replace_node(ctx, req, &id, &instance_id).await
        }
        Route::ClusterEvents(id) => clusters::events(&ctx.store, &id).await,
        Route::ClusterKubeconfig(id) => clusters::kubeconfig(ctx, req, &id).await,
    }
}

/// With `OwnClustersOnly`, a route on one cluster reaches only a cluster the caller created: any
/// other answers `404`, as if it did not exist. The route goes on by the id it resolved to, so a
/// name cannot move to another cluster between the check and the operation.
async fn own_cluster_only<S: ClusterStore, E, P>(
    ctx: &ApiContext<S, E, P>,
    req: &ApiRequest,
    route: Route,
) -> Result<Route, ApiError> {
    let Some(id) = route.cluster() else {
        return Ok(route);
    };
    let record = clusters::find(&ctx.store, id).await?;
    if !owned_by(&record, req) {
        return Err(ApiError::not_found(format!(
            "no cluster with id or name '{id}'"
        )));
    }
    Ok(route.with_cluster(record.id))
}

/// Whether the caller of `req` owns `record`: the same principal created it (an assumed role by
/// any of its sessions, [`principal::same_owner`]). A record without a creator is nobody's.
pub(crate) fn owned_by(record: &crate::record::ClusterRecord, req: &ApiRequest) -> bool {
    match (record.created_by.as_deref(), req.caller.as_deref()) {
        (Some(by), Some(caller)) => principal::same_owner(by, caller),
        _ => false,
    }
}
