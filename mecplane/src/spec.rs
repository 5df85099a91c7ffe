//! The cluster a user asks for: the request as it arrives (every field optional), its validation, and
//! the validated [`ClusterSpec`] with every default filled in, so the record shows what was decided.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::microk8s;

/// Default instance type: arm64, 2 vCPU, 4 GiB — enough for MicroK8s and a few edge workloads.
pub const DEFAULT_INSTANCE_TYPE: &str = "t4g.medium";
/// Default Ubuntu release.
pub const DEFAULT_UBUNTU_RELEASE: &str = "24.04";
/// Ubuntu releases with a MicroK8s snap and an SSM agent snap.
pub const UBUNTU_RELEASES: &[&str] = &["22.04", "24.04"];
/// Default root volume size.
pub const DEFAULT_ROOT_VOLUME_GIB: u32 = 20;
/// The most workers one cluster may have (one SSM SendCommand reaches 50 instances).
pub const MAX_WORKERS: u32 = 50;
/// Control-plane counts: one, or three for HA (dqlite needs three voters).
pub const CONTROL_PLANE_COUNTS: &[u32] = &[1, 3];
/// Longest cluster name: it is used in `Name` tags such as `<name>-worker-49`.
pub const MAX_NAME_LEN: usize = 40;
/// Instance types a deployment allows unless it says otherwise: small arm64 and amd64 types.
pub const DEFAULT_ALLOWED_INSTANCE_TYPES: &[&str] = &[
    "t3.medium",
    "t3.large",
    "t4g.medium",
    "t4g.large",
    "m6i.large",
    "m7g.large",
    "c6i.large",
    "c7g.large",
];
/// Largest root volume a deployment allows unless it says otherwise.
pub const DEFAULT_MAX_ROOT_VOLUME_GIB: u32 = 100;
/// Most nodes (control planes + workers) of one cluster unless the deployment says otherwise.
pub const DEFAULT_MAX_NODES: u32 = 10;
/// Most live clusters one principal may have unless the deployment says otherwise.
pub const DEFAULT_MAX_CLUSTERS_PER_PRINCIPAL: u32 = 10;

/// A cluster request as a user writes it. Unknown fields are rejected so a typo is not ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRequest {
    pub name: Option<String>,
    pub region: Option<String>,
    pub control_planes: Option<u32>,
    pub workers: Option<u32>,
    pub instance_type: Option<String>,
    pub ubuntu_release: Option<String>,
    pub microk8s_channel: Option<String>,
    pub addons: Option<Vec<String>>,
    /// One subnet for every node (what the API took first; `subnet_ids` says more).
    pub subnet_id: Option<String>,
    /// Subnets of one VPC: control planes one per subnet in order (so one per zone when the
    /// subnets are in different zones), workers round-robin. Left out when unset, as below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_ids: Option<Vec<String>>,
    /// Subnets for the workers alone (control plane in the region, workers at the edge), of the
    /// same VPC. Left out when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_subnet_ids: Option<Vec<String>>,
    /// The VPC of the cluster: without `subnet_ids` the API chooses its subnets (standard zones,
    /// one per zone, at most three); with them, each must be in it. Left out when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    pub api_allowed_cidrs: Option<Vec<String>>,
    /// Must be `true` for `api_allowed_cidrs` to hold `0.0.0.0/0` (the whole internet); not
    /// part of the spec, whose CIDRs show the decision. Left out when unset, so idempotency hashes
    /// of requests without it stay what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_api_from_anywhere: Option<bool>,
    /// Ports opened to the outside for the cluster's workloads. Left out when unset, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<Vec<ExposedPort>>,
    pub root_volume_gib: Option<u32>,
    pub tags: Option<BTreeMap<String, String>>,
    pub retain_on_failure: Option<bool>,
    /// The image every node boots instead of the Ubuntu image looked up for the release and
    /// architecture (`ami-…`; the create checks it exists in the region, fits the instance type's
    /// architecture and is of an owner the deployment allows). Left out when unset, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_id: Option<String>,
    /// Where the cluster's API is reached: `node` (the first control plane's address, the
    /// default) or `nlb` (a network load balancer in front of every control plane). Left out
    /// when unset, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// DNS names or IP addresses the API server's certificate carries besides the cluster's own
    /// (at most [`MAX_EXTRA_SANS`]). Left out when unset, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_sans: Option<Vec<String>>,
    /// The Pod Security Standard the API servers enforce in every namespace but the add-ons' own:
    /// `privileged`, `baseline` (the default) or `restricted`. Left out when unset, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<String>,
    /// Idempotency token, as EKS's `clientRequestToken`; not part of the spec.
    pub client_token: Option<String>,
}

impl ClusterRequest {
    /// The fields left out of the JSON when unset (see the fields): with those a default request
    /// serializes, every field a request may carry.
    pub const OMITTED_WHEN_UNSET: &'static [&'static str] = &[
        "subnet_ids",
        "worker_subnet_ids",
        "vpc_id",
        "allow_api_from_anywhere",
        "exposed_ports",
        "ami_id",
        "api_endpoint",
        "extra_sans",
        "pod_security",
    ];
}

/// Where a cluster's Kubernetes API is reached (the kubeconfig's server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiEndpoint {
    /// The first control plane's address (carrier, public or private IP).
    #[default]
    Node,
    /// A network load balancer's DNS name, TCP 16443 forwarded to every live control plane
    /// (health checked): the endpoint outlives any one control plane. Allowed with one control
    /// plane too, as Cluster API's AWS provider always fronts the API with a load balancer: the
    /// name stays when that control plane is replaced.
    Nlb,
}

impl ApiEndpoint {
    /// The name a request and the record use.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiEndpoint::Node => "node",
            ApiEndpoint::Nlb => "nlb",
        }
    }
}

/// The Pod Security Standard a cluster's API servers enforce (Pod Security admission, configured on
/// every control plane before MicroK8s starts; see the node scripts' `pod-security` block), in every
/// namespace but those MicroK8s add-ons install into. `baseline` forbids what reaches the node
/// itself: host namespaces (`hostNetwork`, `hostPID`, `hostIPC`), privileged containers, `hostPath`
/// volumes, host ports — so a pod cannot share the node's network and reach its instance
/// credentials through IMDS, which hop limit 1 only keeps from pods on the pod network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurity {
    /// Nothing enforced (what a MicroK8s API server does without an admission configuration).
    Privileged,
    /// Host namespaces, privileged containers, `hostPath` volumes and host ports refused.
    #[default]
    Baseline,
    /// `baseline`, and pods must run as non-root, drop every capability, never escalate and use
    /// the runtime's seccomp profile.
    Restricted,
}

