//! Fault rules injected through `POST /_sim/faults` and how they match instances by their tags.
//!
//! Command faults act in the simulator (`command_fails`, `command_hangs`,
//! `terminate_during_command`); EC2 faults in the gateway's EC2 answer (`insufficient_capacity`,
//! `terminate_fails`); the others in the stand-ins, which see the rules matching the instance a command
//! runs on in `MECPLANE_SIM_FAULTS` and the rules matching any node in `<net>/<ip>/faults`
//! ([`Faults::node_lines`]): `expire_tokens`, `drain_times_out` (matched on the node being drained),
//! `refresh_fails` and `node_dies` (both on the node running `snap refresh`). `agent_offline` and a
//! node that died are answered by the agent registry.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The kinds of fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The instance's SSM agent never comes online.
    AgentOffline,
    /// Commands exit non-zero with a message on stderr.
    CommandFails,
    /// Commands run until their execution timeout.
    CommandHangs,
    /// The instance is terminated (in moto) while a command runs.
    TerminateDuringCommand,
    /// Join tokens issued on (or presented by) the instance are already expired.
    ExpireTokens,
    /// `RunInstances` for the cluster fails with `InsufficientInstanceCapacity`.
    InsufficientCapacity,
    /// `TerminateInstances` of the instance is refused with `UnauthorizedOperation` (a cleanup
    /// that cannot finish).
    TerminateFails,
    /// `microk8s kubectl drain` of the instance's node never finishes evicting its pods: it fails
    /// after `--timeout` as kubectl does ("global timeout reached"), or runs until the command is
    /// stopped when no timeout is given. Matched on the node being drained, wherever drain runs.
    DrainTimesOut,
    /// `snap refresh microk8s --channel=...` on the instance fails as snapd reports a failed
    /// post-refresh hook; snapd's revert leaves the node on its channel.
    RefreshFails,
    /// The instance dies during its next `snap refresh microk8s --channel=...` (mid-update): the
    /// refresh never finishes, the node stops answering its cluster (NotReady, unreachable for
    /// dqlite) and its SSM agent goes `ConnectionLost`, so what ran on it ends `DeliveryTimedOut`.
    /// EC2 still reports the instance running (a hung instance, not a terminated one).
    NodeDies,
}

impl FaultKind {
    /// The snake_case name used on the wire and in `MECPLANE_SIM_FAULTS`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AgentOffline => "agent_offline",
            FaultKind::CommandFails => "command_fails",
            FaultKind::CommandHangs => "command_hangs",
            FaultKind::TerminateDuringCommand => "terminate_during_command",
            FaultKind::ExpireTokens => "expire_tokens",
            FaultKind::InsufficientCapacity => "insufficient_capacity",
            FaultKind::TerminateFails => "terminate_fails",
            FaultKind::DrainTimesOut => "drain_times_out",
            FaultKind::RefreshFails => "refresh_fails",
            FaultKind::NodeDies => "node_dies",
        }
    }
}

/// A fault rule as posted to `/_sim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: String,
    /// The `mecplane:cluster-name` tag value the rule applies to; [`ANY_CLUSTER`] for every cluster.
    pub cluster_name: String,
    /// The `mecplane:role` tag value, or every role.
    #[serde(default)]
    pub role: Option<String>,
    /// The `mecplane:index` tag value, or every index.
    #[serde(default)]
    pub index: Option<u32>,
    /// What to inject.
    pub fault: FaultKind,
    /// For command faults: only commands of this node script (`# mecplane-script: <name>`).
    #[serde(default)]
    pub script: Option<String>,
}

/// What a rule is matched against: an instance's tags (and, for command faults, the script).
#[derive(Debug, Clone, Default)]
pub struct Target<'a> {
    /// The cluster name tag.
    pub cluster_name: Option<&'a str>,
    /// The role tag.
    pub role: Option<&'a str>,
    /// The index tag.
    pub index: Option<u32>,
}

/// The `cluster_name` of a rule that applies to every cluster.
pub const ANY_CLUSTER: &str = "*";

impl FaultRule {
    /// Whether the rule applies to the cluster of this name.
    pub fn matches_cluster(&self, cluster_name: Option<&str>) -> bool {
        cluster_name.is_some_and(|c| self.cluster_name == ANY_CLUSTER || self.cluster_name == c)
    }

