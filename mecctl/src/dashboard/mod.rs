//! `mecctl dashboard`: one web page to watch and steer every cluster.
//!
//! A small web server on 127.0.0.1 serves a single page (HTML, CSS and JS embedded in the binary,
//! no CDN) and forwards the page's `/api/…` calls 1:1 to the HTTP API, signed with SigV4 by
//! mecctl's own [`ApiClient`]: the browser never sees a credential. Only the API routes the page
//! needs are forwarded (see [`router`]); the reconcile is a dry run only.
//!
//! Safe by default, as a notebook server is, and with no credential a browser sends by itself:
//! - it listens on 127.0.0.1 only and prints `http://127.0.0.1:PORT/#token=…` with a random
//!   one-time token in the fragment (never sent in a request line, so never in a log);
//! - the page takes the token out of the address bar and exchanges it, once, for a session
//!   secret (`POST /session` with `X-Dashboard-Token`); a second exchange of the same token is
//!   `401`. The page keeps the secret in the tab's `sessionStorage` (its origin's only: another
//!   local port cannot read it) and sends it in `X-Dashboard-Session` with every `/api/…` call
//!   (after a reload, `GET /session` with it checks it still works); without it every call is
//!   `401`. No cookie is ever set: a cookie is sent to every port of the host, so another local
//!   service the browser visits would receive it;
//! - the page's own files (no secret in them) are served to anyone who passes the `Host` check;
//! - the `Host` header must be `127.0.0.1:PORT` or `localhost:PORT` (DNS rebinding), else `403`;
//! - a custom header is also what a cross-site form or `fetch` cannot send without a CORS
//!   preflight, which is never granted: no CSRF;
//! - every answer has a strict Content-Security-Policy, `X-Content-Type-Options: nosniff` and
//!   `Cache-Control: no-store` (the kubeconfig especially).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::cli::DashboardArgs;
use crate::client::{encode, ApiClient};
use crate::exit::Failure;

#[cfg(test)]
mod tests;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const FAVICON_SVG: &str = include_str!("../../assets/favicon.svg");

/// The Content-Security-Policy of every answer: the page's own files only, no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The header the one-time token is exchanged in (`POST /session`).
const TOKEN_HEADER: &str = "x-dashboard-token";
/// The header every `/api/…` call carries the session secret in.
const SESSION_HEADER: &str = "x-dashboard-session";

/// What every request handler shares.
pub struct Dashboard {
    api: ApiClient,
    token: String,
    port: u16,
    /// The session secret, once the token was exchanged for it (the token is spent then).
    session: std::sync::Mutex<Option<String>>,
}

impl Dashboard {
    /// A dashboard whose one-time `token` has not been exchanged yet.
    pub fn new(api: ApiClient, token: String, port: u16) -> Self {
        Dashboard {
            api,
            token,
            port,
            session: std::sync::Mutex::new(None),
        }
    }

    /// Spends the token: the session secret for the first exchange of the right token, else why not.
    fn exchange(&self, given: &str) -> Result<String, &'static str> {
        if !same(given, &self.token) {
            return Err("wrong token: open the URL mecctl dashboard printed");
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if session.is_some() {
            return Err("this token was used already: it works once (restart mecctl dashboard for a new URL)");
        }
        let secret = new_token();
        *session = Some(secret.clone());
        Ok(secret)
    }

    /// Whether `given` is the session secret.
    fn signed_in(&self, given: &str) -> bool {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session.as_deref().is_some_and(|s| same(given, s))
    }
}

type Shared = Arc<Dashboard>;

/// Serves the dashboard until Ctrl-C; prints the URL (one line on stdout) first.
pub async fn run(api: ApiClient, args: &DashboardArgs) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| Failure::other(format!("127.0.0.1:{}: {e}", args.port)))?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::other(e.to_string()))?
        .port();
    let token = new_token();
    let url = format!("http://127.0.0.1:{port}/#token={token}");
    println!("{url}");
    eprintln!(
        "mecctl dashboard: serving on 127.0.0.1:{port}; open the URL above in one tab (its token \
         works once; Ctrl-C stops)"
    );
    if args.open {
        open_browser(&url);
    }
    let app = router(Arc::new(Dashboard::new(api, token, port)));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Failure::other(format!("dashboard server: {e}")))
}

/// 256 random bits, hex (two v4 UUIDs: the OS's random source).
fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Best effort: the desktop's opener; the URL is printed anyway.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("mecctl dashboard: could not run {opener}: {e}");
    }
}

/// The page, its files and the forwarded API routes, behind [`guard`].
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/favicon.svg", get(|| asset("image/svg+xml", FAVICON_SVG)))
        .route("/session", get(session).post(exchange))
        .route("/api/clusters", get(list_clusters).post(create_cluster))
        .route(
            "/api/clusters/{id}",
            get(get_cluster).patch(patch_cluster).delete(delete_cluster),
        )
        .route("/api/clusters/{id}/{part}", get(cluster_part))
        .route(
            "/api/clusters/{id}/nodes/{instance}/replace",
            post(replace_node),
        )
        .route("/api/reconcile", post(reconcile))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The security rules (module docs), then the headers every answer carries.