impl PodSecurity {
    /// The level's name, as a request, the record and Kubernetes write it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Privileged => "privileged",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }

    /// What a record written before the field existed holds: its API servers were started
    /// without an admission configuration, so nothing is enforced.
    pub fn before_the_field() -> Self {
        PodSecurity::Privileged
    }

    /// Parses a request's value; the error names `pod_security`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "privileged" => Ok(PodSecurity::Privileged),
            "baseline" => Ok(PodSecurity::Baseline),
            "restricted" => Ok(PodSecurity::Restricted),
            _ => Err(invalid(
                "pod_security",
                "must be privileged, baseline (the default: no host namespaces, privileged containers, hostPath volumes or host ports) or restricted",
            )),
        }
    }
}

/// Most `extra_sans` of one cluster.
pub const MAX_EXTRA_SANS: usize = 10;

/// Checks `extra_sans`: at most [`MAX_EXTRA_SANS`], each an IP address or a DNS name (labels of
/// letters, digits and hyphens, 253 characters at most), none twice. DNS names are lowercased
/// (certificates compare them so). The error names the entry (`extra_sans[1]`).
pub fn validate_extra_sans(sans: &[String]) -> Result<Vec<String>, ValidationError> {
    if sans.len() > MAX_EXTRA_SANS {
        return Err(invalid(
            "extra_sans",
            format!("at most {MAX_EXTRA_SANS} names"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, san) in sans.iter().enumerate() {
        let field = format!("extra_sans[{i}]");
        let san = if san.parse::<std::net::IpAddr>().is_ok() {
            san.clone()
        } else {
            let name = san.to_ascii_lowercase();
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            let numeric_tld = name
                .rsplit('.')
                .next()
                .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
            if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) || numeric_tld
            {
                return Err(invalid(
                    field,
                    "must be an IP address or a DNS name such as api.example.com",
                ));
            }
            name
        };
        if out.contains(&san) {
            return Err(invalid(field, format!("{san} is named twice")));
        }
        out.push(san);
    }
    Ok(out)
}

/// Most `exposed_ports` entries of one cluster.
pub const MAX_EXPOSED_PORTS: usize = 20;
/// Most security group rules the exposed ports may add (one per entry and CIDR): the group's
/// limit is 60 inbound rules, and MicroK8s and the API take some.
pub const MAX_EXPOSED_RULES: usize = 40;

/// A port (or a range) opened to the outside for the cluster's workloads: `{"port": 443,
/// "protocol": "tcp", "cidrs": ["203.0.113.0/24"]}`, or `"port": "30000-32767"` for the NodePort
/// range. Never 22 and never a port MicroK8s uses between its nodes; `0.0.0.0/0` only with
/// `allow_anywhere: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposedPort {
    pub port: PortValue,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_anywhere: bool,
}

fn default_protocol() -> String {
    "tcp".into()
}

impl ExposedPort {
    /// For events and the CLI: `443/tcp from 203.0.113.0/24, 10.0.0.0/8`.
    pub fn describe(&self) -> String {
        let port = match &self.port {
            PortValue::Number(n) => n.to_string(),
            PortValue::Text(t) => t.clone(),
        };
        format!("{port}/{} from {}", self.protocol, self.cidrs.join(", "))
    }
}

/// Whether two canonical `exposed_ports` lists open the same thing, whatever their order.
pub fn same_exposed_ports(a: &[ExposedPort], b: &[ExposedPort]) -> bool {
    let key = |p: &ExposedPort| {
        let mut cidrs = p.cidrs.clone();
        cidrs.sort();
        (
            p.protocol.clone(),
            p.port.range().ok(),
            cidrs,
            p.allow_anywhere,
        )
    };
    let sorted = |l: &[ExposedPort]| {
        let mut keys: Vec<_> = l.iter().map(key).collect();
        keys.sort();
        keys
    };
    sorted(a) == sorted(b)
}

/// A port as written: a number, or a range `"from-to"` (a single number in quotes is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(u32),
    Text(String),
}

impl PortValue {
    /// The first and last port, when well-formed (1–65535, first ≤ last).
    pub fn range(&self) -> Result<(u16, u16), String> {
        let port = |n: u32| u16::try_from(n).ok().filter(|p| *p >= 1);
        let bad = || "must be a port 1-65535 or a range such as \"30000-32767\"".to_string();
        let (from, to) = match self {
            PortValue::Number(n) => (port(*n).ok_or_else(bad)?, port(*n).ok_or_else(bad)?),
            PortValue::Text(t) => {
                let (a, b) = t.split_once('-').unwrap_or((t, t));
                let parse = |v: &str| v.trim().parse::<u32>().ok().and_then(port).ok_or_else(bad);
                (parse(a)?, parse(b)?)
            }
        };
        if from > to {
            return Err(format!("the range {from}-{to} runs backwards"));
        }
        Ok((from, to))
    }

    /// The canonical form: a number for one port, `"from-to"` for a range.
    fn canonical(from: u16, to: u16) -> PortValue {
        if from == to {
            PortValue::Number(u32::from(from))
        } else {
            PortValue::Text(format!("{from}-{to}"))
        }
    }
}

/// Checks `exposed_ports` and returns them in canonical form.
pub fn validate_exposed_ports(ports: &[ExposedPort]) -> Result<Vec<ExposedPort>, ValidationError> {
    if ports.len() > MAX_EXPOSED_PORTS {
        return Err(invalid(
            "exposed_ports",
            format!("at most {MAX_EXPOSED_PORTS} entries"),
        ));
    }
    let rules: usize = ports.iter().map(|p| p.cidrs.len()).sum();
    if rules > MAX_EXPOSED_RULES {
        return Err(invalid(
            "exposed_ports",
            format!("at most {MAX_EXPOSED_RULES} port and CIDR pairs in all (the security group's rule limit)"),
        ));
    }
    let mut out: Vec<ExposedPort> = Vec::new();
    for (i, entry) in ports.iter().enumerate() {
        let at = |field: &str| format!("exposed_ports[{i}].{field}");
        let (from, to) = entry.port.range().map_err(|m| invalid(at("port"), m))?;
        if (from..=to).contains(&22) {
            return Err(invalid(
                at("port"),
                "22 (SSH) is never opened: nodes are reached through SSM",
            ));
        }
        let protocol = entry.protocol.as_str();
        if !matches!(protocol, "tcp" | "udp") {
            return Err(invalid(at("protocol"), "must be tcp or udp"));
        }
        let internal: &[u16] = if protocol == "tcp" {
            &microk8s::INTRA_CLUSTER_TCP
        } else {
            &microk8s::INTRA_CLUSTER_UDP
        };
        if let Some(p) = internal.iter().find(|p| (from..=to).contains(p)) {
            let hint = if *p == microk8s::PORT_API {
                "; the Kubernetes API is opened through api_allowed_cidrs"
            } else {
                ""
            };
            return Err(invalid(
                at("port"),
                format!(
                    "{protocol} {p} is MicroK8s' own, open only between the cluster's nodes{hint}"
                ),
            ));
        }
        if entry.cidrs.is_empty() {
            return Err(invalid(at("cidrs"), "name at least one CIDR"));
        }
        for (j, cidr) in entry.cidrs.iter().enumerate() {
            let field = at(&format!("cidrs[{j}]"));
            validate_cidr(cidr).map_err(|m| invalid(&field, m))?;
            if cidr.ends_with("/0") && !entry.allow_anywhere {
                return Err(invalid(
                    field,
                    "0.0.0.0/0 opens the port to the whole internet: name narrower CIDRs, or set allow_anywhere to true on this entry to mean it",
                ));
            }
        }
        let overlapping = out.iter().position(|o| {
            let (a, b) = o.port.range().unwrap_or((0, 0));
            o.protocol == protocol && a <= to && from <= b
        });
        if let Some(k) = overlapping {
            return Err(invalid(at("port"), format!("overlaps exposed_ports[{k}]")));
        }
        out.push(ExposedPort {
            port: PortValue::canonical(from, to),
            protocol: protocol.to_string(),
            cidrs: entry.cidrs.clone(),
            allow_anywhere: entry.allow_anywhere,
        });
    }
    Ok(out)
}

