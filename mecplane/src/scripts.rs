//! The node scripts (`mecplane/scripts/*.sh`, embedded at build time) and the two directions of
//! talking to them: rendering a command (environment preamble + script, wrapped so that SSM's
//! `sh` runs it with bash) and reading what it printed (the `MECPLANE_RESULT` line, `NODE` lines).

use std::collections::BTreeMap;

/// A node script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Bootstrap,
    JoinKey,
    IssueToken,
    Join,
    Verify,
    Kubeconfig,
    ManageNode,
    Upgrade,
    Addons,
}

impl Script {
    /// Every script.
    pub const ALL: [Script; 9] = [
        Script::Bootstrap,
        Script::JoinKey,
        Script::IssueToken,
        Script::Join,
        Script::Verify,
        Script::Kubeconfig,
        Script::ManageNode,
        Script::Upgrade,
        Script::Addons,
    ];

    /// The script with this name (`# mecplane-script:` header).
    pub fn named(name: &str) -> Option<Script> {
        Script::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The name in the script's `# mecplane-script:` header.
    pub fn name(self) -> &'static str {
        match self {
            Script::Bootstrap => "bootstrap",
            Script::JoinKey => "join-key",
            Script::IssueToken => "issue-token",
            Script::Join => "join",
            Script::Verify => "verify",
            Script::Kubeconfig => "kubeconfig",
            Script::ManageNode => "manage-node",
            Script::Upgrade => "upgrade",
            Script::Addons => "addons",
        }
    }

    /// The script's text.
    pub fn body(self) -> &'static str {
        match self {
            Script::Bootstrap => include_str!("../scripts/bootstrap.sh"),
            Script::JoinKey => include_str!("../scripts/join-key.sh"),
            Script::IssueToken => include_str!("../scripts/issue-token.sh"),
            Script::Join => include_str!("../scripts/join.sh"),
            Script::Verify => include_str!("../scripts/verify.sh"),
            Script::Kubeconfig => include_str!("../scripts/kubeconfig.sh"),
            Script::ManageNode => include_str!("../scripts/manage-node.sh"),
            Script::Upgrade => include_str!("../scripts/upgrade.sh"),
            Script::Addons => include_str!("../scripts/addons.sh"),
        }
    }

    /// The command text for `AWS-RunShellScript`: bash reads the environment preamble and the
    /// script from a quoted here-document, so nothing in them is expanded by the outer shell.
    pub fn render(self, env: &[(&str, &str)]) -> String {
        let mut text = String::from("bash -s <<'MECPLANE_SCRIPT_EOF'\n");
        for (name, value) in env {
            text.push_str(&format!("export {name}={}\n", shell_quote(value)));
        }
        text.push_str(self.body());
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("MECPLANE_SCRIPT_EOF\n");
        text
    }
}

/// Single-quotes a value for bash.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The `key=value` pairs of the last `MECPLANE_RESULT` line, if the script printed one.
pub fn result_of(stdout: &str) -> Option<BTreeMap<String, String>> {
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("MECPLANE_RESULT"))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Standard output without the `MECPLANE_RESULT` line (the kubeconfig script's payload).
pub fn payload_of(stdout: &str) -> String {
    let mut out: String = stdout
        .lines()
        .filter(|l| !l.trim_start().starts_with("MECPLANE_RESULT"))
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// One node as the verify script reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub hostname: String,
    pub ready: bool,
    pub internal_ip: String,
    pub role: String,
    /// When its Ready condition last changed (epoch seconds), when Kubernetes said.
    pub since: Option<i64>,
}

/// The `NODE <hostname> <Ready|NotReady> <ip> <role> [<since>]` lines of the verify script.
pub fn nodes_of(stdout: &str) -> Vec<NodeReport> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "NODE").then_some(())?;
            Some(NodeReport {
                hostname: f.next()?.to_string(),
                ready: f.next()? == "Ready",
                internal_ip: f.next().unwrap_or("").to_string(),
                role: f.next().unwrap_or("").to_string(),
                since: f.next().and_then(crate::clock::epoch_of),
            })
        })
        .collect()
}