async fn guard(State(d): State<Shared>, req: Request, next: Next) -> Response {
    let mut resp = check(&d, req, next).await;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn check(d: &Dashboard, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if host != format!("127.0.0.1:{}", d.port) && host != format!("localhost:{}", d.port) {
        return refuse(StatusCode::FORBIDDEN, "forbidden: unexpected Host");
    }
    let path = req.uri().path();
    let public = matches!(*req.method(), Method::GET | Method::HEAD)
        && matches!(path, "/" | "/app.js" | "/app.css" | "/favicon.svg");
    // The exchange checks its token itself.
    let exchange = *req.method() == Method::POST && path == "/session";
    if public || exchange {
        return next.run(req).await;
    }
    let signed_in = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| d.signed_in(given));
    if !signed_in {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "not signed in: open the URL mecctl dashboard printed (with its token)",
        );
    }
    next.run(req).await
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `POST /session`: the one-time token (in `X-Dashboard-Token`) for the session secret, once.
async fn exchange(State(d): State<Shared>, headers: HeaderMap) -> Response {
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match d.exchange(given) {
        Ok(secret) => Json(json!({ "session": secret })).into_response(),
        Err(why) => refuse(StatusCode::UNAUTHORIZED, why),
    }
}

/// `GET /session` (behind the session check): whether the page's stored secret still works.
async fn session() -> Json<Value> {
    Json(json!({ "signed_in": true }))
}

/// The page's JSON body; `None` if it is not JSON.
fn body_json(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn malformed() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "MalformedJson", "message": "the body is not JSON", "field": null}})),
    )
        .into_response()
}

/// One signed call to the API; status, body, `ETag` and `Location` come back as they are.
async fn forward(
    d: &Dashboard,
    method: &str,
    path: &str,
    body: Option<&Value>,
    from: &HeaderMap,
    pass: &[header::HeaderName],
) -> Response {
    let extra: Vec<(&str, &str)> = pass
        .iter()
        .filter_map(|name| Some((name.as_str(), from.get(name)?.to_str().ok()?)))
        .collect();
    match d.api.call_with_headers(method, path, body, &extra).await {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut resp = (status, Json(reply.body)).into_response();
            for name in [header::ETAG, header::LOCATION] {
                if let Some(value) = reply.headers.get(&name) {
                    resp.headers_mut().insert(name, value.clone());
                }
            }
            resp
        }
        Err(failure) => (
            StatusCode::BAD_GATEWAY,
            Json(
                json!({"error": {"code": "BadGateway", "message": failure.message, "field": null}}),
            ),
        )
            .into_response(),
    }
}

async fn list_clusters(
    State(d): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let params: Vec<String> = ["max_results", "next_token", "status", "region"]
        .iter()
        .filter_map(|k| Some(format!("{k}={}", encode(query.get(*k)?))))
        .collect();
    let path = if params.is_empty() {
        "/clusters".to_string()
    } else {
        format!("/clusters?{}", params.join("&"))
    };
    forward(&d, "GET", &path, None, &headers, &[]).await
}

async fn create_cluster(State(d): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(spec) = body_json(&body) else {
        return malformed();
    };
    let idempotency = header::HeaderName::from_static("idempotency-key");
    forward(
        &d,
        "POST",
        "/clusters",
        Some(&spec),
        &headers,
        &[idempotency],
    )
    .await
}

async fn get_cluster(
    State(d): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/clusters/{}", encode(&id));
    forward(&d, "GET", &path, None, &headers, &[]).await
}

async fn patch_cluster(
    State(d): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(change) = body_json(&body) else {
        return malformed();
    };
    let path = format!("/clusters/{}", encode(&id));
    forward(
        &d,
        "PATCH",
        &path,
        Some(&change),
        &headers,
        &[header::IF_MATCH],
    )
    .await
}

async fn delete_cluster(
    State(d): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/clusters/{}", encode(&id));
    forward(&d, "DELETE", &path, None, &headers, &[header::IF_MATCH]).await
}

/// `events`, `updates` and `kubeconfig` (as JSON); nothing else.
async fn cluster_part(
    State(d): State<Shared>,
    Path((id, part)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !matches!(part.as_str(), "events" | "updates" | "kubeconfig") {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let path = format!("/clusters/{}/{part}", encode(&id));
    forward(&d, "GET", &path, None, &headers, &[]).await
}

async fn replace_node(
    State(d): State<Shared>,
    Path((id, instance)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!(
        "/clusters/{}/nodes/{}/replace",
        encode(&id),
        encode(&instance)
    );
    forward(&d, "POST", &path, None, &headers, &[header::IF_MATCH]).await
}

/// Only ever a dry run: the page shows the plan, it does not act on the whole fleet.
async fn reconcile(State(d): State<Shared>, headers: HeaderMap) -> Response {
    let body = json!({ "dry_run": true });
    forward(&d, "POST", "/reconcile", Some(&body), &headers, &[]).await
}
