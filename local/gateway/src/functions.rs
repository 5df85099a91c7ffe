//! The hosted functions: one [`FunctionPool`] per function, each a queue of invocations and a set
//! of sandboxes (child processes, each with its own Runtime API listener, see
//! [`crate::runtime_api`]).
//!
//! A sandbox is started lazily when an invocation finds no idle process (up to
//! `max_concurrency` per function; beyond that invocations queue). A sandbox that exits is
//! forgotten; the invocation it held fails with `Runtime.ExitError` and the next invocation starts
//! a fresh process. A process that exits before ever asking for work (an init failure) fails the
//! oldest queued invocation with its init error, so a broken binary cannot hang callers.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::arn::function_arn;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's response payload.
    Success(Bytes),
    /// A function error: the `{"errorType","errorMessage"}` JSON payload.
    Error(Bytes),
}

/// What the Runtime API hands a sandbox for one invocation.
#[derive(Debug, Clone)]
pub struct InvocationMeta {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// The event.
    pub payload: Bytes,
    /// `Lambda-Runtime-Deadline-Ms` (Unix epoch milliseconds).
    pub deadline_ms: u64,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub invoked_arn: String,
    /// `Lambda-Runtime-Trace-Id`.
    pub trace_id: String,
    /// `Lambda-Runtime-Client-Context` (JSON), when the caller sent one.
    pub client_context: Option<String>,
}

/// One invocation waiting for, or held by, a sandbox.
struct Invocation {
    meta: InvocationMeta,
    reply: oneshot::Sender<Outcome>,
}

/// Settings shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The functions' environment (besides the `AWS_LAMBDA_*` variables the gateway sets).
    pub env: Vec<(String, String)>,
    /// Where `<fn>.log` files go.
    pub log_dir: PathBuf,
    /// Most processes per function.
    pub max_concurrency: usize,
    /// The region of ARNs and `AWS_REGION`.
    pub region: String,
    /// The account of ARNs.
    pub account: String,
}

