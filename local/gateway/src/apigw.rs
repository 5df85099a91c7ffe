//! `/api/*`: an API Gateway HTTP API (payload format 2.0) in front of the `api` function.
//!
//! The request becomes a v2 event (`version` "2.0", `routeKey` "$default", `rawPath` without the
//! `/api` prefix, cookies split out, headers lowercased and comma-joined, decoded
//! `queryStringParameters`, an IAM authorizer context taken from the SigV4 credential, the body
//! base64-encoded when it is not UTF-8); the function's answer (structured `statusCode` form, or the
//! bare-JSON shortcut) becomes the HTTP response. Like API Gateway with `AWS_IAM` auth, a request
//! without a SigV4 `Authorization` header gets 403 `{"message":"Forbidden"}` (the signature itself
//! is not verified); bodies over 10 MB get 413; a failing function gets 500
//! `{"message":"Internal Server Error"}`.

use std::collections::HashMap;
use std::net::SocketAddr;

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext,
    ApiGatewayV2httpRequestContextHttpDescription,
};
use aws_lambda_events::query_map::QueryMap;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::arn::function_arn;
use crate::config::ApiAuth;
use crate::functions::Outcome;

/// The function behind `/api`.
pub const API_FUNCTION: &str = "api";

/// API Gateway's payload limit.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// The IAM caller named by a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The access key id of the credential scope.
    pub access_key: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request,
/// SignedHeaders=..., Signature=...` (shape only).
pub fn parse_sigv4(header: &str) -> Option<Caller> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let mut credential = None;
    let mut signed_headers = false;
    let mut signature = false;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = !v.is_empty(),
            "Signature" => signature = !v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit()),
            _ => {}
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    match scope.as_slice() {
        [key, date, _region, _service, "aws4_request"]
            if !key.is_empty() && date.len() == 8 && signed_headers && signature =>
        {
            Some(Caller {
                access_key: key.to_string(),
            })
        }
        _ => None,
    }
}

/// Decodes a query string as API Gateway does for `queryStringParameters`: form decoding (`+` and
/// `%XX`, malformed escapes kept as they are) by `form_urlencoded`, a key without `=` gets `""`,
/// and a repeated key keeps every value in order (serialized comma-joined).
pub fn query_parameters(raw: &str) -> QueryMap {
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        params
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    QueryMap::from(params)
}

/// The parts of an HTTP request the event is built from.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path after `/api` (at least `/`).
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// `HTTP/1.1`.
    pub protocol: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Body.
    pub body: &'a [u8],
    /// The client's IP.
    pub source_ip: String,
}