/// Checks a cluster's add-ons as a create or a PATCH lists them: at most 20, each `name` or
/// `name:args`, each available on `arch`, no name twice. The error names the entry (`addons[1]`).
pub fn validate_addons(addons: &[String], arch: Arch) -> Result<(), ValidationError> {
    if addons.len() > 20 {
        return Err(invalid("addons", "at most 20 add-ons"));
    }
    for (i, addon) in addons.iter().enumerate() {
        let field = format!("addons[{i}]");
        let (name, _) = microk8s::validate_addon(addon).map_err(|m| invalid(&field, m))?;
        if !microk8s::addon_available(addon, arch) {
            return Err(invalid(
                field,
                format!("'{name}' is not a MicroK8s add-on on {}", arch.as_str()),
            ));
        }
        if addons[..i].iter().any(|a| microk8s::addon_name(a) == name) {
            return Err(invalid(field, format!("'{name}' is listed twice")));
        }
    }
    Ok(())
}

/// CPU architecture of the nodes, which follows from the instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Arm64,
    Amd64,
}

impl Arch {
    /// The name Ubuntu's AMI parameters use.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }

    /// The name EC2 gives an image of this architecture (`DescribeImages`' `Architecture`).
    pub fn ec2_name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "x86_64",
        }
    }
}

/// A validated cluster specification with every default resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub name: String,
    pub region: String,
    pub control_planes: u32,
    pub workers: u32,
    pub instance_type: String,
    pub arch: Arch,
    pub ubuntu_release: String,
    pub microk8s_channel: String,
    pub addons: Vec<String>,
    /// The first of `subnet_ids` (the subnet whose VPC holds the cluster), as records before
    /// `subnet_ids` had it; [`ClusterSpec::subnets`] reads both.
    pub subnet_id: Option<String>,
    /// The control planes' subnets, in order (`[]`: the default VPC's default subnet, or
    /// `subnet_id` in records written before this field existed).
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// The workers' subnets (`[]`: the control planes').
    #[serde(default)]
    pub worker_subnet_ids: Vec<String>,
    /// The VPC the user named (`None`: the subnets' VPC, or the default VPC). Its subnets, when
    /// the API chose them, are in `subnet_ids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    pub api_allowed_cidrs: Vec<String>,
    /// Ports opened to the outside, canonical (`[]` in records written before they existed).
    #[serde(default)]
    pub exposed_ports: Vec<ExposedPort>,
    pub root_volume_gib: u32,
    pub tags: BTreeMap<String, String>,
    pub retain_on_failure: bool,
    /// The image the user chose for every node (`None`: the Ubuntu image of the release and
    /// architecture, looked up at launch).
    #[serde(default)]
    pub ami_id: Option<String>,
    /// Where the API is reached (`node` in records written before it existed).
    #[serde(default)]
    pub api_endpoint: ApiEndpoint,
    /// The user's own names in the API certificate (`[]` in records written before it existed).
    #[serde(default)]
    pub extra_sans: Vec<String>,
    /// The Pod Security Standard enforced (`privileged` in records written before it existed:
    /// those clusters' API servers have no admission configuration).
    #[serde(default = "PodSecurity::before_the_field")]
    pub pod_security: PodSecurity,
}

/// What the deployment allows and defaults (from the function's environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The region used when a request names none.
    pub default_region: String,
    /// Regions clusters may be created in; empty means any well-formed region.
    pub allowed_regions: Vec<String>,
    /// The instance type used when a request names none.
    pub default_instance_type: String,
    /// Instance types a spec may name; empty means any well-formed type.
    pub allowed_instance_types: Vec<String>,
    /// The largest root volume, in GiB.
    pub max_root_volume_gib: u32,
    /// The most nodes (control planes + workers) of one cluster.
    pub max_nodes: u32,
    /// The most live clusters one principal may have (the API answers `409` beyond it).
    pub max_clusters_per_principal: u32,
    /// Whether a principal sees only the clusters it created (others answer `404`).
    pub own_clusters_only: bool,
    /// The IAM roles and users (ARNs) that may run a reconcile that acts through the API
    /// (`POST /reconcile` without `dry_run`); empty: nobody (a dry run is anyone's).
    pub reconcile_principals: Vec<String>,
}

