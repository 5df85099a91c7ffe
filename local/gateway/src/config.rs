//! The gateway's command line (every flag also has a `MECPLANE_*` environment variable) and the
//! paths derived from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The local account id every ARN uses (moto's default account).
pub const ACCOUNT_ID: &str = "123456789012";

/// How `/api/*` requests are authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiAuth {
    /// Require an `Authorization: AWS4-HMAC-SHA256 Credential=...` header (shape only, no signature
    /// check), as an HTTP API route with `AWS_IAM` authorisation does; otherwise 403.
    Sigv4,
    /// No authorisation.
    None,
}

/// Whether the node simulator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimMode {
    /// Run it (start-up fails when it cannot start).
    On,
    /// Do not run it.
    Off,
}

/// `mecplane-local`: the local stack gateway.
#[derive(Debug, Clone, Parser)]
#[command(name = "mecplane-local", version, about)]
pub struct Args {
    /// Port of the public listener on 127.0.0.1 (0 = pick a free port).
    #[arg(long, env = "MECPLANE_GATEWAY_PORT", default_value_t = 47500)]
    pub port: u16,

    /// moto's port on 127.0.0.1 (0 with --spawn-moto = pick a free port).
    #[arg(long, env = "MECPLANE_MOTO_PORT", default_value_t = 47501)]
    pub moto_port: u16,

    /// moto's endpoint; overrides --moto-port (e.g. http://127.0.0.1:47501).
    #[arg(long, env = "MECPLANE_MOTO_ENDPOINT")]
    pub moto_endpoint: Option<String>,

    /// Start moto as a child of the gateway with this `moto_server` executable (with `MOTO_PORT`
    /// set to the gateway's port); it is stopped with the gateway.
    #[arg(long, env = "MECPLANE_SPAWN_MOTO")]
    pub spawn_moto: Option<PathBuf>,

    /// Where local.env, logs/ and the simulator's work directory live.
    #[arg(long, env = "MECPLANE_STATE_DIR", default_value = ".mecplane")]
    pub state_dir: PathBuf,

    /// The repository root (functions/, infra/, local/, .venv/).
    #[arg(long, env = "MECPLANE_REPO_ROOT", default_value = ".")]
    pub repo_root: PathBuf,

    /// The directory holding the function binaries (a cargo target dir such as target/debug).
    #[arg(long, env = "MECPLANE_FUNCTIONS_DIR", default_value = "target/debug")]
    pub functions_dir: PathBuf,

    /// A function to host (repeatable). Default: every directory under <repo-root>/functions.
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,

    /// Extra environment for every function: `KEY=VALUE` lines (`#` comments); overrides the
    /// computed defaults.
    #[arg(long, env = "MECPLANE_FUNCTION_ENV_FILE")]
    pub function_env_file: Option<PathBuf>,

    /// The SAM template provision.py reads (default <repo-root>/infra/template.yaml).
    #[arg(long, env = "MECPLANE_TEMPLATE")]
    pub template: Option<PathBuf>,

    /// The python that runs provision.py (default <repo-root>/.venv/bin/python).
    #[arg(long, env = "MECPLANE_PYTHON")]
    pub python: Option<PathBuf>,

    /// provision.py (default <repo-root>/local/provision.py).
    #[arg(long, env = "MECPLANE_PROVISION_SCRIPT")]
    pub provision_script: Option<PathBuf>,

    /// Do not run provision.py (no table or state machines; their env lines stay empty).
    #[arg(long)]
    pub skip_provision: bool,

    /// The region of every ARN and of the functions' `AWS_REGION`.
    #[arg(long, env = "MECPLANE_REGION", default_value = "us-east-1")]
    pub region: String,