/// Builds the payload format 2.0 event as the `aws_lambda_events` type the `api` function
/// deserializes (through `lambda_http`), so both sides agree on the JSON by construction.
///
/// The crate's serializer also writes the members it knows for other payloads (`type`,
/// `methodArn`, `identitySource`, `authorizationToken`, `resource` as `null`, `stageVariables` as
/// `{}`, and the deprecated top-level `httpMethod`, set here to the request's method); API Gateway
/// leaves them out, and readers of payload 2.0 ignore them.
pub fn build_event(
    req: &HttpRequest<'_>,
    caller: Option<&Caller>,
    account: &str,
    request_id: &str,
    now: OffsetDateTime,
) -> ApiGatewayV2httpRequest {
    // One comma-joined value per (lowercase) name; `cookie` goes to `cookies` instead.
    let mut headers = HeaderMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for name in req.headers.keys() {
        let values = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if name == header::COOKIE {
            for value in values {
                cookies.extend(
                    value
                        .split(';')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_string),
                );
            }
            continue;
        }
        let joined = values.collect::<Vec<_>>().join(",");
        // The parts were valid header values, so the joined (lossy UTF-8) text is one too.
        if let Ok(value) = HeaderValue::from_str(&joined) {
            headers.insert(name.clone(), value);
        }
    }
    let domain = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let user_agent = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = req.method.clone();
    http.path = Some(req.path.to_string());
    http.protocol = Some(req.protocol.to_string());
    http.source_ip = Some(req.source_ip.clone());
    http.user_agent = Some(user_agent);

    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some("$default".into());
    context.account_id = Some(account.to_string());
    context.stage = Some("$default".into());
    context.request_id = Some(request_id.to_string());
    context.apiid = Some("local".into());
    context.domain_prefix = domain.split('.').next().map(str::to_string);
    context.domain_name = Some(domain);
    context.time = Some(format_clf(now));
    context.time_epoch = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    context.http = http;
    context.authorizer = caller.map(|caller| {
        let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
        iam.access_key = Some(caller.access_key.clone());
        iam.account_id = Some(account.to_string());
        iam.caller_id = Some(caller.access_key.clone());
        // One local principal per access key, so callers are told apart as on AWS.
        iam.user_arn = Some(format!("arn:aws:iam::{account}:user/{}", caller.access_key));
        iam.user_id = Some(caller.access_key.clone());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.iam = Some(iam);
        authorizer
    });

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some("$default".into());
    event.raw_path = Some(req.path.to_string());
    event.raw_query_string = Some(req.query.to_string());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = headers;
    event.query_string_parameters = query_parameters(req.query);
    event.request_context = context;
    // Deprecated (a Custom Authorizer v1 member) but always serialized; make it tell the truth.
    #[allow(deprecated)]
    {
        event.http_method = req.method.clone();
    }
    if !req.body.is_empty() {
        match std::str::from_utf8(req.body) {
            Ok(text) => event.body = Some(text.to_string()),
            Err(_) => {
                event.body = Some(base64::engine::general_purpose::STANDARD.encode(req.body));
                event.is_base64_encoded = true;
            }
        }
    }
    event
}

/// `12/Mar/2020:19:03:58 +0000`, the format of `requestContext.time`.
pub fn format_clf(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

/// An HTTP response decoded from the function's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status.
    pub status: u16,
    /// Headers in order (repeated names allowed).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Why a function answer is not a valid response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Lambda proxy response: {0}")]
pub struct MalformedResponse(pub String);

fn header_value_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Interprets the function's payload as API Gateway (format 2.0) does.
pub fn map_response(payload: &[u8]) -> Result<HttpResponse, MalformedResponse> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| MalformedResponse(format!("not JSON: {e}")))?;
    let json_ct = || vec![("content-type".to_string(), "application/json".to_string())];
    let obj = match &value {
        Value::Object(obj) if obj.contains_key("statusCode") => obj,
        Value::String(s) => {
            return Ok(HttpResponse {
                status: 200,
                headers: json_ct(),
                body: s.clone().into_bytes(),
            })
        }
        _ => {
            return Ok(HttpResponse {
                status: 200,
                headers: json_ct(),
                body: payload.to_vec(),
            })
        }
    };
    let status = match obj.get("statusCode") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| (100..=599).contains(s))
    .ok_or_else(|| MalformedResponse("statusCode".into()))? as u16;

    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let v = header_value_string(v)
                    .ok_or_else(|| MalformedResponse(format!("header {k}")))?;
                headers.push((k.to_ascii_lowercase(), v));
            }
        }
        Some(_) => return Err(MalformedResponse("headers".into())),
    }
    match obj.get("multiValueHeaders") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, vs) in h {
                let Value::Array(vs) = vs else {
                    return Err(MalformedResponse(format!("multiValueHeaders {k}")));
                };
                let k = k.to_ascii_lowercase();
                headers.retain(|(name, _)| name != &k);
                for v in vs {
                    let v = header_value_string(v)
                        .ok_or_else(|| MalformedResponse(format!("multiValueHeaders {k}")))?;
                    headers.push((k.clone(), v));
                }
            }
        }
        Some(_) => return Err(MalformedResponse("multiValueHeaders".into())),
    }
    match obj.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cs)) => {
            for c in cs {
                let c =
                    header_value_string(c).ok_or_else(|| MalformedResponse("cookies".into()))?;
                headers.push(("set-cookie".into(), c));
            }
        }
        Some(_) => return Err(MalformedResponse("cookies".into())),
    }
    let base64 = matches!(obj.get("isBase64Encoded"), Some(Value::Bool(true)));
    let body = match obj.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if base64 => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| MalformedResponse("body is not base64".into()))?,
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn message(status: StatusCode, text: &str) -> Response {
    let mut resp = (
        status,
        [("content-type", "application/json")],
        json!({ "message": text }).to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("apigw-requestid", v);
    }
    resp
}

