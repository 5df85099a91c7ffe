//! Bringing the stack up: optionally start moto, wait until it answers, switch on its state-machine
//! execution, run `local/provision.py`, and write `local.env` atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::proxy::Moto;

/// A startup failure.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// moto did not answer in time.
    #[error("moto did not answer at {0} within {1:?}")]
    MotoTimeout(String, Duration),
    /// moto rejected the configuration call.
    #[error("moto config: {0}")]
    MotoConfig(String),
    /// provision.py failed.
    #[error("provision.py: {0}")]
    Provision(String),
    /// The node simulator could not start.
    #[error("node simulator: {0}")]
    Simulator(String),
    /// Starting moto failed.
    #[error("starting moto ({0}): {1}")]
    SpawnMoto(PathBuf, std::io::Error),
    /// File system.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Per-function facts provision.py read from the template.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TemplateFunction {
    /// `Timeout` (seconds).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// `MemorySize` (MB).
    #[serde(default)]
    pub memory_size: Option<u32>,
    /// Environment variables with literal values.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

/// What provision.py prints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Provisioned {
    /// The table name.
    #[serde(default)]
    pub table: Option<String>,
    /// State machine ARNs by logical id.
    #[serde(default)]
    pub state_machines: BTreeMap<String, String>,
    /// The node instance profile name.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// Functions by name.
    #[serde(default)]
    pub functions: BTreeMap<String, TemplateFunction>,
    /// The template's parameters: their defaults, by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
}

impl Provisioned {
    /// `MECPLANE_CREATE_STATE_MACHINE_ARN`.
    pub fn create_arn(&self) -> String {
        self.state_machines
            .get("CreateClusterStateMachine")
            .cloned()
            .unwrap_or_default()
    }

    /// `MECPLANE_DELETE_STATE_MACHINE_ARN`.
    pub fn delete_arn(&self) -> String {
        self.state_machines
            .get("DeleteClusterStateMachine")
            .cloned()
            .unwrap_or_default()
    }

    /// `MECPLANE_UPDATE_STATE_MACHINE_ARN`.
    pub fn update_arn(&self) -> String {
        self.state_machines
            .get("UpdateClusterStateMachine")
            .cloned()
            .unwrap_or_default()
    }
}

/// Starts moto on 127.0.0.1:`moto_port` by running `launcher` (`local/moto_catalogue.py`, which
/// takes `moto_server`'s arguments) with `python`, with `MOTO_PORT=<gateway_port>`; it dies with
/// the gateway.
pub fn spawn_moto(
    python: &Path,
    exe: &Path,
    moto_port: u16,
    gateway_port: u16,
    log: &Path,
) -> Result<tokio::process::Child, StartupError> {
    let err = |e| StartupError::SpawnMoto(exe.to_path_buf(), e);
    if !exe.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such launcher file",
        )));
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(err)?;
    let out_err = out.try_clone().map_err(err)?;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(exe)
        .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
        .env("MOTO_PORT", gateway_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(out_err))
        .kill_on_drop(true);
    crate::functions::die_with_parent(&mut cmd);
    cmd.spawn().map_err(err)
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits until moto answers, then enables state-machine execution.
pub async fn prepare_moto(moto: &Moto, wait: Duration) -> Result<(), StartupError> {
    let start = Instant::now();
    while !moto.is_up().await {
        if start.elapsed() > wait {
            return Err(StartupError::MotoTimeout(moto.endpoint().to_string(), wait));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = moto
        .post_json(
            "/moto-api/config",
            &serde_json::json!({"stepfunctions": {"execute_state_machine": true}}),
        )
        .await
        .map_err(StartupError::MotoConfig)?;
    if !(200..300).contains(&status) {
        return Err(StartupError::MotoConfig(format!("HTTP {status}")));
    }
    Ok(())
}

/// Runs provision.py against moto and parses its JSON answer.
pub async fn provision(
    python: &Path,
    script: &Path,
    template: &Path,
    regions: &[String],
    moto_endpoint: &str,
) -> Result<Provisioned, StartupError> {
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg("--template")
        .arg(template)
        .args(["--region", &regions[0], "--endpoint-url", moto_endpoint])
        .args(["--cluster-regions", &regions.join(",")])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| StartupError::Provision(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(StartupError::Provision(format!(
            "exited with {}",
            out.status
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        StartupError::Provision(format!(
            "unreadable output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Writes `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("local.env");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// The `local.env` lines (docs/architecture.md), then the gateway's own extras.
pub fn env_file_lines(
    gateway_port: u16,
    region: &str,
    provisioned: &Provisioned,
    moto_endpoint: &str,
) -> Vec<(String, String)> {
    let endpoint = format!("http://127.0.0.1:{gateway_port}");
    vec![
        ("AWS_ENDPOINT_URL".into(), endpoint.clone()),
        ("MECPLANE_API_URL".into(), format!("{endpoint}/api")),
        ("AWS_REGION".into(), region.into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        (
            "MECPLANE_TABLE".into(),
            provisioned.table.clone().unwrap_or_default(),
        ),
        (
            "MECPLANE_CREATE_STATE_MACHINE_ARN".into(),
            provisioned.create_arn(),
        ),
        (
            "MECPLANE_DELETE_STATE_MACHINE_ARN".into(),
            provisioned.delete_arn(),
        ),
        (
            "MECPLANE_UPDATE_STATE_MACHINE_ARN".into(),
            provisioned.update_arn(),
        ),
        ("MECPLANE_MOTO_ENDPOINT".into(), moto_endpoint.into()),
        (
            "MECPLANE_GATEWAY_PID".into(),
            std::process::id().to_string(),
        ),
    ]
}

/// Renders `KEY=VALUE` lines.
pub fn render_env(lines: &[(String, String)]) -> String {
    lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_has_the_contract_lines_first() {
        let p = Provisioned {
            table: Some("t".into()),
            state_machines: [
                ("CreateClusterStateMachine".to_string(), "arn:c".to_string()),
                ("DeleteClusterStateMachine".to_string(), "arn:d".to_string()),
                ("UpdateClusterStateMachine".to_string(), "arn:u".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let text = render_env(&env_file_lines(
            47500,
            "us-east-1",
            &p,
            "http://127.0.0.1:47501",
        ));
        assert!(text.starts_with(
            "AWS_ENDPOINT_URL=http://127.0.0.1:47500\nMECPLANE_API_URL=http://127.0.0.1:47500/api\nAWS_REGION=us-east-1\n"
        ));
        assert!(text.contains("\nMECPLANE_TABLE=t\n"));
        assert!(text.contains("\nMECPLANE_CREATE_STATE_MACHINE_ARN=arn:c\n"));
        assert!(text.contains("\nMECPLANE_DELETE_STATE_MACHINE_ARN=arn:d\n"));
        assert!(text.contains("\nMECPLANE_UPDATE_STATE_MACHINE_ARN=arn:u\n"));
    }

    #[test]
    fn atomic_write_replaces() {
        let dir =
            std::env::temp_dir().join(format!("mecplane-local-test-{}", uuid::Uuid::new_v4()));
        let path = dir.join("local.env");
        write_atomic(&path, "A=1\n").unwrap();
        write_atomic(&path, "A=2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=2\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
