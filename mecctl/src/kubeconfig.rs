//! Merging a cluster's kubeconfig into the user's kubeconfig file, as `aws eks update-kubeconfig`
//! does: the cluster, its user and a context all named after the cluster replace entries of the
//! same name and leave every other entry as it was; the file is written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::exit::Failure;

/// The cluster's entries, named after it, from the kubeconfig MicroK8s wrote.
fn entries(name: &str, microk8s: &str) -> Result<[(&'static str, Value); 3], Failure> {
    let doc: Value = serde_yaml::from_str(microk8s)
        .map_err(|e| Failure::other(format!("the API's kubeconfig is not YAML: {e}")))?;
    let cluster = doc["clusters"][0]["cluster"].clone();
    let user = doc["users"][0]["user"].clone();
    if !cluster.is_object() || !user.is_object() || cluster["server"].is_null() {
        return Err(Failure::other(
            "the API's kubeconfig has no cluster, server or user",
        ));
    }
    let user_name = format!("{name}-admin");
    Ok([
        ("clusters", json!({"name": name, "cluster": cluster})),
        ("users", json!({"name": user_name, "user": user})),
        (
            "contexts",
            json!({"name": name, "context": {"cluster": name, "user": user_name}}),
        ),
    ])
}

/// `existing` (the file's text, if any) with the cluster's entries merged in, as YAML.
pub fn merge(
    existing: Option<&str>,
    name: &str,
    microk8s: &str,
    set_current: bool,
) -> Result<String, Failure> {
    let mut doc: Value = match existing.map(str::trim) {
        Some(text) if !text.is_empty() => serde_yaml::from_str(text)
            .map_err(|e| Failure::other(format!("the kubeconfig file is not YAML: {e}")))?,
        _ => json!({"apiVersion": "v1", "kind": "Config", "preferences": {}}),
    };
    let Some(map) = doc.as_object_mut() else {
        return Err(Failure::other("the kubeconfig file is not a YAML mapping"));
    };
    for (list, entry) in entries(name, microk8s)? {
        let items = map.entry(list).or_insert_with(|| json!([]));
        if !items.is_array() {
            *items = json!([]);
        }
        let items = items.as_array_mut().expect("an array");
        match items.iter_mut().find(|i| i["name"] == entry["name"]) {
            Some(old) => *old = entry,
            None => items.push(entry),
        }
    }
    let current = map.get("current-context").and_then(Value::as_str);
    if set_current || current.is_none_or(str::is_empty) {
        map.insert("current-context".into(), json!(name));
    }
    serde_yaml::to_string(&doc).map_err(|e| Failure::other(e.to_string()))
}

/// `--kubeconfig`, else the first file of `$KUBECONFIG`, else `~/.kube/config`.
pub fn default_path(flag: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(first) = std::env::var("KUBECONFIG")
        .ok()
        .and_then(|k| k.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
    {
        return Ok(first);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube").join("config"))
        .ok_or_else(|| Failure::other("no HOME: pass --kubeconfig"))
}

/// Merges into the file at `path` (created with its directory if missing), mode 0600.
pub fn write(path: &Path, name: &str, microk8s: &str, set_current: bool) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::other(format!("{}: {e}", path.display()));
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let merged = merge(existing.as_deref(), name, microk8s, set_current)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("mecctl-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(merged.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICROK8S: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://203.0.113.10:16443\n  name: microk8s-cluster\ncontexts:\n- context:\n    cluster: microk8s-cluster\n    user: admin\n  name: microk8s\ncurrent-context: microk8s\nkind: Config\npreferences: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    const EXISTING: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod:6443\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: prod\ncurrent-context: prod\nusers:\n- name: prod\n  user:\n    token: abc\n";

    #[test]
    fn merging_keeps_other_entries_and_replaces_its_own() {
        let once = merge(Some(EXISTING), "edge", MICROK8S, false).unwrap();
        let doc: Value = serde_yaml::from_str(&once).unwrap();
        let names = |list: &str| -> Vec<String> {
            doc[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("clusters"), ["prod", "edge"]);
        assert_eq!(names("users"), ["prod", "edge-admin"]);
        assert_eq!(names("contexts"), ["prod", "edge"]);
        assert_eq!(doc["current-context"], "prod", "kept without set_current");
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "https://203.0.113.10:16443"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "abc");

        // Again, with set_current: still one entry each, and the context is current.
        let twice = merge(Some(&once), "edge", MICROK8S, true).unwrap();
        let doc: Value = serde_yaml::from_str(&twice).unwrap();
        assert_eq!(doc["clusters"].as_array().unwrap().len(), 2);
        assert_eq!(doc["current-context"], "edge");
    }

    #[test]
    fn a_new_file_gets_the_context_and_mode_0600() {
        let dir = std::env::temp_dir().join(format!("mecctl-kc-{}", std::process::id()));
        let path = dir.join("sub").join("config");
        write(&path, "edge", MICROK8S, false).unwrap();
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["current-context"], "edge");
        assert_eq!(doc["contexts"][0]["context"]["user"], "edge-admin");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_kubeconfig_without_a_server_is_refused() {
        assert!(merge(None, "edge", "apiVersion: v1\nclusters: []\n", false).is_err());
        assert!(merge(Some("- a list"), "edge", MICROK8S, false).is_err());
    }
}