impl Policy {
    /// Reads `AWS_REGION`, `MECPLANE_ALLOWED_REGIONS` (comma list), `MECPLANE_DEFAULT_INSTANCE_TYPE`
    /// and the cost guardrails `MECPLANE_ALLOWED_INSTANCE_TYPES` (comma list; the template also
    /// binds the launch role's `ec2:InstanceType` condition to it),
    /// `MECPLANE_MAX_ROOT_VOLUME_GIB`, `MECPLANE_MAX_NODES`, `MECPLANE_MAX_CLUSTERS_PER_PRINCIPAL`,
    /// `MECPLANE_OWN_CLUSTERS_ONLY` (`true`/`false`) and `MECPLANE_RECONCILE_PRINCIPALS` (comma
    /// list of ARNs). An unset or unreadable guardrail keeps its default.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect()
        };
        let number = |k: &str, default: u32| {
            var(k).map_or(default, |v| match v.trim().parse() {
                Ok(n) => n,
                Err(_) => {
                    tracing::warn!(var = k, value = %v, default, "not a number; using the default");
                    default
                }
            })
        };
        let defaults = Policy::default();
        Policy {
            default_region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            allowed_regions: var("MECPLANE_ALLOWED_REGIONS")
                .map(list)
                .unwrap_or_default(),
            default_instance_type: var("MECPLANE_DEFAULT_INSTANCE_TYPE")
                .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into()),
            allowed_instance_types: var("MECPLANE_ALLOWED_INSTANCE_TYPES")
                .map(list)
                .unwrap_or(defaults.allowed_instance_types),
            max_root_volume_gib: number(
                "MECPLANE_MAX_ROOT_VOLUME_GIB",
                defaults.max_root_volume_gib,
            ),
            max_nodes: number("MECPLANE_MAX_NODES", defaults.max_nodes),
            max_clusters_per_principal: number(
                "MECPLANE_MAX_CLUSTERS_PER_PRINCIPAL",
                defaults.max_clusters_per_principal,
            ),
            own_clusters_only: var("MECPLANE_OWN_CLUSTERS_ONLY")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            reconcile_principals: var("MECPLANE_RECONCILE_PRINCIPALS")
                .map(list)
                .unwrap_or_default(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_region: "us-east-1".into(),
            allowed_regions: Vec::new(),
            default_instance_type: DEFAULT_INSTANCE_TYPE.into(),
            allowed_instance_types: DEFAULT_ALLOWED_INSTANCE_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            max_root_volume_gib: DEFAULT_MAX_ROOT_VOLUME_GIB,
            max_nodes: DEFAULT_MAX_NODES,
            max_clusters_per_principal: DEFAULT_MAX_CLUSTERS_PER_PRINCIPAL,
            own_clusters_only: false,
            reconcile_principals: Vec::new(),
        }
    }
}

/// A request field that is missing, out of range or of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field, as the user wrote it (`tags.env`, `api_allowed_cidrs[1]`).
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

impl ClusterRequest {
    /// Checks every field and fills in the defaults.
    pub fn validate(&self, policy: &Policy) -> Result<ClusterSpec, ValidationError> {
        let name = self
            .name
            .clone()
            .ok_or_else(|| invalid("name", "is required"))?;
        validate_name(&name)?;

        let region = self
            .region
            .clone()
            .unwrap_or_else(|| policy.default_region.clone());
        validate_region(&region, policy)?;

        let control_planes = self.control_planes.unwrap_or(1);
        if !CONTROL_PLANE_COUNTS.contains(&control_planes) {
            return Err(invalid(
                "control_planes",
                "must be 1, or 3 for high availability",
            ));
        }
        let workers = self.workers.unwrap_or(0);
        if workers > MAX_WORKERS {
            return Err(invalid(
                "workers",
                format!("must be between 0 and {MAX_WORKERS}"),
            ));
        }

        let instance_type = self
            .instance_type
            .clone()
            .unwrap_or_else(|| policy.default_instance_type.clone());
        let arch = instance_arch(&instance_type).map_err(|m| invalid("instance_type", m))?;
        if !policy.allowed_instance_types.is_empty()
            && !policy.allowed_instance_types.contains(&instance_type)
        {
            return Err(invalid(
                "instance_type",
                format!(
                    "must be one of {} (this deployment's allowed instance types)",
                    policy.allowed_instance_types.join(", ")
                ),
            ));
        }
        if control_planes + workers > policy.max_nodes {
            return Err(invalid(
                "workers",
                format!(
                    "{control_planes} control plane(s) + {workers} worker(s) is more than this deployment's limit of {} nodes per cluster",
                    policy.max_nodes
                ),
            ));
        }

        let ubuntu_release = self
            .ubuntu_release
            .clone()
            .unwrap_or_else(|| DEFAULT_UBUNTU_RELEASE.into());
        if !UBUNTU_RELEASES.contains(&ubuntu_release.as_str()) {
            return Err(invalid(
                "ubuntu_release",
                format!("must be one of {}", UBUNTU_RELEASES.join(", ")),
            ));
        }

        let microk8s_channel = self
            .microk8s_channel
            .clone()
            .unwrap_or_else(|| microk8s::DEFAULT_CHANNEL.into());
        if microk8s::channel_minor(&microk8s_channel).is_none() {
            return Err(invalid(
                "microk8s_channel",
                format!(
                    "must look like 1.32/stable with a minor from {} to {}",
                    microk8s::SUPPORTED_MINORS.start(),
                    microk8s::SUPPORTED_MINORS.end()
                ),
            ));
        }

        let addons = self.addons.clone().unwrap_or_else(|| vec!["dns".into()]);
        validate_addons(&addons, arch)?;

        let subnet_ids = match (&self.subnet_id, &self.subnet_ids) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "subnet_ids",
                    "give subnet_id (one subnet) or subnet_ids (several), not both",
                ))
            }
            (Some(one), None) => {
                validate_subnet(one).map_err(|m| invalid("subnet_id", m))?;
                vec![one.clone()]
            }
            (None, Some(many)) => validate_subnets("subnet_ids", many)?,
            (None, None) => Vec::new(),
        };
        let worker_subnet_ids = match &self.worker_subnet_ids {
            Some(many) => validate_subnets("worker_subnet_ids", many)?,
            None => Vec::new(),
        };
        if let Some(vpc) = &self.vpc_id {
            validate_vpc(vpc).map_err(|m| invalid("vpc_id", m))?;
        }

        let api_allowed_cidrs = self.api_allowed_cidrs.clone().unwrap_or_default();
        if api_allowed_cidrs.len() > 20 {
            return Err(invalid("api_allowed_cidrs", "at most 20 CIDRs"));
        }
        for (i, cidr) in api_allowed_cidrs.iter().enumerate() {
            let field = format!("api_allowed_cidrs[{i}]");
            validate_cidr(cidr).map_err(|m| invalid(&field, m))?;
            if cidr.ends_with("/0") && self.allow_api_from_anywhere != Some(true) {
                return Err(invalid(
                    field,
                    "0.0.0.0/0 opens the Kubernetes API to the whole internet: name narrower CIDRs, or set allow_api_from_anywhere to true to mean it",
                ));
            }
        }

        let exposed_ports =
            validate_exposed_ports(self.exposed_ports.as_deref().unwrap_or_default())?;

        let api_endpoint = match self.api_endpoint.as_deref() {
            None | Some("node") => ApiEndpoint::Node,
            Some("nlb") => ApiEndpoint::Nlb,
            Some(_) => return Err(invalid(
                "api_endpoint",
                "must be node (the first control plane's address) or nlb (a network load balancer)",
            )),
        };
        let extra_sans = validate_extra_sans(self.extra_sans.as_deref().unwrap_or_default())?;
        let pod_security = self
            .pod_security
            .as_deref()
            .map_or(Ok(PodSecurity::default()), PodSecurity::parse)?;

        let root_volume_gib = self.root_volume_gib.unwrap_or(DEFAULT_ROOT_VOLUME_GIB);
        let max_volume = policy.max_root_volume_gib.clamp(8, 16384);
        if !(8..=max_volume).contains(&root_volume_gib) {
            return Err(invalid(
                "root_volume_gib",
                format!("must be between 8 and {max_volume} (this deployment's limit)"),
            ));
        }

        if let Some(ami) = &self.ami_id {
            validate_ami_id(ami).map_err(|m| invalid("ami_id", m))?;
        }

        let tags = self.tags.clone().unwrap_or_default();
        if tags.len() > 40 {
            return Err(invalid("tags", "at most 40 tags"));
        }
        for (key, value) in &tags {
            let field = format!("tags.{key}");
            if key.is_empty() || key.len() > 128 {
                return Err(invalid(field, "a tag key has 1 to 128 characters"));
            }
            let lower = key.to_ascii_lowercase();
            if lower.starts_with("aws:")
                || lower.starts_with("mecplane:")
                || key == crate::resources::TAG_NAME
            {
                return Err(invalid(
                    field,
                    "keys starting with aws: or mecplane:, and Name, are reserved",
                ));
            }
            if value.len() > 256 {
                return Err(invalid(field, "a tag value has at most 256 characters"));
            }
        }

        if let Some(token) = &self.client_token {
            if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    "client_token",
                    "must be 1 to 64 printable characters",
                ));
            }
        }

        Ok(ClusterSpec {
            name,
            region,
            control_planes,
            workers,
            instance_type,
            arch,
            ubuntu_release,
            microk8s_channel,
            addons,
            subnet_id: subnet_ids.first().cloned(),
            subnet_ids,
            worker_subnet_ids,
            vpc_id: self.vpc_id.clone(),
            api_allowed_cidrs,
            exposed_ports,
            root_volume_gib,
            tags,
            retain_on_failure: self.retain_on_failure.unwrap_or(false),
            ami_id: self.ami_id.clone(),
            api_endpoint,
            extra_sans,
            pod_security,
        })
    }
}