fn internal_error() -> Response {
    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

/// The `/api` and `/api/*` handler.
pub async fn handle(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let caller = parts
        .headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(parse_sigv4);
    if app.api_auth == ApiAuth::Sigv4 && caller.is_none() {
        return message(StatusCode::FORBIDDEN, "Forbidden");
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
    };
    let full_path = parts.uri.path();
    let path = match full_path.strip_prefix("/api") {
        Some("") | None => "/",
        Some(p) => p,
    };
    let protocol = format!("{:?}", parts.version);
    let request_id = uuid::Uuid::new_v4().to_string();
    let http = HttpRequest {
        method: &parts.method,
        path,
        query: parts.uri.query().unwrap_or(""),
        protocol: &protocol,
        headers: &parts.headers,
        body: &body,
        source_ip: peer.ip().to_string(),
    };
    let event = build_event(
        &http,
        caller.as_ref(),
        app.account,
        &request_id,
        OffsetDateTime::now_utc(),
    );
    let Some(pool) = app.functions.get(API_FUNCTION).cloned() else {
        tracing::warn!("no `api` function is hosted");
        return internal_error();
    };
    let event = match serde_json::to_vec(&event) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialize the API Gateway event");
            return internal_error();
        }
    };
    let arn = function_arn(&app.region, app.account, API_FUNCTION, None);
    let (_, outcome) = pool.invoke(Bytes::from(event), arn, None).await;
    let payload = match outcome {
        Outcome::Success(p) => p,
        Outcome::Error(e) => {
            tracing::warn!(error = %String::from_utf8_lossy(&e), "api function failed");
            return internal_error();
        }
    };
    match map_response(&payload) {
        Ok(r) => into_http(r, &request_id),
        Err(e) => {
            tracing::warn!(error = %e, "api function answered a malformed response");
            internal_error()
        }
    }
}

