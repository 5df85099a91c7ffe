//! The HTTP API client: every request SigV4-signed (service `execute-api`) with credentials from
//! the standard AWS chain, over HTTPS (or plain HTTP for the local stack); answers as JSON.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::Target;
use crate::exit::Failure;

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ApiClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    region: String,
    credentials: SharedCredentialsProvider,
}

/// An answer: status and JSON body (a JSON string when the body is not JSON).
pub type Answer = (u16, Value);

/// An answer with its headers, for the commands that read one (`ETag`, `Location`).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: hyper::HeaderMap,
}

impl Reply {
    /// The header `name`'s value, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl ApiClient {
    pub async fn new(target: Target) -> Result<ApiClient, Failure> {
        let credentials = match target.local_credentials {
            Some((id, secret)) => SharedCredentialsProvider::new(Credentials::new(
                id,
                secret,
                None,
                None,
                "mecctl-local-stack",
            )),
            None => {
                let sdk = aws_config::defaults(BehaviorVersion::latest())
                    .region(aws_config::Region::new(target.region.clone()))
                    .load()
                    .await;
                sdk.credentials_provider().ok_or_else(|| {
                    Failure::other("no AWS credentials: configure a profile or AWS_* variables")
                })?
            }
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| Failure::other(format!("no TLS root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ApiClient {
            http: Client::builder(TokioExecutor::new()).build(https),
            base: target.endpoint,
            region: target.region,
            credentials,
        })
    }

    /// One signed call; `path` starts with `/` and carries an already-encoded query.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Failure> {
        let reply = self.call_with_headers(method, path, body, headers).await?;
        Ok((reply.status, reply.body))
    }

    /// [`ApiClient::call`], answering the response's headers too.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, Failure> {
        let url = format!("{}{path}", self.base);
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| Failure::other(e.to_string()))?,
            None => Vec::new(),
        };
        let mut unsigned: Vec<(&str, &str)> = headers.to_vec();
        if body.is_some() {
            unsigned.push(("content-type", "application/json"));
        }
        let signed = self.sign(method, &url, &unsigned, &payload).await?;
        let mut req = hyper::Request::builder().method(method).uri(&url);
        for (name, value) in unsigned.iter().copied() {
            req = req.header(name, value);
        }
        for (name, value) in &signed {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| Failure::other(format!("bad request for {url}: {e}")))?;
        let send = async {
            let resp = self.http.request(req).await?;
            let status = resp.status().as_u16();
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, parts.headers, bytes))
        };
        let (status, headers, bytes) = tokio::time::timeout(CALL_TIMEOUT, send)
            .await
            .map_err(|_| Failure::other(format!("{method} {url}: no answer in 30 s")))?
            .map_err(|e| Failure::other(format!("{method} {url}: {}", chain(&*e))))?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Reply {
            status,
            body: value,
            headers,
        })
    }

    /// The SigV4 headers (`authorization`, `x-amz-date`, and the session token if any).
    async fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Vec<(String, String)>, Failure> {
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| Failure::other(format!("AWS credentials: {e}")))?;
        let identity: Identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Failure::other(format!("signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(payload),
        )
        .map_err(|e| Failure::other(format!("signing {url}: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Failure::other(format!("signing: {e}")))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

/// An error and its sources on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Everything but RFC 3986's unreserved characters is escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query value or path segment (RFC 3986 unreserved characters stay).
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("eu-west-1"), "eu-west-1");
        assert_eq!(encode("a+b/c="), "a%2Bb%2Fc%3D");
    }

    #[tokio::test]
    async fn requests_carry_a_sigv4_authorization() {
        let client = ApiClient::new(Target {
            endpoint: "http://127.0.0.1:1/api".into(),
            region: "eu-west-1".into(),
            local_credentials: Some(("AKIDEXAMPLE".into(), "secret".into())),
        })
        .await
        .unwrap();
        let headers = client
            .sign(
                "POST",
                "http://127.0.0.1:1/api/clusters",
                &[("content-type", "application/json")],
                b"{}",
            )
            .await
            .unwrap();
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .expect("authorization")
            .1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/eu-west-1/execute-api/aws4_request")
                && auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert!(headers.iter().any(|(k, _)| k == "x-amz-date"));
        // Nothing listens on port 1: a network failure is an API failure (exit 1), not a panic.
        let err = client.call("GET", "/healthz", None, &[]).await.unwrap_err();
        assert_eq!(err.code, crate::exit::API);
    }
}
