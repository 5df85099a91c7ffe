//! The gateway's command line (every flag also has a `MECPLANE_*` environment variable) and the
//! paths derived from it.

use std::path::PathBuf;
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

    /// Start moto as a child of the gateway by running this launcher with --python
    /// (`<repo>/local/moto_catalogue.py`: moto with the local zone catalogue; `moto_server`'s
    /// arguments), with `MOTO_PORT` set to the gateway's port; it is stopped with the gateway.
    #[arg(long, env = "MECPLANE_SPAWN_MOTO")]
    pub spawn_moto: Option<PathBuf>,

    /// Where local.env, logs/ and the simulator's work directory live.
    #[arg(long, env = "MECPLANE_STATE_DIR", default_value = ".mecplane")]
    pub state_dir: PathBuf,

    /// The repository root (functions/, infra/, local/, .venv/).
    #[arg(long, env = "MECPLANE_REPO_ROOT", default_value = ".")]
    pub repo_root: PathBuf,

    /// The directory holding the function binary (a cargo target dir such as target/debug).
    #[arg(long, env = "MECPLANE_FUNCTIONS_DIR", default_value = "target/debug")]
    pub functions_dir: PathBuf,

    /// The one binary every function runs (default <functions-dir>/bootstrap); each process gets
    /// its function's handler as `_HANDLER`, as Lambda gives a custom runtime its `Handler`.
    #[arg(long, env = "MECPLANE_FUNCTION_BINARY")]
    pub function_binary: Option<PathBuf>,

    /// A function to host (repeatable). Default: every function of the template, by its Handler.
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,

    /// Extra environment for every function: `KEY=VALUE` lines (`#` comments); overrides the
    /// computed defaults.
    #[arg(long, env = "MECPLANE_FUNCTION_ENV_FILE")]
    pub function_env_file: Option<PathBuf>,

    /// The SAM template provision.py reads (default <repo-root>/infra/template.yaml).
    #[arg(long, env = "MECPLANE_TEMPLATE")]
    pub template: Option<PathBuf>,

    /// The python that runs provision.py and the --spawn-moto launcher (default
    /// <repo-root>/.venv/bin/python).
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

    /// Seconds between two runs of the `reconcile` function with the schedule's event
    /// `{"source":"mecplane.schedule"}`, as the stack's EventBridge schedule runs it (0 = never).
    /// Default: the template's ReconcileRateMinutes × 60.
    #[arg(long, env = "MECPLANE_RECONCILE_INTERVAL_SECONDS")]
    pub reconcile_interval_seconds: Option<u64>,

    /// Whether a TerminateInstances or StopInstances sends `reconcile` its EC2 state-change events,
    /// as the stack's EventBridge rule does (`false`: tests that kill nodes and act themselves).
    #[arg(long, env = "MECPLANE_RECONCILE_EC2_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconcile_ec2_events: bool,

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

    /// The one binary every function runs, absolute.
    pub fn function_binary(&self) -> PathBuf {
        let binary = self
            .function_binary
            .clone()
            .unwrap_or_else(|| self.functions_dir.join("bootstrap"));
        std::path::absolute(&binary).unwrap_or(binary)
    }

    /// `<state-dir>/local.env`.
    pub fn env_file(&self) -> PathBuf {
        self.state_dir.join("local.env")
    }
}

/// The function names to host: `--function` values, else every function of the template (its
/// Handler, as `local/provision.py` reports it).
pub fn function_names<'a>(
    args: &Args,
    template: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let mut names: Vec<String> = if args.functions.is_empty() {
        template.into_iter().cloned().collect()
    } else {
        args.functions.clone()
    };
    names.sort();
    names.dedup();
    names
}

/// Parses a dotenv text (`KEY=VALUE` lines; blank lines and `#` comments skipped, `export `
/// allowed, quotes removed) with `dotenvy`. A line `dotenvy` rejects is skipped with a warning.
///
/// `dotenvy`'s rules, where they differ from a plain split at `=`: keys are
/// `[A-Za-z_][A-Za-z0-9_.]*`; an unquoted value ends at whitespace (` # comment` may follow, any
/// other text makes the line an error); `$NAME` / `${NAME}` in unquoted and double-quoted values
/// is replaced by an earlier key of the text or else the process environment (single quotes keep
/// it literal); double quotes take `\\`, `\"`, `\$` and `\n` escapes; a quoted value may span
/// lines.
pub fn parse_env_lines(text: &str) -> Vec<(String, String)> {
    dotenvy::from_read_iter(text.as_bytes())
        .filter_map(|item| match item {
            Ok(pair) => Some(pair),
            // The error quotes the line, which may hold a secret: log only where it failed.
            Err(dotenvy::Error::LineParse(_, at)) => {
                tracing::warn!(at, "skipping a malformed env line");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping a malformed env line");
                None
            }
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
        // dotenvy semantics: an unquoted value stops at ` #`, unquoted text after a space is an
        // error (the line is skipped), `$KEY` expands an earlier key, single quotes keep it.
        let parsed = parse_env_lines("D=v # note\nE=two words\nF=${D}x\nG='$D'\n");
        assert_eq!(
            parsed,
            vec![
                ("D".into(), "v".into()),
                ("F".into(), "vx".into()),
                ("G".into(), "$D".into())
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