fn into_http(r: HttpResponse, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            headers.append(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("apigw-requestid", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd";

    #[test]
    fn sigv4_shape() {
        assert_eq!(
            parse_sigv4(AUTH),
            Some(Caller {
                access_key: "AKIDEXAMPLE".into()
            })
        );
        assert_eq!(parse_sigv4("Bearer x"), None);
        assert_eq!(
            parse_sigv4("AWS4-HMAC-SHA256 Credential=AK/2024/us-east-1/x/aws4_request, SignedHeaders=host, Signature=ab"),
            None
        );
        assert_eq!(
            parse_sigv4("AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/x/aws4_request, SignedHeaders=host"),
            None
        );
    }

    #[test]
    fn decodes_query_parameters() {
        let q = query_parameters("a=a%20b+c%2Fd&b=100%&c=%zz&d=%41&e&&a=2");
        assert_eq!(q.all("a"), Some(vec!["a b c/d", "2"]));
        assert_eq!(q.first("b"), Some("100%"));
        assert_eq!(q.first("c"), Some("%zz"));
        assert_eq!(q.first("d"), Some("A"));
        assert_eq!(q.first("e"), Some(""));
        assert_eq!(q.iter().count(), 6);
        assert!(query_parameters("").is_empty());
    }

    fn sample_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Host", HeaderValue::from_static("127.0.0.1:47500"));
        h.insert("User-Agent", HeaderValue::from_static("mecctl/0.1"));
        h.append("X-Multi", HeaderValue::from_static("a"));
        h.append("X-Multi", HeaderValue::from_static("b"));
        h.insert("Cookie", HeaderValue::from_static("s=1; t=2"));
        h.insert("authorization", HeaderValue::from_static(AUTH));
        h
    }

    const QUERY: &str = "name=my%20c&tag=a&tag=b&flag";

    fn sample_event() -> ApiGatewayV2httpRequest {
        let headers = sample_headers();
        let req = HttpRequest {
            method: &Method::POST,
            path: "/clusters",
            query: QUERY,
            protocol: "HTTP/1.1",
            headers: &headers,
            body: br#"{"x":1}"#,
            source_ip: "127.0.0.1".into(),
        };
        let caller = parse_sigv4(AUTH);
        let now = OffsetDateTime::from_unix_timestamp(1_584_039_838).unwrap();
        build_event(&req, caller.as_ref(), "123456789012", "rid", now)
    }

    /// The event as the `api` function receives it.
    fn to_json(ev: &ApiGatewayV2httpRequest) -> Value {
        serde_json::to_value(ev).expect("the event serializes")
    }

    #[test]
    fn builds_v2_event() {
        let ev = to_json(&sample_event());
        assert_eq!(ev["version"], "2.0");
        assert_eq!(ev["routeKey"], "$default");
        assert_eq!(ev["rawPath"], "/clusters");
        assert_eq!(ev["rawQueryString"], QUERY);
        assert_eq!(
            ev["queryStringParameters"],
            json!({"name": "my c", "tag": "a,b", "flag": ""})
        );
        assert_eq!(ev["headers"]["x-multi"], "a,b");
        assert_eq!(ev["headers"]["host"], "127.0.0.1:47500");
        assert_eq!(ev["headers"]["authorization"], AUTH);
        assert!(ev["headers"].get("cookie").is_none());
        assert_eq!(ev["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(ev["body"], r#"{"x":1}"#);
        assert_eq!(ev["isBase64Encoded"], false);
        assert!(ev.get("pathParameters").is_none());
        let ctx = &ev["requestContext"];
        assert_eq!(ctx["routeKey"], "$default");
        assert_eq!(ctx["accountId"], "123456789012");
        assert_eq!(ctx["apiId"], "local");
        assert_eq!(ctx["stage"], "$default");
        assert_eq!(ctx["requestId"], "rid");
        assert_eq!(ctx["domainName"], "127.0.0.1:47500");
        assert_eq!(ctx["domainPrefix"], "127");
        assert_eq!(ctx["http"]["method"], "POST");
        assert_eq!(ctx["http"]["path"], "/clusters");
        assert_eq!(ctx["http"]["protocol"], "HTTP/1.1");
        assert_eq!(ctx["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(ctx["http"]["userAgent"], "mecctl/0.1");
        assert_eq!(ctx["time"], "12/Mar/2020:19:03:58 +0000");
        assert_eq!(ctx["timeEpoch"], 1_584_039_838_000i64);
        assert_eq!(
            ctx["authorizer"],
            json!({"iam": {
                "accessKey": "AKIDEXAMPLE",
                "accountId": "123456789012",
                "callerId": "AKIDEXAMPLE",
                "principalOrgId": null,
                "userArn": "arn:aws:iam::123456789012:user/AKIDEXAMPLE",
                "userId": "AKIDEXAMPLE",
            }})
        );
    }

    #[test]
    fn lambda_http_reads_the_event() {
        use lambda_http::{Body as LambdaBody, RequestExt};

        let text = serde_json::to_string(&sample_event()).unwrap();
        let req = lambda_http::request::from_str(&text).expect("lambda_http accepts the event");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/clusters");
        assert_eq!(req.uri().query(), Some(QUERY));
        assert_eq!(req.headers()["x-multi"], "a,b");
        assert_eq!(req.headers()["cookie"], "s=1; t=2");
        assert_eq!(req.raw_http_path(), "/clusters");
        let q = req.query_string_parameters();
        assert_eq!(q.first("name"), Some("my c"));
        assert_eq!(q.all("tag"), Some(vec!["a", "b"]));
        assert_eq!(req.body(), &LambdaBody::Text(r#"{"x":1}"#.into()));
        let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) =
            req.request_context_ref()
        else {
            panic!("not an API Gateway v2 request");
        };
        let iam = ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .unwrap();
        assert_eq!(iam.access_key.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(
            iam.user_arn.as_deref(),
            Some("arn:aws:iam::123456789012:user/AKIDEXAMPLE")
        );
        assert_eq!(ctx.http.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(ctx.request_id.as_deref(), Some("rid"));

        // And the typed event survives the trip through JSON unchanged.
        let back: ApiGatewayV2httpRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample_event());
    }

    #[test]
    fn binary_body_is_base64() {
        let headers = HeaderMap::new();
        let req = HttpRequest {
            method: &Method::PUT,
            path: "/",
            query: "",
            protocol: "HTTP/1.1",
            headers: &headers,
            body: &[0xff, 0x00, 0x80],
            source_ip: "127.0.0.1".into(),
        };
        let ev = to_json(&build_event(
            &req,
            None,
            "123456789012",
            "r",
            OffsetDateTime::UNIX_EPOCH,
        ));
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], "/wCA");
        assert_eq!(ev["rawQueryString"], "");
        assert_eq!(ev["requestContext"]["domainName"], "localhost");
        assert_eq!(ev["requestContext"]["http"]["method"], "PUT");
        assert!(ev["requestContext"].get("authorizer").is_none());
        assert!(ev.get("queryStringParameters").is_none());
        assert!(ev.get("cookies").is_none());

        let req = lambda_http::request::from_str(&ev.to_string()).unwrap();
        assert_eq!(req.body().as_ref(), &[0xff, 0x00, 0x80]);
    }

    #[test]
    fn maps_structured_response() {
        let r = map_response(
            br#"{"statusCode":201,"headers":{"Content-Type":"application/json","X-N":3},
                "multiValueHeaders":{"x-m":["1","2"]},"cookies":["a=1","b=2"],"body":"{\"ok\":true}"}"#,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, br#"{"ok":true}"#);
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        assert!(r.headers.contains(&("x-n".into(), "3".into())));
        assert!(r.headers.contains(&("x-m".into(), "1".into())));
        assert!(r.headers.contains(&("x-m".into(), "2".into())));
        assert!(r.headers.contains(&("set-cookie".into(), "a=1".into())));
        assert!(r.headers.contains(&("set-cookie".into(), "b=2".into())));
    }

    #[test]
    fn maps_base64_and_shortcuts() {
        let r =
            map_response(br#"{"statusCode":200,"body":"/wCA","isBase64Encoded":true}"#).unwrap();
        assert_eq!(r.body, vec![0xff, 0x00, 0x80]);
        assert!(r.headers.is_empty());

        let r = map_response(br#""hello""#).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );

        let r = map_response(br#"{"message":"hi"}"#).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &br#"{"message":"hi"}"#[..])
        );

        let r = map_response(br#"{"statusCode":"404"}"#).unwrap();
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty());
    }

    #[test]
    fn rejects_malformed_responses() {
        assert!(map_response(b"not json").is_err());
        assert!(map_response(br#"{"statusCode":"abc"}"#).is_err());
        assert!(map_response(br#"{"statusCode":42}"#).is_err());
        assert!(map_response(br#"{"statusCode":200,"headers":[1]}"#).is_err());
        assert!(map_response(br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#).is_err());
    }
}
