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
