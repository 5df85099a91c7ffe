//! A private moto server for a test, started the one way the tests start anything: by
//! `mecplane-local` ([`Gateway::launch_with`]) with its own moto on a free port, no node simulator and
//! nothing provisioned; the tests talk to moto directly. Stopped when the [`Moto`] is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;

use super::stack::Gateway;

/// A running moto server; dropping it stops it.
pub struct Moto {
    /// The gateway that owns the moto process (it dies with the gateway).
    _gateway: Gateway,
    port: u16,
}

impl Moto {
    /// Starts a moto server and waits until it answers. Panics when it cannot (tests need it).
    pub async fn start() -> Moto {
        Self::start_with(&[]).await
    }

    /// [`Moto::start`] with variables added to the environment of its `mecplane-local` (and so of
    /// the launcher it runs, as `MECPLANE_MOTO_ZYGOTE`).
    pub async fn start_with(env: &[(&str, &str)]) -> Moto {
        let args: Vec<std::ffi::OsString> =
            vec!["--sim".into(), "off".into(), "--skip-provision".into()];
        let gateway = Gateway::launch_with(&args, env).await;
        let port = gateway.env["MECPLANE_MOTO_ENDPOINT"]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("MECPLANE_MOTO_ENDPOINT names moto's port");
        Moto {
            _gateway: gateway,
            port,
        }
    }

    /// The server's base URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends a query-protocol (form-encoded) request for `service` (`iam`, …) — for the few set-up
    /// calls whose SDK the tests do not link. moto does not check signatures; the credential scope
    /// of the `Authorization` header is how it routes the request. Returns the status and body.
    pub fn query(&self, service: &str, params: &[(&str, &str)]) -> (u16, String) {
        let body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let body = body.join("&");
        let request = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{service}/aws4_request, \
             SignedHeaders=host, Signature=0\r\nContent-Length: {len}\r\n\r\n{body}",
            port = self.port,
            len = body.len(),
        );
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        stream.write_all(request.as_bytes()).expect("send to moto");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read from moto");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Creates an IAM instance profile (RunInstances refuses unknown ones).
    pub fn create_instance_profile(&self, name: &str) {
        let (status, body) = self.query(
            "iam",
            &[
                ("Action", "CreateInstanceProfile"),
                ("Version", "2010-05-08"),
                ("InstanceProfileName", name),
            ],
        );
        assert_eq!(status, 200, "CreateInstanceProfile: {body}");
    }

    /// An SDK configuration for this server: region `us-east-1`, static test credentials, and no
    /// SDK retries (moto answers unimplemented operations with HTML 500s).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(self.endpoint())
            .retry_config(RetryConfig::disabled())
            .load()
            .await
    }
}

/// Percent-encodes a form value.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
