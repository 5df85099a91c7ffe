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
    let app = router(Arc::new(Dashboard {
        api,
        token: TOKEN.into(),
        port,
    }));
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

fn cookie(port: u16) -> String {
    format!("mecctl_dashboard_{port}={TOKEN}")
}

#[tokio::test]
async fn the_token_once_sets_a_strict_cookie_and_drops_itself_from_the_url() {
    let port = dashboard().await;
    let (status, headers, _) = send(port, "GET", &format!("/?token={TOKEN}"), &[], "").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/");
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with(&cookie(port)), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );

    // without the cookie (or with a wrong token) nothing is served, not even the page
    for path in ["/", "/app.js", "/session", "/api/clusters"] {
        let (status, _, _) = send(port, "GET", path, &[], "").await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, headers, _) = send(port, "GET", "/?token=guess", &[], "").await;
    assert_eq!(status, 401);
    assert!(headers.get("set-cookie").is_none());
    let (status, _, _) = send(
        port,
        "GET",
        "/session",
        &[("cookie", &format!("mecctl_dashboard_{port}=guess"))],
        "",
    )
    .await;
    assert_eq!(status, 401);

    // with it: the page and the CSRF token
    let (status, headers, page) = send(port, "GET", "/", &[("cookie", &cookie(port))], "").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("<script src=\"/app.js\""), "{page}");
    let (status, _, session) =
        send(port, "GET", "/session", &[("cookie", &cookie(port))], "").await;
    assert_eq!(status, 200);
    assert_eq!(session, format!("{{\"csrf\":\"{TOKEN}\"}}"));
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
        let (status, _, _) = send(
            port,
            "GET",
            "/api/clusters",
            &[("host", &host), ("cookie", &cookie(port))],
            "",
        )
        .await;
        assert_eq!(status, 403, "{host}");
        let (status, headers, _) = send(
            port,
            "GET",
            &format!("/?token={TOKEN}"),
            &[("host", &host)],
            "",
        )
        .await;
        assert_eq!(status, 403, "{host}");
        assert!(headers.get("set-cookie").is_none());
    }
    let localhost = format!("localhost:{port}");
    let (status, _, _) = send(
        port,
        "GET",
        "/api/clusters",
        &[("host", &localhost), ("cookie", &cookie(port))],
        "",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_change_needs_the_csrf_header() {
    let port = dashboard().await;
    let c = cookie(port);
    for (method, path) in [
        ("POST", "/api/clusters"),
        ("PATCH", "/api/clusters/c-1"),
        ("DELETE", "/api/clusters/c-1"),
        ("POST", "/api/reconcile"),
        ("POST", "/api/clusters/c-1/nodes/i-1/replace"),
    ] {
        let (status, _, _) = send(port, method, path, &[("cookie", &c)], "{}").await;
        assert_eq!(status, 403, "{method} {path}");
        let (status, _, _) = send(
            port,
            method,
            path,
            &[("cookie", &c), ("x-dashboard-token", "guess")],
            "{}",
        )
        .await;
        assert_eq!(status, 403, "{method} {path}");
    }
    // with it, the change is forwarded signed, with If-Match, and ETag and Location come back;
    // the browser's cookie is not
    let (status, headers, body) = send(
        port,
        "PATCH",
        "/api/clusters/c-1",
        &[
            ("cookie", &c),
            ("x-dashboard-token", TOKEN),
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
        &[("cookie", &c), ("x-dashboard-token", TOKEN)],
        "not json",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn every_answer_is_uncached_and_under_a_strict_csp() {
    let port = dashboard().await;
    let c = cookie(port);
    for (path, want) in [
        ("/", 200),
        ("/app.js", 200),
        ("/app.css", 200),
        ("/api/clusters/c-1/kubeconfig", 200),
        ("/api/clusters/c-1/secrets", 404),
        ("/api/healthz", 404),
        ("/elsewhere", 404),
    ] {
        let (status, headers, _) = send(port, "GET", path, &[("cookie", &c)], "").await;
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
    let (_, headers, _) = send(port, "GET", "/", &[], "").await;
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
    assert_eq!(query_token("x=1&token=ab%2Bc"), Some("ab+c".into()));
    assert_eq!(query_token("tokens=1"), None);
}

#[tokio::test]
async fn a_create_goes_with_its_idempotency_key_and_its_422_comes_back_whole() {
    let port = dashboard().await;
    let spec = json!({
        "name": "edge",
        "exposed_ports": [{"port": 22, "protocol": "tcp", "cidrs": ["10.0.0.0/8"]}],
    });
    let (status, _, body) = send(
        port,
        "POST",
        "/api/clusters",
        &[
            ("cookie", &cookie(port)),
            ("x-dashboard-token", TOKEN),
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
