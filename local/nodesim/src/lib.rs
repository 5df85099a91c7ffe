//! The node simulator: SSM agents and Run Command for the EC2 instances moto launched, running the
//! node scripts with bash in per-instance sandboxes where `snap`, `microk8s` and friends are stand-ins.
//!
//! The gateway (`mecplane-local`) routes to a shared [`Simulator`]: SSM JSON 1.1 requests whose
//! `X-Amz-Target` [`Simulator::handles_ssm_target`] accepts, EC2 `RunInstances` form bodies (for the
//! `insufficient_capacity` fault) and the `/_sim/*` control API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Configuration of the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where instance sandboxes, command files and the net directory live.
    pub work_dir: PathBuf,
    /// moto's endpoint (e.g. `http://127.0.0.1:47501`), used directly for EC2 lookups.
    pub moto_endpoint: String,
    /// The region instances live in.
    pub region: String,
    /// How long after `LaunchTime` an instance's SSM agent comes online.
    pub agent_delay: Duration,
    /// The directory holding the stand-in executables (`snap`, `microk8s`, ...).
    pub stand_ins_dir: PathBuf,
}

/// Errors setting up the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An I/O error preparing the work directory.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A configuration problem.
    #[error("config: {0}")]
    Config(String),
}

/// The node simulator, shared as `Arc<Simulator>`.
pub struct Simulator {
    cfg: SimConfig,
}

impl Simulator {
    /// Creates the simulator (work directory, EC2 client to moto).
    pub async fn new(cfg: SimConfig) -> Result<Arc<Self>, SimError> {
        std::fs::create_dir_all(&cfg.work_dir)?;
        Ok(Arc::new(Self { cfg }))
    }

    /// Whether the simulator serves this `X-Amz-Target` (e.g. `AmazonSSM.SendCommand`).
    pub fn handles_ssm_target(target: &str) -> bool {
        matches!(
            target,
            "AmazonSSM.SendCommand"
                | "AmazonSSM.GetCommandInvocation"
                | "AmazonSSM.ListCommandInvocations"
                | "AmazonSSM.DescribeInstanceInformation"
                | "AmazonSSM.CancelCommand"
        )
    }

    /// Serves one SSM JSON 1.1 request.
    pub async fn handle_ssm(&self, target: &str, body: bytes::Bytes) -> axum::response::Response {
        let _ = (target, body, &self.cfg);
        todo!()
    }

    /// For an EC2 `RunInstances` form body: `Some(error)` when an `insufficient_capacity` fault matches.
    pub async fn run_instances_fault(&self, form_body: &[u8]) -> Option<axum::response::Response> {
        let _ = form_body;
        None
    }

    /// The `/_sim/*` control and inspection API.
    pub fn control_router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
    }

    /// Kills every running command.
    pub async fn shutdown(&self) {}
}
