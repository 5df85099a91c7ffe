//! The `/_sim/*` control and inspection API: fault rules and the simulated instances with the
//! state the stand-ins keep in their sandboxes (see `stand_in_state`).

use crate::faults::FaultRule;
use crate::Core;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// The router serving `/_sim/faults` and `/_sim/instances`.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/instances", get(instances))
        .with_state(core)
}

async fn list_faults(State(core): State<Arc<Core>>) -> Json<Value> {
    Json(json!({ "faults": core.faults.all() }))
}

async fn add_fault(State(core): State<Arc<Core>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            let id = core.faults.add(rule);
            core.agents.write_fault_files(&core.faults);
            Json(json!({ "id": id })).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("invalid fault rule: {e}") })),
        )
            .into_response(),
    }
}

async fn clear_faults(State(core): State<Arc<Core>>) -> Json<Value> {
    core.faults.clear();
    core.agents.write_fault_files(&core.faults);
    Json(json!({}))
}

async fn instances(State(core): State<Arc<Core>>) -> Response {
    if let Err(e) = core.refresh_instances().await {
        return (StatusCode::BAD_GATEWAY, Json(json!({ "error": e }))).into_response();
    }
    let now = SystemTime::now();
    let list: Vec<Value> = core
        .agents
        .all()
        .into_iter()
        .map(|i| {
            let online = i.agent_online(now, core.cfg.agent_delay, &core.faults);
            json!({
                "instance_id": i.instance_id,
                "private_ip": i.private_ip,
                "hostname": i.hostname,
                "cluster_name": i.cluster_name,
                "cluster_id": i.cluster_id,
                "role": i.role,
                "index": i.index,
                "ec2_state": i.state,
                "agent_online": online,
                "dead": i.dead,
                "state": stand_in_state(&core.agents.sandbox_dir(&i.instance_id).join("var")),
            })
        })
        .collect();
    Json(json!({ "instances": list })).into_response()
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The Pod Security policy the node's API server loaded (`sim/pod-security`: `enforce|audit|warn
/// <level>` and `exempt <namespace>` lines) as `{"enforce", "audit", "warn", "exempt_namespaces"}`;
/// `null` on a node without an API server (a worker) or before MicroK8s is installed.
fn pod_security(path: &Path) -> Value {
    if !path.exists() {
        return Value::Null;
    }
    let lines = read_lines(path);
    let level = |mode: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(mode)?.strip_prefix(' ').map(str::to_string))
    };
    let exempt: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("exempt "))
        .collect();
    json!({
        "enforce": level("enforce"), "audit": level("audit"), "warn": level("warn"),
        "exempt_namespaces": exempt,
    })
}

/// The value of a kube-apiserver argument in the node's arguments file (`--name=value`, the last).
fn apiserver_arg(args: &Path, name: &str) -> Option<String> {
    read_lines(args)
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

/// The stand-ins' files of one sandbox (`<sandbox>/var`) as JSON.
///
/// Layout (inside the instance's `/var`):
/// - `lib/snapd-sim/microk8s/channel` — installed channel (absent: not installed); `held` — refresh hold.
/// - `snap/microk8s/common/.microk8s.yaml` — the launch configuration the node script wrote.
/// - `snap/microk8s/current/args/` — MicroK8s' service arguments (`kube-apiserver`) and the files
///   they name (the admission configuration), as the launch configuration left them.
/// - `snap/microk8s/common/sim/` — this node: `ready`, `role`, `datastore` (IP of the node holding
///   the cluster's shared state), `joined-to`, `extra-sans`, `join-attempts.log`, `pod-security`
///   (the Pod Security policy its API server loaded; none on a worker).
/// - `snap/microk8s/common/sim/cluster/` — on the datastore node: `members`, `tokens`, `addons`,
///   `addon-args` (`<add-on> <arguments>` from the launch configuration or `microk8s enable`),
///   `joins.log`, `removals.log` (`<time> <hostname> <ip> <role> <flags> <result> <reason> <by>`:
///   every `remove-node` attempt and `leave`, results `removed`, `left`, `rejected`), `left` (IPs
///   of members that ran `leave`), `cordoned` (node names), `cordons.log` (every cordon and
///   uncordon, in order), `ca-seed`, `lock`, `join-in-progress`, `pods` (`<namespace> <name>` of
///   the pods the API admitted).
///
/// Next to `var`, the sandbox holds `faults` (the rules matching the node) and `dead` (`node_dies`).
pub fn stand_in_state(var: &Path) -> Value {
    let snap = var.join("lib/snapd-sim/microk8s");
    let sim = var.join("snap/microk8s/common/sim");
    let cluster = sim.join("cluster");
    let members: Vec<Value> = read_lines(&cluster.join("members"))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            json!({
                "hostname": f.first(), "ip": f.get(1), "role": f.get(2),
                "instance_id": f.get(3), "joined_at": f.get(4).and_then(|t| t.parse::<i64>().ok()),
            })
        })
        .collect();
    let joins: Vec<Value> = read_lines(&cluster.join("joins.log"))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dash = |s: Option<&&str>| s.filter(|v| **v != "-").map(|v| v.to_string());
            json!({
                "time": f.first().and_then(|t| t.parse::<i64>().ok()),
                "hostname": f.get(1), "ip": f.get(2), "role": f.get(3),
                "flags": dash(f.get(4)), "result": f.get(5), "reason": dash(f.get(6)),
            })
        })
        .collect();
    let removals: Vec<Value> = read_lines(&cluster.join("removals.log"))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dash = |s: Option<&&str>| s.filter(|v| **v != "-").map(|v| v.to_string());
            json!({
                "time": f.first().and_then(|t| t.parse::<i64>().ok()),
                "hostname": dash(f.get(1)), "ip": dash(f.get(2)), "role": dash(f.get(3)),
                "flags": dash(f.get(4)), "result": f.get(5), "reason": dash(f.get(6)),
                "by": dash(f.get(7)),
            })
        })
        .collect();
    json!({
        "installed_channel": read_trim(&snap.join("channel")),
        "held": snap.join("held").exists(),
        "ready": sim.join("ready").exists(),
        "member_role": read_trim(&sim.join("role")),
        "datastore": read_trim(&sim.join("datastore")),
        "joined_to": read_trim(&sim.join("joined-to")),
        "extra_sans": read_lines(&sim.join("extra-sans")),
        // The API server's admission configuration (`${SNAP_DATA}/args/…`, MicroK8s' own unless
        // the launch configuration named another) and the Pod Security policy it loaded.
        "admission_control_config_file": apiserver_arg(
            &var.join("snap/microk8s/current/args/kube-apiserver"),
            "--admission-control-config-file",
        ),
        "pod_security": pod_security(&sim.join("pod-security")),
        "pods": read_lines(&cluster.join("pods")),
        "addons": read_lines(&cluster.join("addons")),
        "addon_args": read_lines(&cluster.join("addon-args")),
        "members": members,
        "joins_log": joins,
        "removals_log": removals,
        "left": read_lines(&cluster.join("left")),
        "cordoned": read_lines(&cluster.join("cordoned")),
        // Every cordon and uncordon, in order: `{"time", "node", "action"}`.
        "cordons_log": read_lines(&cluster.join("cordons.log"))
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                json!({
                    "time": f.first().and_then(|t| t.parse::<i64>().ok()),
                    "node": f.get(1), "action": f.get(2),
                })
            })
            .collect::<Vec<Value>>(),
        "join_attempts": read_lines(&sim.join("join-attempts.log")),
    })
}
