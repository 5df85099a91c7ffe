//! The node simulator: SSM agents and Run Command for the EC2 instances moto launched, running the
//! node scripts with bash in per-instance sandboxes where `snap`, `microk8s` and friends are stand-ins.
//!
//! The gateway (`mecplane-local`) routes to a shared [`Simulator`]: SSM JSON 1.1 requests whose
//! `X-Amz-Target` [`Simulator::handles_ssm_target`] accepts, EC2 `RunInstances` form bodies (for the
//! `insufficient_capacity` fault) and the `/_sim/*` control API.
//!
//! Modules: [`agents`] (instances and agent liveness), [`commands`] (invocation lifecycle),
//! [`sandbox`] (private mount namespaces), [`faults`] (rules), [`ssm_api`] (the SSM operations),
//! [`control`] (`/_sim/*`), [`ec2_fault`] (the EC2 error answer).
//!
//! The stand-ins (`stand-ins/`, commands listed in their header comments) simulate MicroK8s from
//! install to day 2: `snap install|list|refresh` (one minor at a time, no downgrade), `microk8s
//! status|add-node|join|leave|remove-node|enable|disable|config|version` and `microk8s kubectl get
//! nodes|cordon|uncordon|drain`, rejecting what real MicroK8s rejects (e.g. `remove-node` of a control
//! plane still registered with dqlite without `--force`, a change that would leave dqlite without a
//! majority of its voters, `leave` of the only voter). Faults ([`faults::FaultKind`]): `agent_offline`,
//! `command_fails`, `command_hangs`, `terminate_during_command`, `expire_tokens`,
//! `insufficient_capacity`, `terminate_fails`, `drain_times_out`, `refresh_fails`, `node_dies`.
//! A node that dies (`node_dies`) writes `<sandbox>/dead`: from the next refresh its agent is
//! `ConnectionLost`, what ran on it is killed and ends as SSM reports a lost agent
//! (`DeliveryTimedOut`), and its cluster sees it unreachable.

pub mod agents;
pub mod commands;
pub mod control;
pub mod ec2_fault;
pub mod faults;
pub mod sandbox;
pub mod ssm_api;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Configuration of the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where instance sandboxes, command files and the net directory live (not under `/var`).
    pub work_dir: PathBuf,
    /// moto's endpoint (e.g. `http://127.0.0.1:47501`), used directly for EC2 lookups.
    pub moto_endpoint: String,
    /// The control plane's region (requests that name none are served from it).
    pub region: String,
    /// Every region instances may live in (`region` is added when missing); a request sees only
    /// the instances of the region it was signed for, as with SSM.
    pub regions: Vec<String>,
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
    /// Private mount namespaces are unavailable: scripts would run on the host, so nothing runs.
    #[error("sandbox: {0}")]
    Sandbox(String),
}

/// The shared state behind [`Simulator`] (tasks hold it in an `Arc`).
pub struct Core {
    /// The configuration.
    pub cfg: SimConfig,
    /// The instances.
    pub agents: agents::Agents,
    /// The fault rules.
    pub faults: faults::Faults,
    /// The commands.
    pub commands: commands::Commands,
    shut_down: AtomicBool,
    last_refresh: std::sync::Mutex<Option<Instant>>,
}

impl Core {
    /// Re-reads the instances from moto; instances no longer running, and nodes that died, lose
    /// their agent (what ran on them is killed and ends as SSM reports it). Keeps every node's fault
    /// file current.
    pub async fn refresh_instances(self: &Arc<Self>) -> Result<(), String> {
        self.agents.refresh().await?;
        *self.last_refresh.lock().expect("refresh lock") = Some(Instant::now());
        self.agents.write_fault_files(&self.faults);
        for inst in self.agents.all() {
            if (inst.state != "running" && inst.state != "pending") || inst.dead {
                commands::agent_lost(self, &inst.instance_id);
            }
        }
        Ok(())
    }
}

/// The node simulator, shared as `Arc<Simulator>`.
pub struct Simulator {
    core: Arc<Core>,
}