/// The last few lines of a failed command's output, for a failure reason a person can act on.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_declares_its_name() {
        for s in Script::ALL {
            assert_eq!(Script::named(s.name()), Some(s));
            assert!(
                s.body()
                    .contains(&format!("# mecplane-script: {}\n", s.name())),
                "{}",
                s.name()
            );
        }
    }

    #[test]
    fn render_quotes_values() {
        let text = Script::Join.render(&[("SEALED_TOKEN", "ab'c"), ("NODE_ROLE", "worker")]);
        assert!(
            text.starts_with("bash -s <<'MECPLANE_SCRIPT_EOF'\nexport SEALED_TOKEN='ab'\\''c'\n")
        );
        assert!(text.ends_with("MECPLANE_SCRIPT_EOF\n"));
        assert!(text.contains("# mecplane-script: join"));
    }

    /// Runs the bootstrap script as SSM would (`sh -c` of the rendered command) with stand-ins
    /// for `snap` and `microk8s` and the launch configuration in a scratch directory; answers
    /// the script's exit status and the `(name, args)` of the launch configuration's add-ons.
    fn bootstrap_addons(
        dir: &std::path::Path,
        addons: &[String],
    ) -> (bool, Vec<(String, Vec<String>)>) {
        let env = crate::microk8s::addons_env(addons);
        let (ok, launch) = launch_config_of(
            dir,
            Script::Bootstrap,
            &[
                ("MK8S_CHANNEL", "1.32/stable"),
                ("MK8S_ADDONS", &env),
                ("EXTRA_SANS", "10.0.0.1"),
                ("WAIT_TIMEOUT", "30"),
            ],
        );
        let Some(launch) = launch.filter(|_| ok) else {
            return (false, Vec::new());
        };
        let text = |v: &serde_yaml::Value| v.as_str().expect("a string").to_string();
        let found = launch["addons"]
            .as_sequence()
            .map(|addons| {
                addons
                    .iter()
                    .map(|a| {
                        let args = a["args"].as_sequence().map(|args| args.iter().map(text));
                        (
                            text(&a["name"]),
                            args.map(Iterator::collect).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (true, found)
    }

    #[test]
    fn the_bootstrap_script_takes_every_add_on_list_validate_accepts() {
        use crate::spec::{ClusterRequest, Policy};
        let dir = std::env::temp_dir().join(format!("mecplane-addons-{}", std::process::id()));
        let names = [
            "dns",
            "metallb",
            "hostpath-storage",
            "gpu",
            "Dns",
            "",
            "no-such",
        ];
        let args = [
            None,
            Some(""),
            Some("10.0.0.10-10.0.0.20"),
            Some("10.0.0.10-10.0.0.20,10.0.1.0/24"),
            Some("1.1.1.1,8.8.8.8"),
            Some("--size=20Gi"),
            Some("a:b:c"),
            Some("_./,-="),
            Some("a b"),
            Some("x'y"),
            Some("$(id)"),
        ];
        let mut accepted = 0;
        for name in names {
            for arg in args {
                let addon = match arg {
                    Some(a) => format!("{name}:{a}"),
                    None => name.to_string(),
                };
                for list in [
                    vec![addon.clone()],
                    vec!["rbac".into(), addon.clone(), "helm3".into()],
                ] {
                    let request = ClusterRequest {
                        name: Some("a".into()),
                        instance_type: Some("t3.medium".into()),
                        addons: Some(list.clone()),
                        ..Default::default()
                    };
                    let Ok(spec) = request.validate(&Policy::default()) else {
                        continue;
                    };
                    accepted += 1;
                    let (ok, found) = bootstrap_addons(&dir, &spec.addons);
                    assert!(ok, "the script refused {list:?}, which validate accepts");
                    let want: Vec<(String, Vec<String>)> = list
                        .iter()
                        .map(|a| match a.split_once(':') {
                            Some((n, x)) => (n.to_string(), vec![x.to_string()]),
                            None => (a.clone(), Vec::new()),
                        })
                        .collect();
                    assert_eq!(found, want, "{list:?}");
                }
            }
        }
        assert!(accepted >= 20, "only {accepted} lists were valid");
        // The script still refuses what validate refuses.
        assert!(!bootstrap_addons(&dir, &["dns:$(id)".into()]).0);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Runs the bootstrap or join script as SSM would (`sh -c` of the rendered command) with
    /// stand-ins for `snap` and `microk8s` on a node without MicroK8s, the launch configuration in
    /// a scratch directory; answers whether the script succeeded and the launch configuration it
    /// wrote (`None`: none).
    fn launch_config_of(
        dir: &std::path::Path,
        script: Script,
        env: &[(&str, &str)],
    ) -> (bool, Option<serde_yaml::Value>) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, body) in [
            ("snap", "#!/bin/sh\n[ \"$1\" = list ] && exit 1\nexit 0\n"),
            // A member already (so a join ends once its launch configuration is written).
            (
                "microk8s",
                "#!/bin/sh\n[ \"$1\" = status ] && printf 'acting as a node in a cluster\\n  datastore master nodes: 10.0.0.1:19001\\n'\nexit 0\n",
            ),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config = dir.join("launch.yaml");
        let _ = std::fs::remove_file(&config);
        let default = "LAUNCH_CONFIG=/var/snap/microk8s/common/.microk8s.yaml\n";
        let text = script.render(env);
        assert!(
            text.contains(default),
            "the script names its launch configuration"
        );
        let text = text.replace(default, &format!("LAUNCH_CONFIG={}\n", config.display()));
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&text)
            .env("PATH", path)
            .output()
            .expect("sh runs");
        let yaml = std::fs::read_to_string(&config)
            .ok()
            .map(|t| serde_yaml::from_str(&t).expect("the launch configuration is YAML"));
        (out.status.success(), yaml)
    }

    /// The Pod Security admission a launch configuration sets up: the API server argument, and
    /// the admission configuration it names (parsed).
    fn admission_of(launch: &serde_yaml::Value) -> (String, serde_yaml::Value) {
        let arg = launch["extraKubeAPIServerArgs"]["--admission-control-config-file"]
            .as_str()
            .expect("the API server argument")
            .to_string();
        let file = arg
            .strip_prefix("${SNAP_DATA}/args/")
            .expect("a file MicroK8s keeps with its arguments");
        let text = launch["extraConfigFiles"][file]
            .as_str()
            .expect("the file, written by the launch configuration");
        (arg.clone(), serde_yaml::from_str(text).expect("YAML"))
    }

    #[test]
    fn control_planes_get_pod_security_admission_and_workers_none() {
        let dir = std::env::temp_dir().join(format!("mecplane-podsec-{}", std::process::id()));
        let boot = |level: Option<&str>| {
            let mut env = vec![
                ("MK8S_CHANNEL", "1.32/stable"),
                ("MK8S_ADDONS", "dns"),
                ("EXTRA_SANS", "10.0.0.1"),
                ("WAIT_TIMEOUT", "30"),
            ];
            env.extend(level.map(|l| ("POD_SECURITY", l)));
            launch_config_of(&dir, Script::Bootstrap, &env)
        };
        for level in ["privileged", "baseline", "restricted"] {
            let (ok, launch) = boot(Some(level));
            assert!(ok, "{level}");
            let launch = launch.expect("a launch configuration");
            // What the bootstrap wrote before stays.
            assert_eq!(launch["extraSANs"][0].as_str(), Some("10.0.0.1"));
            assert_eq!(launch["addons"][0]["name"].as_str(), Some("dns"));
            let (arg, admission) = admission_of(&launch);
            assert_eq!(arg, "${SNAP_DATA}/args/mecplane-admission.yaml");
            assert_eq!(admission["kind"].as_str(), Some("AdmissionConfiguration"));
            assert_eq!(
                admission["apiVersion"].as_str(),
                Some("apiserver.config.k8s.io/v1")
            );
            let plugins = admission["plugins"].as_sequence().unwrap();
            // MicroK8s' own EventRateLimit configuration is kept (the file replaces its default
            // admission configuration, which names only that).
            assert_eq!(plugins[0]["name"].as_str(), Some("EventRateLimit"));
            assert_eq!(plugins[0]["path"].as_str(), Some("eventconfig.yaml"));
            assert_eq!(plugins[1]["name"].as_str(), Some("PodSecurity"));
            let psa = &plugins[1]["configuration"];
            assert_eq!(
                (psa["apiVersion"].as_str(), psa["kind"].as_str()),
                (
                    Some("pod-security.admission.config.k8s.io/v1"),
                    Some("PodSecurityConfiguration")
                )
            );
            for mode in ["enforce", "audit", "warn"] {
                assert_eq!(psa["defaults"][mode].as_str(), Some(level), "{mode}");
                assert_eq!(
                    psa["defaults"][format!("{mode}-version").as_str()].as_str(),
                    Some("latest")
                );
            }
            let exempt: Vec<&str> = psa["exemptions"]["namespaces"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            for ns in [
                "kube-system",
                "ingress",
                "metallb-system",
                "cert-manager",
                "observability",
                "container-registry",
                "kubernetes-dashboard",
                "rook-ceph",
                "minio-operator",
            ] {
                assert!(exempt.contains(&ns), "{ns} is exempt: {exempt:?}");
            }
            for ns in ["default", "kube-public", "kube-node-lease"] {
                assert!(!exempt.contains(&ns), "{ns} is not exempt");
            }
            assert_eq!(
                psa["exemptions"]["usernames"].as_sequence().unwrap().len(),
                0
            );
        }
        // Unset: baseline.
        let (arg, admission) = admission_of(&boot(None).1.unwrap());
        assert!(arg.ends_with("/mecplane-admission.yaml"));
        assert_eq!(
            admission["plugins"][1]["configuration"]["defaults"]["enforce"].as_str(),
            Some("baseline")
        );
        // Anything else is refused before anything is written.
        for bad in ["Baseline", "none", "baseline; reboot"] {
            let (ok, launch) = boot(Some(bad));
            assert!(!ok && launch.is_none(), "{bad}");
        }

        // A control plane's join sets up the same; a worker's none (it runs no API server).
        let join = |role: &str, sans: &str| {
            launch_config_of(
                &dir,
                Script::Join,
                &[
                    ("MK8S_CHANNEL", "1.32/stable"),
                    ("JOIN_ADDRESS", "10.0.0.1:25000"),
                    ("SEALED_TOKEN", "MECPLANE_SEALED v1 QUJD QUJD QUJD QUJD"),
                    ("NODE_ROLE", role),
                    ("WAIT_TIMEOUT", "30"),
                    ("EXTRA_SANS", sans),
                    ("POD_SECURITY", "restricted"),
                ],
            )
        };
        for sans in ["", "10.0.0.2"] {
            let (ok, launch) = join("control-plane", sans);
            assert!(ok, "{sans:?}");
            let launch = launch.expect("a control plane's launch configuration");
            let (_, admission) = admission_of(&launch);
            assert_eq!(
                admission["plugins"][1]["configuration"]["defaults"]["enforce"].as_str(),
                Some("restricted")
            );
            assert_eq!(
                launch["extraSANs"][0].as_str(),
                (!sans.is_empty()).then_some(sans)
            );
        }
        let (ok, launch) = join("worker", "");
        assert!(ok && launch.is_none(), "{launch:?}");

        // One block, the same in both scripts.
        let block = |s: Script| {
            let body = s.body();
            let start = body.find("# >>> pod-security").expect("the block");
            let end = body.find("# <<< pod-security").expect("its end");
            body[start..end].to_string()
        };
        assert_eq!(block(Script::Bootstrap), block(Script::Join));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Runs the manage-node script as SSM would (`ACTION=remove` unless `env` says otherwise),
    /// with a `microk8s` stand-in whose drain answers `drain` for a plain drain and `forced` for
    /// one with `--force` ("ok" or "timeout"), on a cluster whose one other node is `ip-10-0-0-7`
    /// at 10.0.0.7, Ready on v1.33.0. Answers the exit status, the standard output and the
    /// stand-in's calls.
    fn manage_node(
        dir: &std::path::Path,
        ip: &str,
        drain: &str,
        forced: &str,
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let calls = dir.join("calls");
        let gone = dir.join("gone");
        let _ = std::fs::remove_file(&calls);
        let _ = std::fs::remove_file(&gone);
        let stand_in = r#"#!/bin/sh
echo "$*" >>"$CALLS"
case $1 in
  kubectl)
    case $2 in
      get)
        if [ -e "$GONE" ]; then echo '{"items": []}'; else
          echo '{"items": [{"metadata": {"name": "ip-10-0-0-7"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}], "conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}}]}'
        fi ;;
      uncordon) echo "node/$3 uncordoned" ;;
      drain)
        case "$*" in *--force*) want=$FORCED ;; *) want=$DRAIN ;; esac
        [ "$want" = ok ] && { echo "node/$3 drained"; exit 0; }
        echo "error: unable to drain node \"$3\": global timeout reached" >&2; exit 1 ;;
    esac ;;
  remove-node) touch "$GONE"; echo "Removing node $2" ;;