/// Most subnets one list may name.
pub const MAX_SUBNETS: usize = 16;

/// `subnet-` and 8 or 17 hex digits.
fn validate_subnet(subnet: &str) -> Result<(), String> {
    let hex = subnet.strip_prefix("subnet-").unwrap_or("");
    if !(8..=17).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must look like subnet-0123456789abcdef0".into());
    }
    Ok(())
}

/// `ami-` and 8 or 17 hex digits (lowercase, as EC2 writes image ids).
fn validate_ami_id(ami: &str) -> Result<(), String> {
    let hex = ami.strip_prefix("ami-").unwrap_or("");
    if !(8..=17).contains(&hex.len())
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("must look like ami-0123456789abcdef0".into());
    }
    Ok(())
}

/// `vpc-` and 8 or 17 lower-case hex digits.
fn validate_vpc(vpc: &str) -> Result<(), String> {
    let hex = vpc.strip_prefix("vpc-").unwrap_or("");
    if !(8..=17).contains(&hex.len())
        || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("must look like vpc-0123456789abcdef0".into());
    }
    Ok(())
}

/// A list of subnets: at least one, at most [`MAX_SUBNETS`], each well-formed, none twice. The
/// error names the entry (`subnet_ids[1]`).
fn validate_subnets(field: &str, subnets: &[String]) -> Result<Vec<String>, ValidationError> {
    if subnets.is_empty() || subnets.len() > MAX_SUBNETS {
        return Err(invalid(
            field,
            format!("name 1 to {MAX_SUBNETS} subnets (or leave it out)"),
        ));
    }
    for (i, subnet) in subnets.iter().enumerate() {
        let at = format!("{field}[{i}]");
        validate_subnet(subnet).map_err(|m| invalid(&at, m))?;
        if subnets[..i].contains(subnet) {
            return Err(invalid(at, format!("{subnet} is named twice")));
        }
    }
    Ok(subnets.to_vec())
}

impl ClusterSpec {
    /// The subnets a role's nodes go to, in order (`[]`: the default subnet).
    pub fn subnets(&self, role: crate::record::Role) -> &[String] {
        let control_planes = if self.subnet_ids.is_empty() {
            self.subnet_id.as_slice()
        } else {
            &self.subnet_ids
        };
        match role {
            crate::record::Role::Worker if !self.worker_subnet_ids.is_empty() => {
                &self.worker_subnet_ids
            }
            _ => control_planes,
        }
    }

    /// The subnet of the node of `role` with `index`: control planes one per subnet in order,
    /// workers round-robin (`None`: the default subnet).
    pub fn subnet_for(&self, role: crate::record::Role, index: u32) -> Option<&str> {
        let subnets = self.subnets(role);
        (!subnets.is_empty()).then(|| subnets[index as usize % subnets.len()].as_str())
    }

    /// A subnet whose VPC holds the cluster (its security group is made there).
    pub fn vpc_subnet(&self) -> Option<&str> {
        self.subnets(crate::record::Role::ControlPlane)
            .first()
            .or_else(|| self.subnets(crate::record::Role::Worker).first())
            .map(String::as_str)
    }
}

/// A cluster name is a DNS label: lowercase letters, digits and hyphens, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok && crate::resources::is_cluster_id(name) {
        // `DELETE /clusters/<name>` must never reach another cluster by its id.
        Err(invalid(
            "name",
            "must not look like a cluster id (c- and 16 hex digits)",
        ))
    } else if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("must be a DNS label of at most {MAX_NAME_LEN} characters: lowercase letters, digits and '-', starting with a letter"),
        ))
    }
}