    /// The regions clusters may live in (comma-separated): the functions' allowed regions, where
    /// provision.py publishes the AMI parameters, and where the simulator looks for instances.
    /// The control plane's own region (--region) is always one of them.
    #[arg(
        long,
        env = "MECPLANE_CLUSTER_REGIONS",
        value_delimiter = ',',
        default_value = "us-east-1,eu-west-1"
    )]
    pub cluster_regions: Vec<String>,

    /// Authorisation of `/api/*`.
    #[arg(long, value_enum, env = "MECPLANE_API_AUTH", default_value = "sigv4")]
    pub api_auth: ApiAuth,

    /// Most processes started per function.
    #[arg(long, env = "MECPLANE_MAX_CONCURRENCY", default_value_t = 8)]
    pub max_concurrency: usize,

    /// Function timeout in seconds when the template does not give one.
    #[arg(long, env = "MECPLANE_FUNCTION_TIMEOUT_SECS", default_value_t = 900)]
    pub timeout_secs: u64,

    /// Delay before a simulated instance's SSM agent comes online, in milliseconds.
    #[arg(long, env = "MECPLANE_AGENT_DELAY_MS", default_value_t = 5000)]
    pub agent_delay_ms: u64,

    /// The node simulator's stand-in executables (default: the first of <repo-root>/local/sim,
    /// <repo-root>/local/nodesim/stand-ins that exists).
    #[arg(long, env = "MECPLANE_STAND_INS_DIR")]
    pub stand_ins_dir: Option<PathBuf>,

    /// Whether to run the node simulator (`off`: SSM Run Command answers 503, `/_sim` is absent).
    #[arg(long, value_enum, env = "MECPLANE_SIM", default_value = "on")]
    pub sim: SimMode,

    /// How long to wait for moto to answer, in seconds.
    #[arg(long, default_value_t = 60)]
    pub moto_wait_secs: u64,
}

impl Args {
    /// --cluster-regions with --region first, each once.
    pub fn regions(&self) -> Vec<String> {
        let mut out = vec![self.region.clone()];
        for r in &self.cluster_regions {
            let r = r.trim();
            if !r.is_empty() && !out.iter().any(|o| o == r) {
                out.push(r.to_string());
            }
        }
        out
    }

    /// The template provision.py reads.
    pub fn template_path(&self) -> PathBuf {
        self.template
            .clone()
            .unwrap_or_else(|| self.repo_root.join("infra/template.yaml"))
    }

    /// The python interpreter.
    pub fn python_path(&self) -> PathBuf {
        self.python
            .clone()
            .unwrap_or_else(|| self.repo_root.join(".venv/bin/python"))
    }

    /// provision.py.
    pub fn provision_script_path(&self) -> PathBuf {
        self.provision_script
            .clone()
            .unwrap_or_else(|| self.repo_root.join("local/provision.py"))
    }

    /// The stand-ins directory for the node simulator.
    pub fn stand_ins_path(&self) -> PathBuf {
        if let Some(dir) = &self.stand_ins_dir {
            return dir.clone();
        }
        let candidates = [
            self.repo_root.join("local/sim"),
            self.repo_root.join("local/nodesim/stand-ins"),
        ];
        candidates
            .iter()
            .find(|p| p.is_dir())
            .cloned()
            .unwrap_or_else(|| candidates[0].clone())
    }

    /// The default function timeout.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// `<state-dir>/logs`.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// `<state-dir>/local.env`.
    pub fn env_file(&self) -> PathBuf {
        self.state_dir.join("local.env")
    }
}

/// The function names to host: `--function` values, else every directory under `<repo>/functions`.
pub fn function_names(args: &Args) -> std::io::Result<Vec<String>> {
    if !args.functions.is_empty() {
        let mut names = args.functions.clone();
        names.sort();
        names.dedup();
        return Ok(names);
    }
    discover_functions(&args.repo_root.join("functions"))
}

fn discover_functions(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped, `export ` is allowed and
/// one pair of surrounding quotes is removed.
pub fn parse_env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        let parsed = parse_env_lines("# c\n\nA=1\nexport B='two words'\nC=\"x=y\"\nbad\n");
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn cli_defaults() {
        let args = Args::parse_from(["mecplane-local"]);
        assert_eq!(args.api_auth, ApiAuth::Sigv4);
        assert_eq!(args.max_concurrency, 8);
        let args = Args::parse_from(["mecplane-local", "--api-auth", "none", "--port", "0"]);
        assert_eq!(args.api_auth, ApiAuth::None);
        assert_eq!(args.port, 0);
    }
}
