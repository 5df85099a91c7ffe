//! A private moto server for a test: started on a free 127.0.0.1 port, awaited until it answers
//! HTTP, and killed when the [`Moto`] value is dropped.
//!
//! The server binary is `$MECPLANE_MOTO_SERVER`, else the workspace's `.venv/bin/moto_server`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;

/// How long a starting server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running moto server; dropping it kills the server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
}

/// The moto server binary.
pub fn moto_server_path() -> PathBuf {
    match std::env::var_os("MECPLANE_MOTO_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server"),
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Whether an HTTP server on `addr` answers a request.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

impl Moto {
    /// Starts a moto server and waits until it answers. Panics when it cannot (tests need it).
    pub fn start() -> Moto {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "moto_server not found at {} (set MECPLANE_MOTO_SERVER)",
            path.display()
        );
        // A port can be taken between choosing and binding it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&path)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if answers(addr) {
                    return Moto { child, port };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto_server did not come up");
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
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