fn validate_region(region: &str, policy: &Policy) -> Result<(), ValidationError> {
    let parts: Vec<&str> = region.split('-').collect();
    let shaped = (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts
            .iter()
            .take(parts.len() - 1)
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if !shaped {
        return Err(invalid("region", "must be an AWS region such as eu-west-1"));
    }
    if !policy.allowed_regions.is_empty() && !policy.allowed_regions.iter().any(|r| r == region) {
        return Err(invalid(
            "region",
            format!("must be one of {}", policy.allowed_regions.join(", ")),
        ));
    }
    Ok(())
}

/// The architecture of an EC2 instance type: Graviton families carry a `g` right after their
/// generation digit (t4g, c7gn, m6gd), and `a1` is Graviton 1.
pub fn instance_arch(instance_type: &str) -> Result<Arch, String> {
    let shape = "must be an EC2 instance type such as t4g.medium";
    let (family, size) = instance_type.split_once('.').ok_or(shape)?;
    let letters_end = family.find(|c: char| c.is_ascii_digit()).ok_or(shape)?;
    let (prefix, rest) = family.split_at(letters_end);
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let suffix = &rest[digits_end..];
    let well_formed = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && suffix.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        && !size.is_empty()
        && size
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed {
        return Err(shape.into());
    }
    if matches!(size, "nano" | "micro") {
        return Err("MicroK8s needs at least 2 GiB of memory: use small or larger".into());
    }
    if family == "a1" || suffix.starts_with('g') {
        Ok(Arch::Arm64)
    } else {
        Ok(Arch::Amd64)
    }
}

fn validate_cidr(cidr: &str) -> Result<(), String> {
    let message = "must be an IPv4 CIDR such as 203.0.113.0/24";
    let (addr, len) = cidr.split_once('/').ok_or(message)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| message)?;
    let len: u32 = len.parse().map_err(|_| message)?;
    if len > 32 {
        return Err(message.into());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    if u32::from(addr) & !mask != 0 {
        return Err(format!(
            "has host bits set: did you mean {}/{len}?",
            Ipv4Addr::from(u32::from(addr) & mask)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> ClusterRequest {
        ClusterRequest {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn field_of(req: ClusterRequest) -> String {
        req.validate(&Policy::default()).unwrap_err().field
    }

    #[test]
    fn vpc_id_is_kept_when_well_formed() {
        for bad in [
            "vpc-123",
            "vpc-0123456789ABCDEF0",
            "subnet-01234567",
            "vpc-0123456789abcdef01",
        ] {
            let req = ClusterRequest {
                vpc_id: Some(bad.into()),
                ..request("a")
            };
            assert_eq!(field_of(req), "vpc_id", "{bad}");
        }
        let spec = ClusterRequest {
            vpc_id: Some("vpc-0123456789abcdef0".into()),
            ..request("a")
        }
        .validate(&Policy::default())
        .unwrap();
        assert_eq!(spec.vpc_id.as_deref(), Some("vpc-0123456789abcdef0"));
        assert!(spec.subnet_ids.is_empty(), "the API chooses them");
    }

    #[test]
    fn api_endpoint_and_extra_sans_are_checked_and_named() {
        let ok = ClusterRequest {
            api_endpoint: Some("nlb".into()),
            extra_sans: Some(vec!["API.Edge.example".into(), "203.0.113.7".into()]),
            ..request("edge")
        }
        .validate(&Policy::default())
        .unwrap();
        assert_eq!(ok.api_endpoint, ApiEndpoint::Nlb);
        assert_eq!(ok.extra_sans, vec!["api.edge.example", "203.0.113.7"]);
        let default = request("edge").validate(&Policy::default()).unwrap();
        assert_eq!(
            (default.api_endpoint, default.extra_sans.len()),
            (ApiEndpoint::Node, 0)
        );
        // One control plane with nlb is allowed (the name survives the node's replacement).
        assert_eq!(ok.control_planes, 1);
        let bad = |r: ClusterRequest| r.validate(&Policy::default()).unwrap_err();
        let e = bad(ClusterRequest {
            api_endpoint: Some("alb".into()),
            ..request("edge")
        });
        assert_eq!(e.field, "api_endpoint");
        for (sans, field) in [
            (vec!["ok.example", "bad_name.example"], "extra_sans[1]"),
            (vec!["-x.example"], "extra_sans[0]"),
            (vec!["a.example", "A.example"], "extra_sans[1]"),
            (vec!["1.2.3.999"], "extra_sans[0]"),
            (vec![""], "extra_sans[0]"),
        ] {
            let e = bad(ClusterRequest {
                extra_sans: Some(sans.iter().map(|s| s.to_string()).collect()),
                ..request("edge")
            });
            assert_eq!(e.field, field, "{sans:?}: {e}");
        }
        let many = (0..=MAX_EXTRA_SANS)
            .map(|i| format!("n{i}.example"))
            .collect();
        assert_eq!(
            bad(ClusterRequest {
                extra_sans: Some(many),
                ..request("edge")
            })
            .field,
            "extra_sans"
        );
        // Records written before the fields existed read as node, none.
        let mut old = serde_json::to_value(&default).unwrap();
        old.as_object_mut().unwrap().remove("api_endpoint");
        old.as_object_mut().unwrap().remove("extra_sans");
        let read: ClusterSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read, default);
    }

    #[test]
    fn subnets_spread_control_planes_in_order_and_workers_round_robin() {
        use crate::record::Role;
        let ids = |xs: &[&str]| Some(xs.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let (a, b, c, w) = (
            "subnet-0000000a",
            "subnet-0000000b",
            "subnet-0000000c",
            "subnet-000000ff",
        );
        let mut req = request("edge");
        req.subnet_ids = ids(&[a, b, c]);
        let spec = req.clone().validate(&Policy::default()).unwrap();
        assert_eq!(spec.subnet_id.as_deref(), Some(a), "the first, as before");
        let cps: Vec<_> = (0..3)
            .map(|i| spec.subnet_for(Role::ControlPlane, i).unwrap())
            .collect();
        assert_eq!(cps, [a, b, c], "one control plane per subnet");
        let workers: Vec<_> = (0..4)
            .map(|i| spec.subnet_for(Role::Worker, i).unwrap())
            .collect();
        assert_eq!(workers, [a, b, c, a]);
        req.worker_subnet_ids = ids(&[w]);
        let edge = req.clone().validate(&Policy::default()).unwrap();
        assert_eq!(
            edge.subnet_for(Role::Worker, 5),
            Some(w),
            "workers at the edge"
        );
        assert_eq!(edge.subnet_for(Role::ControlPlane, 1), Some(b));
        assert_eq!(edge.vpc_subnet(), Some(a));
        // One subnet as before: every node there; none: the default subnet.
        let mut one = request("edge");
        one.subnet_id = Some(a.into());
        let one = one.validate(&Policy::default()).unwrap();
        assert_eq!(
            (one.subnet_ids.clone(), one.subnet_for(Role::Worker, 3)),
            (vec![a.to_string()], Some(a))
        );
        let none = request("edge").validate(&Policy::default()).unwrap();
        assert_eq!(none.subnet_for(Role::ControlPlane, 0), None);
        // A record written before subnet_ids: its subnet_id still places every node.
        let mut old = none.clone();
        old.subnet_id = Some(c.into());
        assert_eq!(old.subnet_for(Role::Worker, 1), Some(c));
        // Bad lists name the entry.
        let mut both = req.clone();
        both.subnet_id = Some(a.into());
        assert_eq!(field_of(both), "subnet_ids");
        let mut twice = request("edge");
        twice.subnet_ids = ids(&[a, b, a]);
        assert_eq!(field_of(twice), "subnet_ids[2]");
        let mut bad = request("edge");
        bad.worker_subnet_ids = ids(&[a, "sub-1"]);
        assert_eq!(field_of(bad), "worker_subnet_ids[1]");
        let mut empty = request("edge");
        empty.subnet_ids = ids(&[]);
        assert_eq!(field_of(empty), "subnet_ids");
    }

    #[test]
    fn pod_security_defaults_to_baseline_is_checked_and_named() {
        let default = request("edge").validate(&Policy::default()).unwrap();
        assert_eq!(default.pod_security, PodSecurity::Baseline);
        for (value, want) in [
            ("privileged", PodSecurity::Privileged),
            ("baseline", PodSecurity::Baseline),
            ("restricted", PodSecurity::Restricted),
        ] {
            let spec = ClusterRequest {
                pod_security: Some(value.into()),
                ..request("edge")
            }
            .validate(&Policy::default())
            .unwrap();
            assert_eq!(spec.pod_security, want);
            assert_eq!(want.as_str(), value);
            // The record shows the level by the name a request gives it.
            assert_eq!(serde_json::to_value(&spec).unwrap()["pod_security"], value);
        }
        for bad in ["", "Baseline", "none", "restricted ", "privileged,baseline"] {
            let req = ClusterRequest {
                pod_security: Some(bad.into()),
                ..request("edge")
            };
            assert_eq!(field_of(req), "pod_security", "{bad:?}");
        }
        // A request without it serializes without it (idempotency hashes stay what they were).
        let plain = serde_json::to_value(request("edge")).unwrap();
        assert!(plain.get("pod_security").is_none(), "{plain}");
        // A record written before the field existed: its API servers enforce nothing.
        let mut old = serde_json::to_value(&default).unwrap();
        old.as_object_mut().unwrap().remove("pod_security");
        let read: ClusterSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read.pod_security, PodSecurity::Privileged);
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec = request("edge-1").validate(&Policy::default()).unwrap();
        assert_eq!(spec.region, "us-east-1");
        assert_eq!(spec.control_planes, 1);
        assert_eq!(spec.workers, 0);
        assert_eq!(spec.instance_type, "t4g.medium");
        assert_eq!(spec.arch, Arch::Arm64);
        assert_eq!(spec.microk8s_channel, microk8s::DEFAULT_CHANNEL);
        assert_eq!(spec.addons, vec!["dns"]);
        assert!(spec.api_allowed_cidrs.is_empty());
        assert!(!spec.retain_on_failure);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(ClusterRequest::default()), "name");
        assert_eq!(field_of(request("Edge")), "name");
        assert_eq!(field_of(request("edge-")), "name");
        assert_eq!(field_of(request(&"a".repeat(41))), "name");
        assert_eq!(
            field_of(ClusterRequest {
                region: Some("mars".into()),
                ..request("a")
            }),
            "region"
        );
        assert_eq!(
            field_of(ClusterRequest {
                control_planes: Some(2),
                ..request("a")
            }),
            "control_planes"
        );
        assert_eq!(
            field_of(ClusterRequest {
                workers: Some(51),
                ..request("a")
            }),
            "workers"
        );
        assert_eq!(
            field_of(ClusterRequest {
                instance_type: Some("huge".into()),
                ..request("a")
            }),
            "instance_type"
        );
        assert_eq!(
            field_of(ClusterRequest {
                instance_type: Some("t4g.nano".into()),
                ..request("a")
            }),
            "instance_type"
        );
        assert_eq!(
            field_of(ClusterRequest {
                ubuntu_release: Some("18.04".into()),
                ..request("a")
            }),
            "ubuntu_release"
        );
        assert_eq!(
            field_of(ClusterRequest {
                microk8s_channel: Some("latest".into()),
                ..request("a")
            }),
            "microk8s_channel"
        );
        assert_eq!(
            field_of(ClusterRequest {
                addons: Some(vec!["dns".into(), "gpu".into()]),
                ..request("a")
            }),
            "addons[1]"
        );
        assert_eq!(
            field_of(ClusterRequest {
                subnet_id: Some("sub-1".into()),
                ..request("a")
            }),
            "subnet_id"
        );
        assert_eq!(
            field_of(ClusterRequest {
                api_allowed_cidrs: Some(vec!["10.0.0.0/8".into(), "10.0.0.1/8".into()]),
                ..request("a")
            }),
            "api_allowed_cidrs[1]"
        );
        assert_eq!(
            field_of(ClusterRequest {
                root_volume_gib: Some(4),
                ..request("a")
            }),
            "root_volume_gib"
        );
        for bad in [
            "ami-12345",
            "ami-0123456789ABCDEF0",
            "img-01234567",
            "ami-0123456789abcdef01",
        ] {
            assert_eq!(
                field_of(ClusterRequest {
                    ami_id: Some(bad.into()),
                    ..request("a")
                }),
                "ami_id",
                "{bad}"
            );
        }
        let chosen = ClusterRequest {
            ami_id: Some("ami-0123456789abcdef0".into()),
            ..request("a")
        }
        .validate(&Policy::default())
        .unwrap();
        assert_eq!(chosen.ami_id.as_deref(), Some("ami-0123456789abcdef0"));
        assert_eq!(
            request("a").validate(&Policy::default()).unwrap().ami_id,
            None
        );
        let tags = BTreeMap::from([("aws:x".to_string(), "y".to_string())]);
        assert_eq!(
            field_of(ClusterRequest {
                tags: Some(tags),
                ..request("a")
            }),
            "tags.aws:x"
        );
    }

    #[test]
    fn allowed_regions_are_enforced() {
        let policy = Policy {
            allowed_regions: vec!["eu-west-1".into()],
            ..Policy::default()
        };
        let err = ClusterRequest {
            region: Some("us-west-2".into()),
            ..request("a")
        }
        .validate(&policy)
        .unwrap_err();
        assert_eq!(err.field, "region");
        assert!(ClusterRequest {
            region: Some("eu-west-1".into()),
            ..request("a")
        }
        .validate(&policy)
        .is_ok());
    }

    #[test]
    fn cost_guardrails_name_the_field_and_the_limit() {
        let policy = Policy::default();
        let err = |req: ClusterRequest| req.validate(&policy).unwrap_err();
        let e = err(ClusterRequest {
            instance_type: Some("m7i.48xlarge".into()),
            ..request("a")
        });
        assert_eq!(e.field, "instance_type");
        assert!(e.message.contains("t3.medium") && e.message.contains("c7g.large"));
        let e = err(ClusterRequest {
            root_volume_gib: Some(101),
            ..request("a")
        });
        assert_eq!(e.field, "root_volume_gib");
        assert!(e.message.contains("100"), "{}", e.message);
        let e = err(ClusterRequest {
            control_planes: Some(3),
            workers: Some(8),
            ..request("a")
        });
        assert_eq!(e.field, "workers");
        assert!(e.message.contains("limit of 10 nodes"), "{}", e.message);
        for ok in [
            ClusterRequest {
                control_planes: Some(3),
                workers: Some(7),
                root_volume_gib: Some(100),
                instance_type: Some("c6i.large".into()),
                ..request("a")
            },
            request("b"),
        ] {
            assert!(ok.validate(&policy).is_ok());
        }
        // A policy may allow any type (empty list), larger volumes and more nodes.
        let open = Policy {
            allowed_instance_types: Vec::new(),
            max_root_volume_gib: 500,
            max_nodes: 53,
            ..Policy::default()
        };
        assert!(ClusterRequest {
            instance_type: Some("m7i.48xlarge".into()),
            root_volume_gib: Some(500),
            control_planes: Some(3),
            workers: Some(50),
            ..request("a")
        }
        .validate(&open)
        .is_ok());
        assert!(DEFAULT_ALLOWED_INSTANCE_TYPES.contains(&DEFAULT_INSTANCE_TYPE));
    }

    #[test]
    fn the_whole_internet_needs_an_explicit_flag() {
        let open = |flag| ClusterRequest {
            api_allowed_cidrs: Some(vec!["203.0.113.0/24".into(), "0.0.0.0/0".into()]),
            allow_api_from_anywhere: flag,
            ..request("a")
        };
        for flag in [None, Some(false)] {
            let e = open(flag).validate(&Policy::default()).unwrap_err();
            assert_eq!(e.field, "api_allowed_cidrs[1]");
            assert!(e.message.contains("allow_api_from_anywhere"));
        }
        let spec = open(Some(true)).validate(&Policy::default()).unwrap();
        assert_eq!(spec.api_allowed_cidrs[1], "0.0.0.0/0");
    }

    #[test]
    fn a_name_shaped_like_a_cluster_id_is_refused() {
        let e = request("c-0123456789abcdef")
            .validate(&Policy::default())
            .unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.message.contains("cluster id"));
        assert!(request("c-0123456789abcdeg")
            .validate(&Policy::default())
            .is_ok());
    }

    #[test]
    fn architecture_follows_the_instance_family() {
        for t in [
            "t4g.medium",
            "c7gn.large",
            "m6gd.xlarge",
            "a1.large",
            "g5g.xlarge",
        ] {
            assert_eq!(instance_arch(t), Ok(Arch::Arm64), "{t}");
        }
        for t in [
            "t3.medium",
            "m7i.large",
            "m7a.large",
            "g5.xlarge",
            "c5n.large",
            "inf2.xlarge",
        ] {
            assert_eq!(instance_arch(t), Ok(Arch::Amd64), "{t}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            serde_json::from_str::<ClusterRequest>(r#"{"name":"a","wrokers":2}"#).unwrap_err();
        assert!(err.to_string().contains("wrokers"));
    }

    #[test]
    fn exposed_ports_are_checked_and_made_canonical() {
        let policy = Policy::default();
        let with = |ports: serde_json::Value| -> Result<ClusterSpec, ValidationError> {
            let req: ClusterRequest = serde_json::from_value(serde_json::json!({
                "name": "edge",
                "exposed_ports": ports,
            }))
            .expect("decodes");
            req.validate(&policy)
        };
        let spec = with(serde_json::json!([
            {"port": 443, "cidrs": ["198.51.100.0/24"]},
            {"port": "30000-32767", "protocol": "tcp", "cidrs": ["10.0.0.0/8"]},
            {"port": "8443", "protocol": "udp", "cidrs": ["0.0.0.0/0"], "allow_anywhere": true},
        ]))
        .unwrap();
        assert_eq!(spec.exposed_ports[0].port, PortValue::Number(443));
        assert_eq!(spec.exposed_ports[0].protocol, "tcp");
        assert_eq!(
            spec.exposed_ports[1].port,
            PortValue::Text("30000-32767".into())
        );
        assert_eq!(spec.exposed_ports[2].port, PortValue::Number(8443));

        for (ports, field, says) in [
            (
                serde_json::json!([{"port": 22, "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "22",
            ),
            (
                serde_json::json!([{"port": "20-30", "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "22",
            ),
            (
                serde_json::json!([{"port": 25000, "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "MicroK8s",
            ),
            (
                serde_json::json!([{"port": 16443, "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "api_allowed_cidrs",
            ),
            (
                serde_json::json!([{"port": 4789, "protocol": "udp", "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "MicroK8s",
            ),
            (
                serde_json::json!([{"port": 0, "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "1-65535",
            ),
            (
                serde_json::json!([{"port": 70000, "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "1-65535",
            ),
            (
                serde_json::json!([{"port": "90-80", "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].port",
                "backwards",
            ),
            (
                serde_json::json!([{"port": 80, "protocol": "icmp", "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[0].protocol",
                "tcp or udp",
            ),
            (
                serde_json::json!([{"port": 80, "cidrs": []}]),
                "exposed_ports[0].cidrs",
                "at least one",
            ),
            (
                serde_json::json!([{"port": 80, "cidrs": ["10.0.0.0/8", "0.0.0.0/0"]}]),
                "exposed_ports[0].cidrs[1]",
                "allow_anywhere",
            ),
            (
                serde_json::json!([{"port": 80, "cidrs": ["10.0.0.300/8"]}]),
                "exposed_ports[0].cidrs[0]",
                "",
            ),
            (
                serde_json::json!([{"port": 80, "cidrs": ["10.0.0.0/8"]}, {"port": "79-81", "cidrs": ["10.0.0.0/8"]}]),
                "exposed_ports[1].port",
                "overlaps exposed_ports[0]",
            ),
        ] {
            let e = with(ports.clone()).unwrap_err();
            assert_eq!(e.field, field, "{ports}: {e:?}");
            assert!(e.message.contains(says), "{ports}: {e:?}");
        }
        let many: Vec<_> = (0..21)
            .map(|i| serde_json::json!({"port": 1000 + i, "cidrs": ["10.0.0.0/8"]}))
            .collect();
        assert_eq!(
            with(serde_json::json!(many)).unwrap_err().field,
            "exposed_ports"
        );
    }
}