impl Simulator {
    /// Creates the simulator: checks that mount namespaces work, prepares the work directory and an
    /// EC2 client to moto (fake credentials, retries off).
    pub async fn new(cfg: SimConfig) -> Result<Arc<Self>, SimError> {
        let work_dir = std::path::absolute(&cfg.work_dir)?;
        if work_dir.starts_with("/var") {
            return Err(SimError::Config(format!(
                "work_dir {} is under /var, which every sandbox replaces",
                work_dir.display()
            )));
        }
        let stand_ins_dir = std::path::absolute(&cfg.stand_ins_dir)?;
        if !stand_ins_dir.join("microk8s").exists() {
            return Err(SimError::Config(format!(
                "stand_ins_dir {} holds no microk8s stand-in",
                stand_ins_dir.display()
            )));
        }
        sandbox::check_available().map_err(SimError::Sandbox)?;
        std::fs::create_dir_all(work_dir.join("instances"))?;
        std::fs::create_dir_all(work_dir.join("net"))?;
        let cfg = SimConfig {
            work_dir: work_dir.clone(),
            stand_ins_dir,
            ..cfg
        };
        let mut regions = vec![cfg.region.clone()];
        regions.extend(cfg.regions.iter().filter(|r| **r != cfg.region).cloned());
        let mut clients = Vec::new();
        for region in &regions {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.clone()))
                .endpoint_url(cfg.moto_endpoint.clone())
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "testing",
                    "testing",
                    None,
                    None,
                    "mecplane-nodesim",
                ))
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .load()
                .await;
            clients.push((region.clone(), aws_sdk_ec2::Client::new(&sdk)));
        }
        let cfg = SimConfig { regions, ..cfg };
        let core = Arc::new(Core {
            agents: agents::Agents::new(clients, work_dir),
            faults: faults::Faults::default(),
            commands: commands::Commands::default(),
            shut_down: AtomicBool::new(false),
            last_refresh: std::sync::Mutex::new(None),
            cfg,
        });
        spawn_monitor(Arc::downgrade(&core));
        Ok(Arc::new(Self { core }))
    }

    /// Whether the simulator serves this `X-Amz-Target` (e.g. `AmazonSSM.SendCommand`).
    pub fn handles_ssm_target(target: &str) -> bool {
        matches!(
            target,
            "AmazonSSM.SendCommand"
                | "AmazonSSM.ListCommands"
                | "AmazonSSM.GetCommandInvocation"
                | "AmazonSSM.ListCommandInvocations"
                | "AmazonSSM.DescribeInstanceInformation"
                | "AmazonSSM.CancelCommand"
        )
    }

    /// Serves one SSM JSON 1.1 request signed for `region` (the control plane's when `None`).
    pub async fn handle_ssm(
        &self,
        target: &str,
        region: Option<&str>,
        body: bytes::Bytes,
    ) -> axum::response::Response {
        let region = region.unwrap_or(&self.core.cfg.region);
        ssm_api::handle(&self.core, target, region, &body).await
    }

    /// For any EC2 query-protocol form body: `Some(error)` when it is a `RunInstances` an
    /// `insufficient_capacity` fault matches, or a `TerminateInstances` of an instance a
    /// `terminate_fails` fault matches; `None` for everything else (forward it).
    pub async fn ec2_fault(&self, form_body: &[u8]) -> Option<axum::response::Response> {
        ec2_fault::run_instances_fault(&self.core.faults, form_body).or_else(|| {
            ec2_fault::terminate_instances_fault(&self.core.faults, &self.core.agents, form_body)
        })
    }

    /// The `/_sim/*` control and inspection API.
    pub fn control_router(self: Arc<Self>) -> axum::Router {
        control::router(self.core.clone())
    }

    /// Kills every running command (and stops the background monitor).
    pub async fn shutdown(&self) {
        self.core.shut_down.store(true, Ordering::SeqCst);
        self.core.commands.kill_all();
    }

    /// The shared core (for inspection in tests).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

/// While commands run, re-reads moto every two seconds so an instance terminated by someone else
/// stops running commands, as a real instance would.
fn spawn_monitor(core: std::sync::Weak<Core>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Some(core) = core.upgrade() else { return };
            if core.shut_down.load(Ordering::SeqCst) {
                return;
            }
            let recent = core
                .last_refresh
                .lock()
                .expect("refresh lock")
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
            if core.commands.any_running() && !recent {
                if let Err(e) = core.refresh_instances().await {
                    tracing::debug!(error = %e, "node simulator monitor could not read moto");
                }
            }
        }
    });
}
