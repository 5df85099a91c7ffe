//! The public router and its shared state, in the order of docs/architecture.md:
//! Lambda Invoke, `/api`, `/_sim`, `/_local/functions`, `/_local/calls` and `/_local/reconciles`
//! (the gateway's own inspection), then the fallback (SSM Run Command → simulator, EC2
//! faults, everything else → moto). The Runtime API is not here: each sandbox has its own listener.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use mecplane_nodesim::Simulator;

use crate::config::ApiAuth;
use crate::functions::Functions;
use crate::proxy::Moto;

/// State shared by the public routes.
#[derive(Clone)]
pub struct AppState {
    /// The hosted functions.
    pub functions: Functions,
    /// The region of ARNs.
    pub region: String,
    /// The account of ARNs.
    pub account: &'static str,
    /// `/api` authorisation.
    pub api_auth: ApiAuth,
    /// moto.
    pub moto: Moto,
    /// The node simulator (`None` with `--sim off`).
    pub sim: Option<Arc<Simulator>>,
    /// The IAM actions each function used.
    pub calls: Arc<crate::calls::Calls>,
    /// The `reconcile` runs the emulated triggers made (see [`crate::reconcile`]).
    pub reconciles: Arc<crate::reconcile::Reconciles>,
    /// Other local stacks sharing this gateway's moto, by their home region (see [`Peers`]).
    pub peers: Peers,
}

/// Other gateways whose stacks share this gateway's moto (a second deployment in the same
/// account), by their home region. moto's Step Functions calls Lambda on one port, this
/// gateway's: an invocation of a function in a peer's region is that peer's to serve, and
/// [`crate::invoke`] forwards it there, as Lambda routes by region.
#[derive(Clone, Default)]
pub struct Peers(Arc<std::sync::RwLock<std::collections::HashMap<String, Moto>>>);

impl Peers {
    /// The gateway serving `region`'s functions, if one registered.
    pub fn of(&self, region: &str) -> Option<Moto> {
        let peers = self.0.read().unwrap_or_else(|e| e.into_inner());
        peers.get(region).cloned()
    }

    fn set(&self, region: &str, url: &str) {
        let mut peers = self.0.write().unwrap_or_else(|e| e.into_inner());
        peers.insert(region.to_string(), Moto::new(url));
    }
}

/// `PUT /_local/peers/{region}` with the peer gateway's URL as the body: that gateway serves the
/// functions of `region` (its home region) on this gateway's moto.
async fn put_peer(
    State(app): State<AppState>,
    axum::extract::Path(region): axum::extract::Path<String>,
    url: String,
) -> axum::http::StatusCode {
    let url = url.trim();
    if region == app.region || !url.starts_with("http://127.0.0.1:") {
        return axum::http::StatusCode::BAD_REQUEST;
    }
    app.peers.set(&region, url);
    axum::http::StatusCode::NO_CONTENT
}

/// `GET /_local/functions`: every hosted function with its ARN, live processes and invocation count.
async fn functions(State(app): State<AppState>) -> Json<serde_json::Value> {
    let mut list: Vec<serde_json::Value> = app
        .functions
        .all()
        .map(|p| {
            serde_json::json!({
                "name": p.name(),
                "arn": p.arn(),
                "processes": p.process_count(),
                "invocations": p.invocation_count(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(serde_json::json!({ "functions": list }))
}

/// `GET /_local/calls`: the IAM actions each hosted function used (see [`crate::calls`]).
async fn calls(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "calls": app.calls.to_json() }))
}

/// `GET /_local/reconciles`: the runs of the `reconcile` function the emulated schedule and EC2
/// state-change events made (see [`crate::reconcile`]).
async fn reconciles(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(app.reconciles.to_json())
}

/// The public router.
pub fn router(state: AppState) -> Router {
    let sim_routes = state.sim.clone().map(Simulator::control_router);
    let routes = Router::new()
        .route(
            "/2015-03-31/functions/{function_name}/invocations",
            post(crate::invoke::invoke)
                .layer(DefaultBodyLimit::max(crate::invoke::REQUEST_LIMIT + 1)),
        )
        .route("/_local/functions", get(functions))
        .route("/_local/calls", get(calls))
        .route("/_local/reconciles", get(reconciles))
        .route("/_local/peers/{region}", axum::routing::put(put_peer))
        .route("/api", any(crate::apigw::handle))
        .route("/api/", any(crate::apigw::handle))
        .route("/api/{*rest}", any(crate::apigw::handle))
        .fallback(crate::proxy::handle)
        .with_state(state);
    // The simulator's router serves full `/_sim/...` paths.
    match sim_routes {
        Some(sim) => routes.merge(sim),
        None => routes,
    }
}
