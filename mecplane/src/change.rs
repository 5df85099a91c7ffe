//! What one change to a live cluster is, in one place: the API decides a [`Change`] from a PATCH
//! (or a node replacement),
//! records it as an update's `kind` and `params`, and the update state machine reads it back from
//! them ([`Change::of`]) and, once it is done, applies it to the spec ([`Change::apply`]).

use serde_json::json;

use crate::record::{Role, Update, UpdateKind, UpdateStatus};
use crate::spec::{ClusterSpec, ExposedPort, ValidationError};

/// A change a PATCH (or a node replacement) asks of a live cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `workers` from `from` to `to`.
    Scale { from: u32, to: u32 },
    /// `microk8s_channel` one minor up, node by node: control planes one at a time, workers up to
    /// `max_unavailable` at a time.
    Upgrade {
        from: String,
        to: String,
        max_unavailable: u32,
    },
    /// `addons` from one list to another.
    Addons { from: Vec<String>, to: Vec<String> },
    /// One node replaced by a new instance with the same role and index (the spec is unchanged).
    ReplaceNode {
        instance_id: String,
        role: Role,
        index: u32,
    },
    /// `exposed_ports` from one list to another (each canonical, as the spec validates it).
    ExposedPorts {
        from: Vec<ExposedPort>,
        to: Vec<ExposedPort>,
    },
}

impl Change {
    pub fn kind(&self) -> UpdateKind {
        match self {
            Change::Scale { .. } => UpdateKind::Scale,
            Change::Upgrade { .. } => UpdateKind::Upgrade,
            Change::Addons { .. } => UpdateKind::Addons,
            Change::ReplaceNode { .. } => UpdateKind::ReplaceNode,
            Change::ExposedPorts { .. } => UpdateKind::ExposedPorts,
        }
    }

    /// The update's `params`: `{"<field>": {"from": …, "to": …}}`.
    pub fn params(&self) -> serde_json::Value {
        match self {
            Change::Scale { from, to } => json!({"workers": {"from": from, "to": to}}),
            Change::Upgrade {
                from,
                to,
                max_unavailable,
            } => json!({
                "microk8s_channel": {"from": from, "to": to},
                "max_unavailable": max_unavailable,
            }),
            Change::Addons { from, to } => json!({"addons": {"from": from, "to": to}}),
            Change::ReplaceNode {
                instance_id,
                role,
                index,
            } => json!({"node": {"instance_id": instance_id, "role": role, "index": index}}),
            Change::ExposedPorts { from, to } => {
                json!({"exposed_ports": {"from": from, "to": to}})
            }
        }
    }

    /// The update that records this change, `InProgress` from now.
    pub fn in_progress(
        &self,
        id: String,
        execution_arn: Option<String>,
        created_by: Option<String>,
    ) -> Update {
        Update {
            id,
            kind: self.kind(),
            params: self.params(),
            status: UpdateStatus::InProgress,
            execution_arn,
            created_by,
            started_at: crate::clock::now_rfc3339(),
            finished_at: None,
            failure: None,
        }
    }

    /// The change an update records (the inverse of [`Change::kind`] and [`Change::params`]).
    pub fn of(update: &Update) -> Result<Change, ValidationError> {
        let field = match update.kind {
            UpdateKind::Scale => "workers",
            UpdateKind::Upgrade => "microk8s_channel",
            UpdateKind::Addons => "addons",
            UpdateKind::ReplaceNode => "node",
            UpdateKind::ExposedPorts => "exposed_ports",
        };
        let side = |key: &str| -> Result<serde_json::Value, ValidationError> {
            update.params[field]
                .get(key)
                .cloned()
                .ok_or_else(|| ValidationError {
                    field: format!("params.{field}.{key}"),
                    message: "is missing".into(),
                })
        };
        let bad = |key: &str, e: serde_json::Error| ValidationError {
            field: format!("params.{field}.{key}"),
            message: e.to_string(),
        };
        fn read<T: serde::de::DeserializeOwned>(
            v: serde_json::Value,
            key: &str,
            bad: impl Fn(&str, serde_json::Error) -> ValidationError,
        ) -> Result<T, ValidationError> {
            serde_json::from_value(v).map_err(|e| bad(key, e))
        }
        Ok(match update.kind {
            UpdateKind::ReplaceNode => Change::ReplaceNode {
                instance_id: read(side("instance_id")?, "instance_id", bad)?,
                role: read(side("role")?, "role", bad)?,
                index: read(side("index")?, "index", bad)?,
            },
            UpdateKind::Scale => Change::Scale {
                from: read(side("from")?, "from", bad)?,
                to: read(side("to")?, "to", bad)?,
            },
            UpdateKind::Upgrade => Change::Upgrade {
                from: read(side("from")?, "from", bad)?,
                to: read(side("to")?, "to", bad)?,
                // Updates recorded before the setting existed went one node at a time.
                max_unavailable: match update.params.get("max_unavailable") {
                    Some(v) => serde_json::from_value(v.clone()).map_err(|e| ValidationError {
                        field: "params.max_unavailable".into(),
                        message: e.to_string(),
                    })?,
                    None => 1,
                },
            },
            UpdateKind::Addons => Change::Addons {
                from: read(side("from")?, "from", bad)?,
                to: read(side("to")?, "to", bad)?,
            },
            UpdateKind::ExposedPorts => Change::ExposedPorts {
                from: read(side("from")?, "from", bad)?,
                to: read(side("to")?, "to", bad)?,
            },
        })
    }

