//! The command line: every subcommand, flag and the exit codes, as `mecctl --help` shows them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What `--help` says about exit codes (see [`crate::exit`]).
const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the API or the network failed (5xx, unreachable, unexpected answer)
  2    usage error (bad flags)
  3    no such cluster, or no such node of it (404)
  4    conflict (409: name taken, cluster busy or not ACTIVE; 412: the cluster changed meanwhile)
  5    the request was refused as invalid (400, 413, 422); the message names the field
  6    the cluster ended FAILED, or the update Failed, while waiting
  7    waiting timed out (the cluster carries on)
  130  interrupted (Ctrl-C stops waiting, not the cluster)

Endpoint: --endpoint, else MECCTL_ENDPOINT, else the config file (--config, MECCTL_CONFIG or
~/.config/mecctl/config.json: {\"endpoint\": \"https://…/\", \"region\": \"eu-west-1\"}), else,
only when asked, the local stack's env file (--local: ./.mecplane/local.env; or --env-file).
Requests are signed with SigV4 (service execute-api) using the standard AWS credential chain.";

#[derive(Debug, Parser)]
#[command(name = "mecctl", version, about = "Create and manage MicroK8s edge clusters with mecplane", after_help = EXIT_CODES)]
pub struct Cli {
    /// The mecplane HTTP API, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com
    #[arg(long, global = true, env = "MECCTL_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The region the API is deployed in (for SigV4); default: the execute-api URL's, the config
    /// file's, the local stack's, then AWS_REGION.
    #[arg(long, global = true)]
    pub api_region: Option<String>,
    /// Config file with "endpoint" and "region".
    #[arg(long, global = true, env = "MECCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Talk to the local stack (`make up`): read its endpoint and test credentials from
    /// ./.mecplane/local.env (same as --env-file .mecplane/local.env).
    #[arg(long, global = true, conflicts_with = "env_file")]
    pub local: bool,
    /// The local stack's env file to read the endpoint and test credentials from.
    #[arg(long, global = true, env = "MECCTL_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster (from flags or a JSON spec file).
    Create(Box<CreateArgs>),
    /// List clusters, newest first.
    List(ListArgs),
    /// Show a cluster, its nodes and its latest events.
    Get(ClusterArg),
    /// Delete a cluster: its instances, security group and parameters.
    Delete(DeleteArgs),
    /// Change the number of workers of an ACTIVE cluster (one change at a time).
    Scale(ScaleArgs),
    /// Move an ACTIVE cluster to another MicroK8s channel (snap refresh, node by node).
    Upgrade(UpgradeArgs),
    /// Enable or disable MicroK8s add-ons of an ACTIVE cluster.
    Addons(AddonsArgs),
    /// Open or close workload ports of an ACTIVE cluster (its security group follows).
    Expose(ExposeArgs),
    /// Replace one node of an ACTIVE cluster with a new instance of the same role and index.
    ReplaceNode(ReplaceNodeArgs),
    /// The changes made to a cluster, newest first.
    Updates(ClusterArg),
    /// The cluster's events, oldest first.
    Events(ClusterArg),
    /// Write the cluster's kubeconfig into a kubeconfig file (merged, context named after it).
    Kubeconfig(KubeconfigArgs),
    /// Follow a cluster until it is ACTIVE, FAILED or DELETED.
    Wait(WaitArgs),
    /// Reconcile the fleet now (what the schedule runs): replace dead nodes, move stuck records
    /// on, remove orphans; --dry-run prints the plan without acting.
    Reconcile(ReconcileArgs),
    /// Serve a web page on 127.0.0.1 to watch and steer every cluster; prints its URL (with a
    /// token that works once, for one tab) and runs until interrupted.
    Dashboard(DashboardArgs),
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Port to listen on (127.0.0.1 only); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Open the page in the default browser.
    #[arg(long)]
    pub open: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Print the plan without acting.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ClusterArg {
    /// Cluster id (c-…) or name.
    pub cluster: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Cluster name (lowercase letters, digits and '-'), as --name.
    #[arg(value_name = "NAME", conflicts_with = "name")]
    pub name_arg: Option<String>,
    /// Cluster name (lowercase letters, digits and '-').
    #[arg(long, required_unless_present_any = ["file", "name_arg"])]
    pub name: Option<String>,
    /// A JSON cluster spec (as POST /clusters takes); flags override its fields.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Build the spec from the IEC Type 2 Terraform blueprint's variables in the environment
    /// (TF_VAR_aws_region, TF_VAR_aws_instance, TF_VAR_aws_ami, TF_VAR_aws_subnet_id or
    /// TF_VAR_vpc_id, and mecplane's own TF_VAR_worker_count, default 1); flags override them.
    /// The spec is printed (stderr) before it is sent.
    #[arg(long, conflicts_with = "file")]
    pub from_tf_vars: bool,
    /// Print the request it would send (JSON, stdout) and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The image every node boots (ami-…), instead of the Ubuntu image looked up for the release
    /// and architecture; the create checks it exists, fits the architecture and is of an allowed owner.
    #[arg(long)]
    pub ami_id: Option<String>,
    /// Region of the cluster (default: the API's region).
    #[arg(long)]
    pub region: Option<String>,
    /// Control-plane nodes: 1, or 3 for HA.
    #[arg(long)]
    pub control_planes: Option<u32>,
    /// Worker nodes.
    #[arg(long)]
    pub workers: Option<u32>,
    /// EC2 instance type of every node.
    #[arg(long)]
    pub instance_type: Option<String>,
    /// MicroK8s snap channel, e.g. 1.32/stable.
    #[arg(long)]
    pub channel: Option<String>,
    /// Ubuntu release of the nodes, e.g. 24.04.
    #[arg(long)]
    pub ubuntu_release: Option<String>,
    /// MicroK8s add-on to enable (repeat).
    #[arg(long = "addon")]
    pub addons: Vec<String>,
    /// Subnet to launch the nodes in.
    #[arg(long, conflicts_with = "subnets")]
    pub subnet_id: Option<String>,
    /// Subnet of one VPC (repeat): control planes one per subnet in order, workers round-robin.
    #[arg(long = "subnet", value_name = "SUBNET_ID")]
    pub subnets: Vec<String>,
    /// Subnet for the workers alone (repeat), e.g. in a Local Zone or Wavelength zone.
    #[arg(long = "worker-subnet", value_name = "SUBNET_ID")]
    pub worker_subnets: Vec<String>,
    /// CIDR allowed to reach the Kubernetes API on 16443 (repeat).
    #[arg(long = "allow-cidr")]
    pub api_allowed_cidrs: Vec<String>,
    /// Mean it when an --allow-cidr is 0.0.0.0/0 (the whole internet); refused otherwise.
    #[arg(long)]
    pub allow_api_from_anywhere: bool,
    /// Open a workload port to CIDRs: PORT[-PORT][/tcp|udp]=CIDR[,CIDR...], e.g.
    /// 443=203.0.113.0/24 or 30000-32767/udp=10.0.0.0/8 (repeat).
    #[arg(long = "expose", value_parser = parse_expose)]
    pub exposed_ports: Vec<mecplane::spec::ExposedPort>,
    /// Mean it when an --expose names 0.0.0.0/0 (the whole internet); refused otherwise.
    #[arg(long)]
    pub expose_anywhere: bool,
    /// Where the Kubernetes API is reached: node (the first control plane's address, the
    /// default) or nlb (a network load balancer in front of every control plane).
    #[arg(long, value_parser = ["node", "nlb"])]
    pub api_endpoint: Option<String>,
    /// A DNS name or IP address the API certificate carries besides the cluster's own (repeat).
    #[arg(long = "extra-san", value_name = "NAME")]
    pub extra_sans: Vec<String>,
    /// The Pod Security Standard the API servers enforce outside the add-ons' namespaces:
    /// baseline (the default: no host namespaces, privileged containers, hostPath volumes or host
    /// ports), restricted, or privileged (nothing enforced).
    #[arg(long, value_name = "LEVEL", value_parser = ["privileged", "baseline", "restricted"])]
    pub pod_security: Option<String>,
    /// Root volume size (GiB).
    #[arg(long)]
    pub root_volume_gib: Option<u32>,
    /// Tag for every resource, key=value (repeat).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Keep the instances and security group if the create fails (to debug it).
    #[arg(long)]
    pub retain_on_failure: bool,
    /// Idempotency key: the same key again answers the first request's cluster (default: random).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only clusters in this status (CREATING, ACTIVE, UPDATING, FAILED, DELETING, DELETED).
    #[arg(long)]
    pub status: Option<String>,
    /// Only clusters in this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Page size of each API call (every page is fetched).
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// Worker nodes wanted: more launches and joins workers, fewer drains and removes the
    /// highest-index ones.
    #[arg(long)]
    pub workers: u32,
    /// Change the cluster only if its record is still at this version (its ETag, e.g. 7).
    #[arg(long)]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// MicroK8s snap channel to move to: <major>.<minor>/<risk>, risk one of stable, candidate,
    /// beta, edge, e.g. 1.33/stable.
    #[arg(long, value_parser = parse_channel)]
    pub channel: String,
    /// How many workers may be out of service at once (1–10; the API's default is 1). Control
    /// planes always go one at a time.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_unavailable: Option<u32>,
    /// Change the cluster only if its record is still at this version (its ETag, e.g. 7).
    #[arg(long)]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").args(["enable", "disable"]).required(true).multiple(true)))]
pub struct AddonsArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// Add-on to enable, with its arguments if any, e.g. ingress or metallb:10.0.0.10-10.0.0.20;
    /// replaces the cluster's entry of the same name, else is added (repeat).
    #[arg(long, value_name = "ADDON[:ARGS]", value_parser = parse_enable)]
    pub enable: Vec<String>,
    /// Add-on to disable, by name (repeat).
    #[arg(long, value_name = "NAME", value_parser = parse_disable)]
    pub disable: Vec<String>,
    /// Change the cluster only if its record is still at this version (its ETag, e.g. 7); by
    /// default, the version the add-ons were read at.
    #[arg(long)]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").args(["open", "close"]).required(true).multiple(true)))]
pub struct ExposeArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// Open a workload port to CIDRs, as `create --expose` takes it:
    /// PORT[-PORT][/tcp|udp]=CIDR[,CIDR...]; replaces the cluster's entry for the same port and
    /// protocol, else is added (repeat).
    #[arg(long, value_name = "PORT[/PROTO]=CIDRS", value_parser = parse_expose)]
    pub open: Vec<mecplane::spec::ExposedPort>,
    /// Close an exposed port: PORT[-PORT][/tcp|udp] as the cluster lists it (repeat).
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = parse_close)]
    pub close: Vec<(String, String)>,
    /// Mean it when an --open names 0.0.0.0/0 (the whole internet); refused otherwise.
    #[arg(long)]
    pub anywhere: bool,
    /// Change the cluster only if its record is still at this version (its ETag, e.g. 7); by
    /// default, the version the ports were read at.
    #[arg(long)]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
pub struct ReplaceNodeArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// The EC2 instance id of the node to replace (see `mecctl get`), e.g. i-0123456789abcdef0.
    pub instance_id: String,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
pub struct WaitFlags {
    /// Follow the cluster until it settles, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait, e.g. 900s, 20m.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// How long to wait, e.g. 900s, 20m.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Cluster id (c-…) or name.
    pub cluster: String,
    /// The kubeconfig file to write or merge into (default: $KUBECONFIG's first entry, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Print the cluster's kubeconfig instead of writing a file.
    #[arg(long)]
    pub print: bool,
    /// Leave current-context as it is (by default the cluster's context becomes current, as
    /// `aws eks update-kubeconfig` does).
    #[arg(long)]
    pub keep_context: bool,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

/// `443=203.0.113.0/24`, `30000-32767/udp=10.0.0.0/8,192.0.2.0/24`: the API checks the rest.
fn parse_expose(s: &str) -> Result<mecplane::spec::ExposedPort, String> {
    let bad = || format!("'{s}' is not PORT[-PORT][/tcp|udp]=CIDR[,CIDR...]");
    let (ports, cidrs) = s.split_once('=').ok_or_else(bad)?;
    let (port, protocol) = ports.split_once('/').unwrap_or((ports, "tcp"));
    let cidrs: Vec<String> = cidrs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    if port.is_empty() || cidrs.is_empty() {
        return Err(bad());
    }
    Ok(mecplane::spec::ExposedPort {
        port: match port.parse::<u32>() {
            Ok(n) => mecplane::spec::PortValue::Number(n),
            Err(_) => mecplane::spec::PortValue::Text(port.to_string()),
        },
        protocol: protocol.to_string(),
        cidrs,
        allow_anywhere: false,
    })
}

/// `8080`, `30000-32767/udp`: a port (or range) and protocol to close (tcp by default).
fn parse_close(s: &str) -> Result<(String, String), String> {
    let (port, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
    if port.is_empty() || protocol.is_empty() {
        return Err(format!("'{s}' is not PORT[-PORT][/tcp|udp]"));
    }
    Ok((port.to_string(), protocol.to_string()))
}

/// `1.33/stable`: the shape the API accepts (mecplane's own check: `<major>.<minor>/<risk>`,
/// risk stable, candidate, beta or edge, and a minor mecplane installs).
fn parse_channel(s: &str) -> Result<String, String> {
    use mecplane::microk8s::{channel_minor, SUPPORTED_MINORS};
    match channel_minor(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "'{s}' is not a channel like 1.33/stable: 1.<minor>/<stable|candidate|beta|edge> with a minor from {} to {}",
            SUPPORTED_MINORS.start(),
            SUPPORTED_MINORS.end()
        )),
    }
}

/// `ingress`, `metallb:10.0.0.10-10.0.0.20`: an add-on as a spec lists it (mecplane's own check).
fn parse_enable(s: &str) -> Result<String, String> {
    mecplane::microk8s::validate_addon(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("'{s}': {e}"))
}

/// `ingress`: an add-on's name, without arguments.
fn parse_disable(s: &str) -> Result<String, String> {
    match mecplane::microk8s::validate_addon(s) {
        Ok((name, None)) => Ok(name.to_string()),
        Ok((name, Some(_))) => Err(format!(
            "'{s}': --disable takes the add-on's name only ('{name}')"
        )),
        Err(e) => Err(format!("'{s}': {e}")),
    }
}

/// `90`, `90s`, `15m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    // A bare number is seconds; anything else is humantime's (90s, 15m, 1h30m, 2h).
    let text = s.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("'{s}' is not a duration like 90s, 15m or 1h30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tags_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err() && parse_duration("5 parsecs").is_err());
        assert_eq!(parse_tag("env=edge"), Ok(("env".into(), "edge".into())));
        assert!(parse_tag("env").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "mecctl",
            "create",
            "--name",
            "edge",
            "--workers",
            "2",
            "--addon",
            "dns",
            "--addon",
            "hostpath-storage",
            "--tag",
            "env=lab",
            "--wait",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.output, Format::Json);
        let Command::Create(args) = cli.command else {
            panic!("create")
        };
        assert_eq!(args.name.as_deref(), Some("edge"));
        assert_eq!(args.addons, ["dns", "hostpath-storage"]);
        assert!(args.wait.wait);
        assert!(
            Cli::try_parse_from(["mecctl", "create"]).is_err(),
            "a name or a file"
        );
        let cli = Cli::try_parse_from([
            "mecctl",
            "scale",
            "edge",
            "--workers",
            "4",
            "--wait",
            "--timeout",
            "10m",
        ])
        .unwrap();
        let Command::Scale(args) = cli.command else {
            panic!("scale")
        };
        assert_eq!((args.cluster.as_str(), args.workers), ("edge", 4));
        assert!(args.wait.wait && args.if_version.is_none());
        assert_eq!(args.wait.timeout, Duration::from_secs(600));
        assert!(
            Cli::try_parse_from(["mecctl", "scale", "edge"]).is_err(),
            "--workers is required"
        );
        assert!(Cli::try_parse_from(["mecctl", "scale", "edge", "--workers", "-1"]).is_err());
        let cli = Cli::try_parse_from(["mecctl", "updates", "edge", "-o", "json"]).unwrap();
        assert!(
            matches!(cli.command, Command::Updates(ClusterArg { ref cluster }) if cluster == "edge")
        );
    }

    #[test]
    fn upgrade_takes_a_channel_of_the_shape_the_api_accepts() {
        let cli = Cli::try_parse_from([
            "mecctl",
            "upgrade",
            "edge",
            "--channel",
            "1.33/stable",
            "--if-version",
            "3",
            "--wait",
        ])
        .unwrap();
        let Command::Upgrade(args) = cli.command else {
            panic!("upgrade")
        };
        assert_eq!(
            (args.cluster.as_str(), args.channel.as_str()),
            ("edge", "1.33/stable")
        );
        assert_eq!(args.if_version, Some(3));
        assert!(args.wait.wait);
        for channel in ["1.33/edge", "1.30/candidate", "1.28/beta"] {
            assert!(
                Cli::try_parse_from(["mecctl", "upgrade", "edge", "--channel", channel]).is_ok(),
                "{channel}"
            );
        }
        for channel in [
            "1.33",
            "1.33/nightly",
            "latest/stable",
            "2.1/stable",
            "1.12/stable",
            "",
        ] {
            let err = Cli::try_parse_from(["mecctl", "upgrade", "edge", "--channel", channel])
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{channel}");
        }
        assert!(
            Cli::try_parse_from(["mecctl", "upgrade", "edge"]).is_err(),
            "--channel is required"
        );
    }

    #[test]
    fn addons_needs_a_change_and_well_formed_add_ons() {
        let cli = Cli::try_parse_from([
            "mecctl",
            "addons",
            "edge",
            "--enable",
            "metallb:10.0.0.10-10.0.0.20",
            "--enable",
            "ingress",
            "--disable",
            "dns",
            "--wait",
        ])
        .unwrap();
        let Command::Addons(args) = cli.command else {
            panic!("addons")
        };
        assert_eq!(args.enable, ["metallb:10.0.0.10-10.0.0.20", "ingress"]);
        assert_eq!(args.disable, ["dns"]);
        assert!(args.wait.wait && args.if_version.is_none());
        assert!(Cli::try_parse_from(["mecctl", "addons", "edge", "--disable", "dns"]).is_ok());
        let none = Cli::try_parse_from(["mecctl", "addons", "edge", "--wait"]).unwrap_err();
        assert_eq!(none.exit_code(), 2, "--enable or --disable is required");
        for bad in [
            ["--enable", "Ingress"],
            ["--enable", "metallb:"],
            ["--enable", "x:$(reboot)"],
            ["--disable", "metallb:10.0.0.1-10.0.0.9"],
            ["--disable", ""],
        ] {
            let mut argv = vec!["mecctl", "addons", "edge"];
            argv.extend(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replace_node_takes_the_cluster_and_the_instance() {
        let cli = Cli::try_parse_from([
            "mecctl",
            "replace-node",
            "edge",
            "i-0123456789abcdef0",
            "--wait",
            "--timeout",
            "20m",
        ])
        .unwrap();
        let Command::ReplaceNode(args) = cli.command else {
            panic!("replace-node")
        };
        assert_eq!(
            (args.cluster.as_str(), args.instance_id.as_str()),
            ("edge", "i-0123456789abcdef0")
        );
        assert!(args.wait.wait);
        assert_eq!(args.wait.timeout, Duration::from_secs(1200));
        assert!(
            Cli::try_parse_from(["mecctl", "replace-node", "edge"]).is_err(),
            "the instance is required"
        );
    }
}
