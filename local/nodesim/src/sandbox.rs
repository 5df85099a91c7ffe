//! Running a command's text with bash inside an instance's sandbox: a private mount namespace
//! (`unshare --mount --propagation private`) where `<work>/instances/<id>/var` is bind-mounted over
//! `/var`, the stand-ins come first on `PATH`, and the process is the leader of its own group so a
//! timeout, a cancel or shutdown kills everything it started.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Everything needed to run one command on one instance.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The instance's sandbox directory (`<work>/instances/<id>`).
    pub sandbox_dir: PathBuf,
    /// The directory of this invocation (script, stdout, stderr files).
    pub command_dir: PathBuf,
    /// The stand-ins directory.
    pub stand_ins_dir: PathBuf,
    /// `MECPLANE_SIM_NET`.
    pub net_dir: PathBuf,
    /// The instance id.
    pub instance_id: String,
    /// The private IP.
    pub ip: String,
    /// The hostname.
    pub hostname: String,
    /// Fault names the stand-ins honour (`MECPLANE_SIM_FAULTS`).
    pub faults: Vec<&'static str>,
    /// The node script the command runs (`MECPLANE_SIM_SCRIPT`, empty when none), for fault rules
    /// narrowed to a script that the stand-ins match on another node.
    pub script: Option<String>,
}

/// The wrapper run inside the new mount namespace: bind the sandbox's var over /var, then the script.
const WRAPPER: &str = r#"set -e
mount --bind "$1" /var
cd "$3"
exec bash "$2""#;

/// Checks that private mount namespaces work here (the simulator never runs scripts on the host).
pub fn check_available() -> Result<(), String> {
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare --mount --propagation private does not work here ({}): the node simulator needs root and mount namespaces; it never runs node scripts on the host",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes the script and starts it; returns the child (leader of its own process group).
pub fn spawn(spec: &RunSpec, text: &str) -> std::io::Result<tokio::process::Child> {
    std::fs::create_dir_all(&spec.command_dir)?;
    let script = spec.command_dir.join("_script.sh");
    std::fs::write(&script, text)?;
    let stdout = std::fs::File::create(spec.command_dir.join("stdout"))?;
    let stderr = std::fs::File::create(spec.command_dir.join("stderr"))?;
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        spec.stand_ins_dir.display()
    );
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "bash",
        "-c",
        WRAPPER,
        "mecplane-sim",
    ])
    .arg(spec.sandbox_dir.join("var"))
    .arg(&script)
    .arg(&spec.command_dir)
    .env_clear()
    .env("PATH", path)
    .env("HOME", "/root")
    .env("LANG", "C.UTF-8")
    .env("MECPLANE_SIM_INSTANCE_ID", &spec.instance_id)
    .env("MECPLANE_SIM_IP", &spec.ip)
    .env("MECPLANE_SIM_HOSTNAME", &spec.hostname)
    .env("MECPLANE_SIM_NET", &spec.net_dir)
    .env("MECPLANE_SIM_FAULTS", spec.faults.join(","))
    .env("MECPLANE_SIM_SCRIPT", spec.script.as_deref().unwrap_or(""))
    .stdin(Stdio::null())
    .stdout(stdout)
    .stderr(stderr)
    .process_group(0)
    .kill_on_drop(false);
    cmd.spawn()
}

/// Kills a whole process group.
pub fn kill_group(pgid: u32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
    }
}

/// Reads an output file, at most `limit` characters (as SSM cuts output).
pub fn read_output(path: &Path, limit: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    truncate_chars(&text, limit)
}

/// The first `limit` characters of `s`.
pub fn truncate_chars(s: &str, limit: usize) -> String {
    match s.char_indices().nth(limit) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}