    /// The spec once the change is done.
    pub fn apply(&self, spec: &mut ClusterSpec) {
        match self {
            Change::Scale { to, .. } => spec.workers = *to,
            Change::Upgrade { to, .. } => spec.microk8s_channel = to.clone(),
            Change::Addons { to, .. } => spec.addons = to.clone(),
            Change::ExposedPorts { to, .. } => spec.exposed_ports = to.clone(),
            Change::ReplaceNode { .. } => {}
        }
    }

    /// For events: `scale from 2 to 4 worker(s)`.
    pub fn describe(&self) -> String {
        let list = |l: &[String]| {
            if l.is_empty() {
                "none".to_string()
            } else {
                l.join(", ")
            }
        };
        match self {
            Change::Scale { from, to } => format!("scale from {from} to {to} worker(s)"),
            Change::Upgrade {
                from,
                to,
                max_unavailable,
            } => format!(
                "upgrade MicroK8s from {from} to {to} ({max_unavailable} worker(s) at a time)"
            ),
            Change::Addons { from, to } => {
                format!("add-ons from [{}] to [{}]", list(from), list(to))
            }
            Change::ReplaceNode {
                instance_id,
                role,
                index,
            } => format!("replace {} {index} ({instance_id})", role.as_str()),
            Change::ExposedPorts { from, to } => {
                let ports =
                    |l: &[ExposedPort]| l.iter().map(ExposedPort::describe).collect::<Vec<_>>();
                format!(
                    "exposed ports from [{}] to [{}]",
                    list(&ports(from)),
                    list(&ports(to))
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(change: &Change) -> Update {
        change.in_progress("u-0000000000000001".into(), None, None)
    }

    #[test]
    fn every_change_reads_back_from_its_update() {
        for change in [
            Change::Scale { from: 2, to: 4 },
            Change::Upgrade {
                from: "1.32/stable".into(),
                to: "1.33/stable".into(),
                max_unavailable: 2,
            },
            Change::Addons {
                from: vec!["dns".into()],
                to: vec!["dns".into(), "metallb:10.0.0.1-10.0.0.9".into()],
            },
            Change::ReplaceNode {
                instance_id: "i-0123456789abcdef0".into(),
                role: Role::ControlPlane,
                index: 0,
            },
            Change::ExposedPorts {
                from: vec![],
                to: vec![ExposedPort {
                    port: crate::spec::PortValue::Text("30000-32767".into()),
                    protocol: "udp".into(),
                    cidrs: vec!["0.0.0.0/0".into()],
                    allow_anywhere: true,
                }],
            },
        ] {
            assert_eq!(Change::of(&update(&change)).unwrap(), change);
        }
        let mut broken = update(&Change::Scale { from: 1, to: 2 });
        broken.params = json!({"workers": {"from": 1}});
        assert_eq!(Change::of(&broken).unwrap_err().field, "params.workers.to");
        broken.params = json!({"workers": {"from": "one", "to": 2}});
        assert_eq!(
            Change::of(&broken).unwrap_err().field,
            "params.workers.from"
        );
    }
}