    /// Whether this rule applies to `target` (ignoring `script`).
    pub fn matches(&self, target: &Target<'_>) -> bool {
        if !self.matches_cluster(target.cluster_name) {
            return false;
        }
        if let Some(role) = &self.role {
            if target.role != Some(role.as_str()) {
                return false;
            }
        }
        if let Some(index) = self.index {
            if target.index != Some(index) {
                return false;
            }
        }
        true
    }

    /// Whether this command rule applies to a command running `script` (None when it has no header).
    pub fn matches_script(&self, script: Option<&str>) -> bool {
        match &self.script {
            None => true,
            Some(wanted) => script == Some(wanted.as_str()),
        }
    }
}

/// The set of active rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    /// Adds a rule and returns its id.
    pub fn add(&self, mut rule: FaultRule) -> String {
        rule.id = format!("fault-{}", uuid::Uuid::new_v4().simple());
        let id = rule.id.clone();
        self.rules.lock().expect("faults lock").push(rule);
        id
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().expect("faults lock").clear();
    }

    /// Every rule.
    pub fn all(&self) -> Vec<FaultRule> {
        self.rules.lock().expect("faults lock").clone()
    }

    /// Whether a rule of `kind` matches `target` (and `script`, for command faults).
    pub fn has(&self, kind: FaultKind, target: &Target<'_>, script: Option<&str>) -> bool {
        self.rules
            .lock()
            .expect("faults lock")
            .iter()
            .any(|r| r.fault == kind && r.matches(target) && r.matches_script(script))
    }

    /// The names of the faults of the given kinds matching `target` (for `MECPLANE_SIM_FAULTS`).
    pub fn names_for(&self, target: &Target<'_>, script: Option<&str>) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self
            .rules
            .lock()
            .expect("faults lock")
            .iter()
            .filter(|r| r.matches(target) && r.matches_script(script))
            .map(|r| r.fault.name())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Faults {
    /// The rules matching `target` as the stand-ins read them from `<net>/<ip>/faults`, one
    /// `<fault> <script>` line per rule (`*` when the rule names no script), sorted.
    pub fn node_lines(&self, target: &Target<'_>) -> Vec<String> {
        let mut out: Vec<String> = self
            .rules
            .lock()
            .expect("faults lock")
            .iter()
            .filter(|r| r.matches(target))
            .map(|r| format!("{} {}", r.fault.name(), r.script.as_deref().unwrap_or("*")))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The `RunInstances` form parameters the `insufficient_capacity` fault looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunInstancesTags {
    /// `mecplane:cluster-name` from an instance tag specification.
    pub cluster_name: Option<String>,
    /// `mecplane:role` from an instance tag specification.
    pub role: Option<String>,
}

/// Parses the tags of a `RunInstances` query-protocol form body
/// (`TagSpecification.N.Tag.M.Key` / `.Value`).
pub fn parse_run_instances(form_body: &[u8]) -> Option<RunInstancesTags> {
    let pairs = form_of_action(form_body, "RunInstances")?;
    let mut tags = RunInstancesTags::default();
    for (k, v) in &pairs {
        if let Some(prefix) = k.strip_suffix(".Key") {
            if !prefix.starts_with("TagSpecification.") {
                continue;
            }
            let value_key = format!("{prefix}.Value");
            let value = pairs
                .iter()
                .find(|(k2, _)| *k2 == value_key)
                .map(|(_, v2)| v2.clone());
            match v.as_str() {
                "mecplane:cluster-name" => tags.cluster_name = value,
                "mecplane:role" => tags.role = value,
                _ => {}
            }
        }
    }
    Some(tags)
}

/// The instance ids of a `TerminateInstances` query-protocol form body (`InstanceId.N`).
pub fn parse_terminate_instances(form_body: &[u8]) -> Option<Vec<String>> {
    parse_instance_ids(form_body, "TerminateInstances")
}

/// The `InstanceId.N` values of an EC2 request whose `Action` is `action` (`StopInstances`,
/// `TerminateInstances`, …), if it is one.
pub fn parse_instance_ids(form_body: &[u8], action: &str) -> Option<Vec<String>> {
    Some(
        form_of_action(form_body, action)?
            .into_iter()
            .filter(|(k, _)| k.starts_with("InstanceId."))
            .map(|(_, v)| v)
            .collect(),
    )
}

/// The decoded `key=value` pairs of a query-protocol form body, if its `Action` is `action`.
fn form_of_action(form_body: &[u8], action: &str) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(form_body).ok()?;
    let pairs: Vec<(String, String)> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect();
    pairs
        .iter()
        .any(|(k, v)| k == "Action" && v == action)
        .then_some(pairs)
}

/// Decodes `application/x-www-form-urlencoded` text.
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terminate_instances_ids() {
        let body =
            b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0a&InstanceId.2=i-0b";
        assert_eq!(
            parse_terminate_instances(body),
            Some(vec!["i-0a".to_string(), "i-0b".to_string()])
        );
        assert!(parse_terminate_instances(b"Action=DescribeInstances&InstanceId.1=i-0a").is_none());
    }

    #[test]
    fn parses_run_instances_tags() {
        let body = b"Action=RunInstances&Version=2016-11-15&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=mecplane%3Acluster-name&TagSpecification.1.Tag.1.Value=demo&TagSpecification.1.Tag.2.Key=mecplane%3Arole&TagSpecification.1.Tag.2.Value=worker";
        let tags = parse_run_instances(body).unwrap();
        assert_eq!(tags.cluster_name.as_deref(), Some("demo"));
        assert_eq!(tags.role.as_deref(), Some("worker"));
        assert!(parse_run_instances(b"Action=DescribeInstances").is_none());
        assert!(parse_run_instances(b"Version=2016-11-15&Action=RunInstances").is_some());
        assert!(parse_run_instances(b"X=Action%3DRunInstances").is_none());
    }

    #[test]
    fn day2_fault_names_round_trip() {
        for (kind, name) in [
            (FaultKind::DrainTimesOut, "drain_times_out"),
            (FaultKind::RefreshFails, "refresh_fails"),
            (FaultKind::NodeDies, "node_dies"),
        ] {
            assert_eq!(kind.name(), name);
            let parsed: FaultKind = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(parsed, kind);
        }
    }

    #[test]
    fn node_lines_list_matching_rules_with_their_script() {
        let faults = Faults::default();
        let rule = |fault, role: Option<&str>, script: Option<&str>| FaultRule {
            id: String::new(),
            cluster_name: "demo".into(),
            role: role.map(str::to_string),
            index: None,
            fault,
            script: script.map(str::to_string),
        };
        faults.add(rule(FaultKind::DrainTimesOut, Some("worker"), None));
        faults.add(rule(FaultKind::RefreshFails, None, Some("upgrade")));
        faults.add(rule(FaultKind::NodeDies, Some("control-plane"), None));
        let worker = Target {
            cluster_name: Some("demo"),
            role: Some("worker"),
            index: Some(0),
        };
        assert_eq!(
            faults.node_lines(&worker),
            vec![
                "drain_times_out *".to_string(),
                "refresh_fails upgrade".to_string()
            ]
        );
        assert!(faults
            .node_lines(&Target {
                cluster_name: Some("other"),
                ..worker
            })
            .is_empty());
    }

    #[test]
    fn rule_matching() {
        let rule = FaultRule {
            id: String::new(),
            cluster_name: "demo".into(),
            role: Some("worker".into()),
            index: Some(1),
            fault: FaultKind::CommandFails,
            script: Some("join".into()),
        };
        let t = Target {
            cluster_name: Some("demo"),
            role: Some("worker"),
            index: Some(1),
        };
        assert!(rule.matches(&t));
        assert!(rule.matches_script(Some("join")));
        assert!(!rule.matches_script(Some("bootstrap")));
        assert!(!rule.matches(&Target {
            index: Some(0),
            ..t.clone()
        }));
        assert!(!rule.matches(&Target {
            cluster_name: Some("other"),
            ..t.clone()
        }));
        let any = FaultRule {
            cluster_name: ANY_CLUSTER.into(),
            ..rule
        };
        assert!(any.matches(&Target {
            cluster_name: Some("other"),
            ..t.clone()
        }));
        assert!(!any.matches(&Target {
            cluster_name: None,
            ..t
        }));
    }
}
