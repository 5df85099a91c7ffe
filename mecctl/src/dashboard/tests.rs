//! The dashboard's security rules and its forwarding, against a small fake API on a free port.

use super::*;
use crate::config::Target;
use axum::routing::get;
use bytes::Bytes as RawBytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A fake API under `/api`: a cluster whose answers echo what the dashboard sent.
async fn fake_api() -> String {
    let echo = |method: &'static str| {
        move |headers: HeaderMap| async move {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            (
                StatusCode::ACCEPTED,
                [(header::ETAG, "\"4\""), (header::LOCATION, "/clusters/c-1")],
                Json(json!({
                    "method": method,
                    "signed": h("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")),
                    "if_match": h("if-match"),
                    "cookie": h("cookie"),
                })),
            )
        }
    };
    // A create is refused the way the API refuses a nested field, echoing what it was sent.
    let refuse_create = |headers: HeaderMap, Json(body): Json<Value>| async move {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": {"code": "InvalidRequest", "message": "22 (SSH) is never opened", "field": "exposed_ports[0].port"},
                "sent": body,
                "idempotency_key": headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
            })),
        )
    };
    let app = Router::new()
        .route(
            "/api/clusters",
            get(|| async { Json(json!({"clusters": [], "next_token": null})) })
                .post(refuse_create),
        )
        .route(
            "/api/clusters/{id}",
            get(echo("GET")).patch(echo("PATCH")).delete(echo("DELETE")),
        )
        .route(
            "/api/clusters/{id}/kubeconfig",
            get(|| async {
                (
                    [(header::CACHE_CONTROL, "no-store")],
                    Json(json!({"cluster_id": "c-1", "name": "edge", "kubeconfig": "apiVersion: v1\n"})),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/api")
}

/// A dashboard in front of the fake API; answers its port.
async fn dashboard() -> u16 {
    let api = ApiClient::new(Target {
        endpoint: fake_api().await,
        region: "us-east-1".into(),
        local_credentials: Some(("testing".into(), "testing".into())),
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(Arc::new(Dashboard::new(api, TOKEN.into(), port)));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// One request to the dashboard: status, headers, body text.
async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<RawBytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(
            req.body(Full::new(RawBytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Spends the token as the page does; answers the session secret.
async fn sign_in(port: u16) -> String {
    let (status, headers, body) = send(
        port,
        "POST",
        "/session",
        &[("x-dashboard-token", TOKEN)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("set-cookie").is_none(), "no cookie, ever");
    let body: Value = serde_json::from_str(&body).unwrap();
    let secret = body["session"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);
    assert_ne!(secret, TOKEN, "the secret is not the token");
    secret
}

#[tokio::test]
async fn the_token_is_exchanged_once_for_a_session_secret_and_no_cookie() {
    let port = dashboard().await;
    // A wrong token spends nothing.
    let (status, headers, _) = send(
        port,
        "POST",
        "/session",
        &[("x-dashboard-token", "guess")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers.get("set-cookie").is_none());
    let secret = sign_in(port).await;

    // The token works once: a second exchange (another tab, a stolen URL) is refused.
    let (status, headers, why) = send(
        port,
        "POST",
        "/session",
        &[("x-dashboard-token", TOKEN)],
        "",
    )
    .await;
    assert_eq!(status, 401, "{why}");
    assert!(why.contains("used already"), "{why}");
    assert!(headers.get("set-cookie").is_none());
    // The token is no session either.
    let (status, _, _) = send(
        port,
        "GET",
        "/api/clusters",
        &[("x-dashboard-session", TOKEN)],
        "",
    )
    .await;
    assert_eq!(status, 401);

    // With the secret in its header: the API, and the stored secret's check.
    for path in ["/api/clusters", "/session"] {
        let (status, headers, _) =
            send(port, "GET", path, &[("x-dashboard-session", &secret)], "").await;
        assert_eq!(status, 200, "{path}");
        assert!(headers.get("set-cookie").is_none(), "{path}");
    }
}

#[tokio::test]
async fn a_request_without_the_session_header_is_refused() {
    let port = dashboard().await;
    let secret = sign_in(port).await;
    for (method, path) in [
        ("GET", "/api/clusters"),
        ("GET", "/api/clusters/c-1"),
        ("GET", "/api/clusters/c-1/kubeconfig"),
        ("GET", "/session"),
        ("POST", "/api/clusters"),
        ("PATCH", "/api/clusters/c-1"),
        ("DELETE", "/api/clusters/c-1"),
        ("POST", "/api/reconcile"),
        ("POST", "/api/clusters/c-1/nodes/i-1/replace"),
    ] {
        let (status, _, _) = send(port, method, path, &[], "{}").await;
        assert_eq!(status, 401, "{method} {path}");
        let (status, _, _) = send(
            port,
            method,
            path,
            &[("x-dashboard-session", "guess")],
            "{}",
        )
        .await;
        assert_eq!(status, 401, "{method} {path}");
        // What a browser would send by itself (a cookie with the secret, the old token cookie)
        // is no credential.
        let (status, _, _) = send(
            port,
            method,
            path,
            &[(
                "cookie",
                &format!("mecctl_dashboard_{port}={TOKEN}; session={secret}"),
            )],
            "{}",
        )
        .await;
        assert_eq!(status, 401, "{method} {path}");
    }
    // The page's own files hold no secret: served without one, and no cookie set.
    for path in ["/", "/app.js", "/app.css", "/favicon.svg"] {
        let (status, headers, _) = send(port, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        assert!(headers.get("set-cookie").is_none(), "{path}");
    }
    let (_, _, page) = send(port, "GET", "/", &[], "").await;
    assert!(page.contains("<script src=\"/app.js\""), "{page}");
    assert!(!page.contains(TOKEN) && !page.contains(&secret));
    // The old URL form does nothing: no redirect, no cookie.
    let (status, headers, _) = send(port, "GET", &format!("/?token={TOKEN}"), &[], "").await;
    assert_eq!(status, 200);
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_the_token() {
    let port = dashboard().await;
    for host in [
        "evil.example:80".to_string(),
        format!("evil.example:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost.evil.example:{port}"),
    ] {
        // The exchange, the page and the API alike (the token stays unspent).
        for (method, path) in [("POST", "/session"), ("GET", "/"), ("GET", "/api/clusters")] {
            let (status, _, _) = send(
                port,
                method,
                path,
                &[("host", &host), ("x-dashboard-token", TOKEN)],
                "",
            )
            .await;
            assert_eq!(status, 403, "{host} {method} {path}");
        }
    }
    let secret = sign_in(port).await;
    let (status, _, _) = send(
        port,
        "GET",
        "/api/clusters",
        &[
            ("host", &format!("evil.example:{port}")),
            ("x-dashboard-session", &secret),
        ],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let localhost = format!("localhost:{port}");
    let (status, _, _) = send(
        port,
        "GET",
        "/api/clusters",
        &[("host", &localhost), ("x-dashboard-session", &secret)],
        "",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_change_is_forwarded_signed_with_if_match_and_without_the_browsers_headers() {
    let port = dashboard().await;
    let secret = sign_in(port).await;
    // The change is forwarded signed, with If-Match, and ETag and Location come back; neither
    // the browser's cookie nor the session secret goes on to the API.
    let (status, headers, body) = send(
        port,
        "PATCH",
        "/api/clusters/c-1",
        &[
            ("cookie", "other=1"),
            ("x-dashboard-session", &secret),
            ("if-match", "\"3\""),
        ],
        "{\"workers\": 2}",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(headers["etag"], "\"4\"");
    assert_eq!(headers["location"], "/clusters/c-1");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"method": "PATCH", "signed": true, "if_match": "\"3\"", "cookie": null})
    );
    let (status, _, _) = send(
        port,
        "PATCH",
        "/api/clusters/c-1",
        &[("x-dashboard-session", &secret)],
        "not json",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn every_answer_is_uncached_and_under_a_strict_csp() {
    let port = dashboard().await;
    let secret = sign_in(port).await;
    for (path, want) in [
        ("/", 200),
        ("/app.js", 200),
        ("/app.css", 200),
        ("/api/clusters/c-1/kubeconfig", 200),
        ("/api/clusters/c-1/secrets", 404),
        ("/api/healthz", 404),
        ("/elsewhere", 404),
    ] {
        let (status, headers, _) =
            send(port, "GET", path, &[("x-dashboard-session", &secret)], "").await;
        assert_eq!(status, want, "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
    }
    // refusals carry them too
    let (_, headers, _) = send(port, "GET", "/api/clusters", &[], "").await;
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("content-security-policy"));
}

#[test]
fn tokens_are_random_and_compared_whole() {
    let (a, b) = (new_token(), new_token());
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    assert!(same(&a, &a.clone()));
    assert!(!same(&a, &b) && !same(&a, &a[..63]));
}

#[tokio::test]
async fn a_create_goes_with_its_idempotency_key_and_its_422_comes_back_whole() {
    let port = dashboard().await;
    let secret = sign_in(port).await;
    let spec = json!({
        "name": "edge",
        "exposed_ports": [{"port": 22, "protocol": "tcp", "cidrs": ["10.0.0.0/8"]}],
    });
    let (status, _, body) = send(
        port,
        "POST",
        "/api/clusters",
        &[
            ("x-dashboard-session", &secret),
            ("idempotency-key", "dashboard-1"),
            ("content-type", "application/json"),
        ],
        &spec.to_string(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["field"], "exposed_ports[0].port");
    assert_eq!(body["sent"], spec);
    assert_eq!(body["idempotency_key"], "dashboard-1");
}