/// Per-function settings.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Function name.
    pub name: String,
    /// The executable (the one `bootstrap` binary of every function).
    pub binary: PathBuf,
    /// `_HANDLER`: which of the binary's functions the process serves (the template's `Handler`).
    pub handler: String,
    /// Timeout of one invocation.
    pub timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`.
    pub memory_mb: u32,
    /// Environment from the template, below the shared environment.
    pub env: Vec<(String, String)>,
}

struct Sandbox {
    /// Has asked for work at least once (initialised).
    ready: bool,
    /// The invocation it is running.
    inflight: Option<Invocation>,
    /// The body of `POST /runtime/init/error`, if any.
    init_error: Option<Bytes>,
    /// The child's pid once started.
    pid: Option<u32>,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Invocation>,
    /// Sandboxes blocked in `GET /invocation/next`.
    waiters: VecDeque<(u64, oneshot::Sender<InvocationMeta>)>,
    sandboxes: HashMap<u64, Sandbox>,
    shutting_down: bool,
}

/// One function: its queue and its processes.
pub struct FunctionPool {
    spec: FunctionSpec,
    settings: Arc<PoolSettings>,
    arn: String,
    state: Mutex<PoolState>,
    next_sandbox: AtomicU64,
    invocations: AtomicU64,
}

/// A Runtime API request that does not match the sandbox's current invocation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeApiError {
    /// The request id is not the sandbox's current invocation.
    #[error("Invalid request ID")]
    InvalidRequestId,
    /// The sandbox is gone (the gateway is shutting down or the process exited).
    #[error("sandbox is gone")]
    Gone,
}

/// The JSON body of a function error.
pub fn error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string())
}

/// Normalises the body a runtime posted to `/error` or `/init/error`: a JSON object is kept
/// (with `errorType` filled from the header when missing), anything else is wrapped.
pub fn normalize_error(body: &[u8], header_type: Option<&str>) -> Bytes {
    let fallback_type = header_type
        .filter(|t| !t.is_empty())
        .map(|t| if t == "unhandled" { "Unhandled" } else { t })
        .unwrap_or("Unhandled");
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut obj)) => {
            if !obj.contains_key("errorType") {
                obj.insert("errorType".into(), fallback_type.into());
            }
            if !obj.contains_key("errorMessage") {
                obj.insert("errorMessage".into(), "".into());
            }
            Bytes::from(serde_json::Value::Object(obj).to_string())
        }
        _ => error_body(fallback_type, &String::from_utf8_lossy(body)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn trace_id() -> String {
    let secs = now_ms() / 1000;
    let rand: u128 = rand::random();
    format!(
        "Root=1-{secs:08x}-{:024x};Parent={:016x};Sampled=0",
        rand >> 32,
        rand::random::<u64>()
    )
}

impl FunctionPool {
    /// A pool for one function; no process starts until the first invocation.
    pub fn new(spec: FunctionSpec, settings: Arc<PoolSettings>) -> Arc<Self> {
        let arn = function_arn(&settings.region, &settings.account, &spec.name, None);
        Arc::new(Self {
            spec,
            settings,
            arn,
            state: Mutex::new(PoolState::default()),
            next_sandbox: AtomicU64::new(1),
            invocations: AtomicU64::new(0),
        })
    }

    /// The function name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The unqualified function ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// How many invocations were accepted so far.
    pub fn invocation_count(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// Number of live processes.
    pub fn process_count(&self) -> usize {
        self.lock().sandboxes.len()
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent
        // because every critical section is a few infallible field updates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one invocation to its end (success, function error, process exit or timeout).
    pub async fn invoke(
        self: &Arc<Self>,
        payload: Bytes,
        invoked_arn: String,
        client_context: Option<String>,
    ) -> (String, Outcome) {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (reply, rx) = oneshot::channel();
        let timeout = self.spec.timeout;
        let inv = Invocation {
            meta: InvocationMeta {
                request_id: request_id.clone(),
                payload,
                deadline_ms: now_ms() + timeout.as_millis() as u64,
                invoked_arn,
                trace_id: trace_id(),
                client_context,
            },
            reply,
        };
        self.invocations.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.lock();
            if st.shutting_down {
                return (
                    request_id,
                    Outcome::Error(error_body(
                        "Runtime.ExitError",
                        "the local gateway is shutting down",
                    )),
                );
            }
            self.dispatch(&mut st, inv);
        }
        let outcome = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Error(error_body(
                "Runtime.ExitError",
                &format!(
                    "RequestId: {request_id} Error: Runtime exited without providing a reason"
                ),
            )),
            Err(_) => {
                self.abandon(&request_id);
                Outcome::Error(error_body(
                    "Sandbox.Timedout",
                    &format!(
                        "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                        timeout.as_secs_f64()
                    ),
                ))
            }
        };
        (request_id, outcome)
    }

    /// Hands the invocation to an idle sandbox, or queues it (starting a sandbox when all are busy).
    fn dispatch(self: &Arc<Self>, st: &mut PoolState, inv: Invocation) {
        while let Some((sid, waiter)) = st.waiters.pop_front() {
            let Some(sandbox) = st.sandboxes.get_mut(&sid) else {
                continue;
            };
            if sandbox.inflight.is_some() || waiter.send(inv.meta.clone()).is_err() {
                continue;
            }
            sandbox.inflight = Some(inv);
            return;
        }
        st.queue.push_back(inv);
        self.scale(st);
    }

    /// Starts sandboxes while queued invocations outnumber the sandboxes still starting.
    fn scale(self: &Arc<Self>, st: &mut PoolState) {
        if st.shutting_down {
            return;
        }
        loop {
            let starting = st.sandboxes.values().filter(|s| !s.ready).count();
            if st.queue.len() <= starting || st.sandboxes.len() >= self.settings.max_concurrency {
                return;
            }
            let sid = self.next_sandbox.fetch_add(1, Ordering::Relaxed);
            st.sandboxes.insert(
                sid,
                Sandbox {
                    ready: false,
                    inflight: None,
                    init_error: None,
                    pid: None,
                },
            );
            let pool = Arc::clone(self);
            tokio::spawn(async move { pool.run_sandbox(sid).await });
        }
    }

    /// Removes a timed-out invocation: from the queue, or by killing the sandbox running it.
    fn abandon(&self, request_id: &str) {
        let mut st = self.lock();
        st.queue.retain(|i| i.meta.request_id != request_id);
        for sandbox in st.sandboxes.values_mut() {
            if sandbox
                .inflight
                .as_ref()
                .is_some_and(|i| i.meta.request_id == request_id)
            {
                sandbox.inflight = None;
                if let Some(pid) = sandbox.pid {
                    kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// Starts one process with its Runtime API listener and waits for it to exit.
    async fn run_sandbox(self: Arc<Self>, sid: u64) {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => return self.sandbox_failed(sid, "Runtime.Unknown", &e.to_string()),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return self.sandbox_failed(sid, "Runtime.Unknown", &e.to_string()),
        };
        let router = crate::runtime_api::router(Arc::clone(&self), sid);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "runtime API listener failed");
            }
        });

        let child = self.spawn_child(&addr.to_string(), sid);
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                server.abort();
                let msg = format!(
                    "RequestId: - Error: cannot start {}: {e}",
                    self.spec.binary.display()
                );
                return self.sandbox_failed(sid, "Runtime.InvalidEntrypoint", &msg);
            }
        };
        {
            let mut st = self.lock();
            match st.sandboxes.get_mut(&sid) {
                Some(sb) => sb.pid = child.id(),
                None => {
                    // Shut down while starting.
                    let _ = child.start_kill();
                }
            }
            if st.shutting_down {
                let _ = child.start_kill();
            }
        }
        tracing::debug!(function = %self.spec.name, sandbox = sid, runtime_api = %addr, pid = ?child.id(), "sandbox started");
        let status = child.wait().await;
        server.abort();
        let reason = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        self.log_line(&format!("sandbox {sid} exited: {reason}"));
        self.sandbox_exited(sid, &reason);
    }

    fn spawn_child(&self, runtime_api: &str, sid: u64) -> std::io::Result<tokio::process::Child> {
        std::fs::create_dir_all(&self.settings.log_dir)?;
        let log_path = self
            .settings
            .log_dir
            .join(format!("{}.log", self.spec.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let log_err = log.try_clone()?;
        let mut cmd = tokio::process::Command::new(&self.spec.binary);
        cmd.env_clear();
        for key in [
            "PATH",
            "HOME",
            "LANG",
            "TZ",
            "RUST_LOG",
            "RUST_BACKTRACE",
            "TMPDIR",
        ] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        let name = &self.spec.name;
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .envs(self.settings.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("_HANDLER", &self.spec.handler)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            // The SDK adds `app/<name>` to its User-Agent: how /_local/calls knows the caller.
            .env("AWS_SDK_UA_APP_ID", name)
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.spec.memory_mb.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("local/[$LATEST]{sid:032x}"),
            )
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_REGION", &self.settings.region)
            .env("AWS_DEFAULT_REGION", &self.settings.region)
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_rust_local")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("_HANDLER", name)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        cmd.spawn()
    }

    fn log_line(&self, line: &str) {
        use std::io::Write;
        let path = self
            .settings
            .log_dir
            .join(format!("{}.log", self.spec.name));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "[mecplane-local] {line}");
        }
    }

    /// A sandbox that could not start: fail the oldest queued invocation with the reason.
    fn sandbox_failed(self: &Arc<Self>, sid: u64, error_type: &str, message: &str) {
        tracing::warn!(function = %self.spec.name, %message, "cannot start function");
        self.log_line(message);
        let mut st = self.lock();
        st.sandboxes.remove(&sid);
        if let Some(inv) = st.queue.pop_front() {
            let _ = inv
                .reply
                .send(Outcome::Error(error_body(error_type, message)));
        }
        self.scale(&mut st);
    }

    /// A sandbox's process exited: fail what it held, then restart if work is queued.
    fn sandbox_exited(self: &Arc<Self>, sid: u64, reason: &str) {
        let mut st = self.lock();
        st.waiters.retain(|(w, _)| *w != sid);
        let Some(sandbox) = st.sandboxes.remove(&sid) else {
            return;
        };
        if let Some(inv) = sandbox.inflight {
            let msg = format!(
                "RequestId: {} Error: Runtime exited with error: {reason}",
                inv.meta.request_id
            );
            let _ = inv
                .reply
                .send(Outcome::Error(error_body("Runtime.ExitError", &msg)));
        } else if !sandbox.ready {
            if let Some(inv) = st.queue.pop_front() {
                let body = sandbox.init_error.unwrap_or_else(|| {
                    error_body(
                        "Runtime.ExitError",
                        &format!(
                            "RequestId: {} Error: Runtime exited with error: {reason}",
                            inv.meta.request_id
                        ),
                    )
                });
                let _ = inv.reply.send(Outcome::Error(body));
            }
        }
        self.scale(&mut st);
    }

    /// `GET /runtime/invocation/next` for sandbox `sid`: the next invocation, waiting for one.
    pub async fn next_invocation(
        self: &Arc<Self>,
        sid: u64,
    ) -> Result<InvocationMeta, RuntimeApiError> {
        let rx = {
            let mut st = self.lock();
            let st = &mut *st;
            let Some(sandbox) = st.sandboxes.get_mut(&sid) else {
                return Err(RuntimeApiError::Gone);
            };
            sandbox.ready = true;
            if let Some(prev) = sandbox.inflight.take() {
                // Asking for more work without answering: Lambda fails the invocation.
                let _ = prev.reply.send(Outcome::Error(error_body(
                    "Runtime.InvalidResponse",
                    "the runtime asked for the next invocation without answering this one",
                )));
            }
            if let Some(inv) = st.queue.pop_front() {
                let meta = inv.meta.clone();
                sandbox.inflight = Some(inv);
                return Ok(meta);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back((sid, tx));
            rx
        };
        rx.await.map_err(|_| RuntimeApiError::Gone)
    }

    /// `POST /runtime/invocation/{id}/response|error` for sandbox `sid`.
    pub fn complete(
        &self,
        sid: u64,
        request_id: &str,
        outcome: Outcome,
    ) -> Result<(), RuntimeApiError> {
        let mut st = self.lock();
        let sandbox = st
            .sandboxes
            .get_mut(&sid)
            .ok_or(RuntimeApiError::InvalidRequestId)?;
        match &sandbox.inflight {
            Some(inv) if inv.meta.request_id == request_id => {}
            _ => return Err(RuntimeApiError::InvalidRequestId),
        }
        if let Some(inv) = sandbox.inflight.take() {
            let _ = inv.reply.send(outcome);
        }
        Ok(())
    }

    /// `POST /runtime/init/error` for sandbox `sid`.
    pub fn init_error(&self, sid: u64, body: Bytes) {
        let mut st = self.lock();
        if let Some(sandbox) = st.sandboxes.get_mut(&sid) {
            sandbox.init_error = Some(body);
        }
    }

    /// Kills every process and refuses new invocations; returns the pids signalled.
    pub fn begin_shutdown(&self) -> Vec<u32> {
        let mut st = self.lock();
        st.shutting_down = true;
        for inv in st.queue.drain(..) {
            let _ = inv.reply.send(Outcome::Error(error_body(
                "Runtime.ExitError",
                "the local gateway is shutting down",
            )));
        }
        st.waiters.clear();
        let pids: Vec<u32> = st.sandboxes.values().filter_map(|s| s.pid).collect();
        for pid in &pids {
            kill(*pid, libc::SIGKILL);
        }
        pids
    }
}

/// Sends `signal` to `pid`.
pub fn kill(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Makes the child die with the gateway even when the gateway is killed with SIGKILL.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Every hosted function, by name.
#[derive(Clone, Default)]
pub struct Functions {
    pools: Arc<HashMap<String, Arc<FunctionPool>>>,
}

impl Functions {
    /// The registry of the given functions.
    pub fn new(specs: Vec<FunctionSpec>, settings: Arc<PoolSettings>) -> Self {
        let pools = specs
            .into_iter()
            .map(|s| (s.name.clone(), FunctionPool::new(s, Arc::clone(&settings))))
            .collect();
        Self {
            pools: Arc::new(pools),
        }
    }

    /// The pool of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<FunctionPool>> {
        self.pools.get(name)
    }

    /// Every pool.
    pub fn all(&self) -> impl Iterator<Item = &Arc<FunctionPool>> {
        self.pools.values()
    }

    /// Kills every process and waits (up to `wait`) until all are reaped.
    pub async fn shutdown(&self, wait: Duration) {
        for pool in self.all() {
            pool.begin_shutdown();
        }
        let deadline = tokio::time::Instant::now() + wait;
        while self.all().any(|p| p.process_count() > 0) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("function processes still alive after shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_runtime_errors() {
        let body = normalize_error(
            br#"{"errorType":"Boom","errorMessage":"x"}"#,
            Some("unhandled"),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorType"], "Boom");
        assert_eq!(v["errorMessage"], "x");

        let body = normalize_error(b"not json", Some("Runtime.InitError"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorType"], "Runtime.InitError");
        assert_eq!(v["errorMessage"], "not json");

        let body = normalize_error(br#"{"errorMessage":"m"}"#, Some("unhandled"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorType"], "Unhandled");
    }

    #[test]
    fn trace_ids_have_the_xray_shape() {
        let t = trace_id();
        assert!(t.starts_with("Root=1-"), "{t}");
        assert!(t.contains(";Parent="), "{t}");
    }
}