esac
"#;
        let path = bin.join("microk8s");
        std::fs::write(&path, stand_in).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut vars = vec![
            ("ACTION", "remove"),
            ("NODE_IP", ip),
            ("DRAIN_TIMEOUT", "5"),
        ];
        for (k, v) in env {
            vars.retain(|(name, _)| name != k);
            vars.push((k, v));
        }
        let text = Script::ManageNode.render(&vars);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&text)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("CALLS", &calls)
            .env("GONE", &gone)
            .env("DRAIN", drain)
            .env("FORCED", forced)
            .output()
            .expect("sh runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            std::fs::read_to_string(&calls).unwrap_or_default(),
        )
    }

    #[test]
    fn the_manage_node_script_removes_drains_forces_on_timeout_and_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("mecplane-remove-{}", std::process::id()));
        // Drained, then removed.
        let (ok, out, calls) = manage_node(&dir, "10.0.0.7", "ok", "ok", &[]);
        assert!(ok, "{out}");
        assert_eq!(result_of(&out).unwrap()["drain"], "drained", "{out}");
        assert!(calls.contains(
            "kubectl drain ip-10-0-0-7 --ignore-daemonsets --delete-emptydir-data --timeout=5s\n"
        ));
        assert!(calls.contains("remove-node ip-10-0-0-7\n"), "{calls}");
        // A drain that times out is forced, with a note.
        let (ok, out, calls) = manage_node(&dir, "10.0.0.7", "timeout", "ok", &[]);
        assert!(ok, "{out}");
        assert_eq!(result_of(&out).unwrap()["drain"], "forced");
        assert!(
            out.contains("note: draining ip-10-0-0-7 did not finish within 5s"),
            "{out}"
        );
        assert!(calls.contains("--timeout=5s --force\n"), "{calls}");
        // Even a forced drain that does not finish removes the node, and says so.
        let (ok, out, _) = manage_node(&dir, "10.0.0.7", "timeout", "timeout", &[]);
        assert!(ok, "{out}");
        assert_eq!(result_of(&out).unwrap()["drain"], "incomplete");
        // A node no longer in the cluster is fine, and nothing is drained.
        let (ok, out, calls) = manage_node(&dir, "10.0.0.9", "ok", "ok", &[]);
        assert!(ok, "{out}");
        assert_eq!(result_of(&out).unwrap()["remove"], "already-gone");
        assert!(!calls.contains("drain"), "{calls}");
        // A bad address is refused before anything runs.
        let (ok, _, calls) = manage_node(&dir, "10.0.0.7; reboot", "ok", "ok", &[]);
        assert!(!ok);
        assert!(calls.is_empty(), "{calls}");
        // A control plane that cannot leave by itself is removed with --force.
        let (ok, _, calls) = manage_node(&dir, "10.0.0.7", "ok", "ok", &[("FORCE", "1")]);
        assert!(ok);
        assert!(
            calls.contains("remove-node ip-10-0-0-7 --force\n"),
            "{calls}"
        );
        // Drain only: cordoned and drained, not removed.
        let (ok, out, calls) = manage_node(&dir, "10.0.0.7", "ok", "ok", &[("ACTION", "drain")]);
        assert!(ok, "{out}");
        assert_eq!(result_of(&out).unwrap()["drain"], "drained");
        assert!(!calls.contains("remove-node"), "{calls}");
        // Draining a node that is not in the cluster is an error (an upgrade needs it there).
        let (ok, _, _) = manage_node(&dir, "10.0.0.9", "ok", "ok", &[("ACTION", "drain")]);
        assert!(!ok);
        // Uncordon waits for Ready on the expected version.
        let uncordon = [("ACTION", "uncordon"), ("WAIT_TIMEOUT", "1")];
        let (ok, out, calls) = manage_node(
            &dir,
            "10.0.0.7",
            "ok",
            "ok",
            &[uncordon[0], uncordon[1], ("EXPECT_VERSION", "v1.33.")],
        );
        assert!(ok, "{out}");
        assert_eq!(result_of(&out).unwrap()["version"], "v1.33.0");
        assert!(calls.contains("kubectl uncordon ip-10-0-0-7\n"), "{calls}");
        let (ok, out, _) = manage_node(
            &dir,
            "10.0.0.7",
            "ok",
            "ok",
            &[uncordon[0], uncordon[1], ("EXPECT_VERSION", "v1.34.")],
        );
        assert!(!ok, "{out}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn results_and_nodes_are_parsed() {
        let out = "x\nNODE ip-10-0-0-1 Ready 10.0.0.1 control-plane\nNODE ip-10-0-0-2 NotReady 10.0.0.2 worker 2024-05-01T00:00:10Z\nMECPLANE_RESULT nodes=2 ready=1\n";
        let r = result_of(out).unwrap();
        assert_eq!(r["nodes"], "2");
        assert_eq!(r["ready"], "1");
        let nodes = nodes_of(out);
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].ready && !nodes[1].ready);
        assert_eq!(nodes[1].role, "worker");
        assert_eq!(
            (nodes[0].since, nodes[1].since),
            (None, Some(1_714_521_610))
        );
        assert_eq!(result_of("no result"), None);
        assert_eq!(
            payload_of("a: 1\nMECPLANE_RESULT kubeconfig=ok\n"),
            "a: 1\n"
        );
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
    }
}
