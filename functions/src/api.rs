//! Lambda `api`: the HTTP API behind API Gateway (payload 2.0). Builds the SDK configuration and
//! the adapters once per cold start (EC2 and SSM clients per region on first use, for `POST /reconcile` and the placement checks of `POST /clusters`), then converts each `lambda_http` request into a
//! [`mecplane::api::ApiRequest`], answers it with [`mecplane::api::handle`], and converts back.
//! Everything else lives in the library, where it is tested against the fakes.

use lambda_http::request::RequestContext;
use lambda_http::{run, service_fn, Body, Request, RequestExt, Response};
use mecplane::api::{self, ApiRequest, ApiResponse};

use crate::runtime::{Control, Error};

/// Builds the clients once, then serves API Gateway requests.
pub async fn serve() -> Result<(), Error> {
    let control = Control::load().await?;
    let ports_in = control.ports_in();
    let (ctx, fleet) = (&control.ctx, &control.fleet(&ports_in));
    run(service_fn(move |req: Request| async move {
        let answer = api::handle_with(ctx, into_api_request(req), Some(fleet)).await;
        Ok::<_, Error>(into_response(answer))
    }))
    .await
}

/// The request as the API sees it: the path without the stage (`rawPath`), decoded query
/// parameters, headers with UTF-8 values, and the body (already base64-decoded by `lambda_http`).
fn into_api_request(req: Request) -> ApiRequest {
    let path = match req.raw_http_path() {
        "" => req.uri().path().to_string(),
        raw => raw.to_string(),
    };
    let query = req
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect();
    let caller = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    };
    ApiRequest {
        method: req.method().as_str().to_string(),
        path,
        query,
        headers,
        body: req.body().to_vec(),
        caller,
    }
}

/// The API's answer as a `lambda_http` response: text bodies as text, anything else as binary.
fn into_response(answer: ApiResponse) -> Response<Body> {
    let mut builder = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = match String::from_utf8(answer.body) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    builder.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not build the response");
        into_response(api::ApiError::internal().into_response())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API Gateway v2 event, as the deployed stack and the local gateway send it.
    fn event(
        method: &str,
        raw_path: &str,
        query: &str,
        body: Option<&str>,
        base64: bool,
    ) -> Request {
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": raw_path,
            "rawQueryString": query,
            "headers": {"content-type": "application/json", "idempotency-key": "k-1"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "example.com", "domainPrefix": "example",
                "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
                "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "01/Jan/2025:00:00:00 +0000", "timeEpoch": 0,
                "authorizer": {"iam": {"accessKey": "AKIDALICE", "accountId": "123456789012", "callerId": "AIDALICE",
                    "userArn": "arn:aws:iam::123456789012:user/alice", "userId": "AIDALICE"}}
            },
            "body": body,
            "isBase64Encoded": base64,
        });
        lambda_http::request::from_str(&event.to_string()).expect("a v2 event")
    }

    #[test]
    fn requests_convert_with_path_query_headers_and_body() {
        let req = into_api_request(event(
            "GET",
            "/clusters",
            "max_results=2&status=ACTIVE&region=eu%2Dwest%2D1",
            None,
            false,
        ));
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("GET", "/clusters")
        );
        let mut query = req.query.clone();
        query.sort();
        assert_eq!(
            query,
            vec![
                ("max_results".to_string(), "2".to_string()),
                ("region".to_string(), "eu-west-1".to_string()),
                ("status".to_string(), "ACTIVE".to_string())
            ]
        );
        assert_eq!(req.header("Idempotency-Key"), Some("k-1"));
        assert_eq!(
            req.caller.as_deref(),
            Some("arn:aws:iam::123456789012:user/alice"),
            "the signing principal, for idempotency keys"
        );
        assert!(req.body.is_empty());

        let req = into_api_request(event(
            "POST",
            "/clusters",
            "",
            Some(r#"{"name":"edge"}"#),
            false,
        ));
        assert_eq!(req.body, br#"{"name":"edge"}"#);
        // {"name":"edge"} in base64
        let req = into_api_request(event(
            "POST",
            "/clusters",
            "",
            Some("eyJuYW1lIjoiZWRnZSJ9"),
            true,
        ));
        assert_eq!(req.body, br#"{"name":"edge"}"#);
    }

    #[test]
    fn responses_keep_status_headers_and_body() {
        let answer = ApiResponse::json(202, &serde_json::json!({"id": "c-1"}))
            .with_header("location", "/clusters/c-1");
        let response = into_response(answer);
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["location"], "/clusters/c-1");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.body(), &Body::Text(r#"{"id":"c-1"}"#.into()));
    }
}
