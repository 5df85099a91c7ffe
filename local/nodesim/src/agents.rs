//! The simulated instances and their SSM agents: what moto launched (looked up with
//! `DescribeInstances`, paginated), their tags, and whether each agent is online.

use crate::faults::{FaultKind, Faults, Target};
use aws_sdk_ec2::Client as Ec2Client;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One EC2 instance as the simulator knows it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `i-...`.
    pub instance_id: String,
    /// The region moto launched it in.
    pub region: String,
    /// The private IPv4 address moto assigned.
    pub private_ip: String,
    /// `ip-10-0-1-5`, as Ubuntu names an EC2 instance.
    pub hostname: String,
    /// `mecplane:cluster-name` tag.
    pub cluster_name: Option<String>,
    /// `mecplane:cluster` tag.
    pub cluster_id: Option<String>,
    /// `mecplane:role` tag.
    pub role: Option<String>,
    /// `mecplane:index` tag.
    pub index: Option<u32>,
    /// moto's `LaunchTime`.
    pub launch_time: SystemTime,
    /// moto's state name (`running`, `terminated`, ...).
    pub state: String,
    /// Whether the agent was ever seen online (an agent that goes away is `ConnectionLost`).
    pub ever_online: bool,
    /// When the agent was last seen online (its `LastPingDateTime` once it is not).
    pub last_ping: Option<SystemTime>,
    /// The node died (the `node_dies` fault wrote `<sandbox>/dead`): it answers nothing any more,
    /// while EC2 still reports it running.
    pub dead: bool,
}

impl Instance {
    /// The fault-matching view of the instance.
    pub fn target(&self) -> Target<'_> {
        Target {
            cluster_name: self.cluster_name.as_deref(),
            role: self.role.as_deref(),
            index: self.index,
        }
    }

    /// Whether the agent is online at `now`.
    pub fn agent_online(&self, now: SystemTime, delay: Duration, faults: &Faults) -> bool {
        self.state == "running"
            && !self.dead
            && now >= self.launch_time + delay
            && !faults.has(FaultKind::AgentOffline, &self.target(), None)
    }
}

/// The hostname Ubuntu gives an EC2 instance with this private IP.
pub fn hostname_for(ip: &str) -> String {
    format!("ip-{}", ip.replace('.', "-"))
}

/// The instance registry: a cache of moto's instances plus the per-instance sandbox directories.
pub struct Agents {
    ec2: Vec<(String, Ec2Client)>,
    work_dir: PathBuf,
    instances: Mutex<HashMap<String, Instance>>,
    refresh_lock: tokio::sync::Mutex<()>,
}

impl Agents {
    /// A registry reading moto through one EC2 client per region.
    pub fn new(ec2: Vec<(String, Ec2Client)>, work_dir: PathBuf) -> Self {
        Self {
            ec2,
            work_dir,
            instances: Mutex::new(HashMap::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The EC2 client (to moto) of a region.
    pub fn ec2(&self, region: &str) -> Option<&Ec2Client> {
        self.ec2.iter().find(|(r, _)| r == region).map(|(_, c)| c)
    }

    /// The sandbox directory of an instance (`<work>/instances/<id>`).
    pub fn sandbox_dir(&self, instance_id: &str) -> PathBuf {
        self.work_dir.join("instances").join(instance_id)
    }

    /// The net directory (`<work>/net`): one entry per private IP → that instance's sandbox.
    pub fn net_dir(&self) -> PathBuf {
        self.work_dir.join("net")
    }

    /// Re-reads every instance of every region from moto (all pages) and updates sandboxes and
    /// the net directory.
    pub async fn refresh(&self) -> Result<(), String> {
        let _guard = self.refresh_lock.lock().await;
        let mut found = Vec::new();
        for (region, ec2) in &self.ec2 {
            Self::read_region(region, ec2, &mut found).await?;
        }
        self.update(found)
    }

    /// Every instance moto has in one region.
    async fn read_region(
        region: &str,
        ec2: &Ec2Client,
        found: &mut Vec<Instance>,
    ) -> Result<(), String> {
        let mut pages = ec2
            .describe_instances()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| format!("DescribeInstances in {region}: {}", error_text(&e)))?;
            for reservation in page.reservations() {
                for i in reservation.instances() {
                    let Some(id) = i.instance_id() else { continue };
                    let ip = i.private_ip_address().unwrap_or_default().to_string();
                    let tag = |k: &str| {
                        i.tags()
                            .iter()
                            .find(|t| t.key() == Some(k))
                            .and_then(|t| t.value())
                            .map(str::to_string)
                    };
                    let launch_time = i
                        .launch_time()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or_else(SystemTime::now);
                    found.push(Instance {
                        instance_id: id.to_string(),
                        region: region.to_string(),
                        hostname: hostname_for(&ip),
                        private_ip: ip,
                        cluster_name: tag("mecplane:cluster-name"),
                        cluster_id: tag("mecplane:cluster"),
                        role: tag("mecplane:role"),
                        index: tag("mecplane:index").and_then(|v| v.parse().ok()),
                        launch_time,
                        state: i
                            .state()
                            .and_then(|s| s.name())
                            .map(|n| n.as_str().to_string())
                            .unwrap_or_default(),
                        ever_online: false,
                        last_ping: None,
                        dead: false,
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes in what moto answered: sandboxes, net entries, and the registry.
    fn update(&self, found: Vec<Instance>) -> Result<(), String> {
        for inst in &found {
            self.prepare_sandbox(inst)
                .map_err(|e| format!("sandbox of {}: {e}", inst.instance_id))?;
        }
        let mut map = self.instances.lock().expect("instances lock");
        for mut inst in found {
            inst.dead = self.sandbox_dir(&inst.instance_id).join("dead").exists();
            if let Some(old) = map.get(&inst.instance_id) {
                inst.ever_online = old.ever_online;
                inst.last_ping = old.last_ping;
                if old.state == "terminated" {
                    inst.state = old.state.clone();
                }
            }
            map.insert(inst.instance_id.clone(), inst);
        }
        Ok(())
    }

    /// Creates the sandbox of an instance and keeps its net entry and state file current.
    fn prepare_sandbox(&self, inst: &Instance) -> std::io::Result<()> {
        let dir = self.sandbox_dir(&inst.instance_id);
        std::fs::create_dir_all(dir.join("var"))?;
        std::fs::create_dir_all(dir.join("commands"))?;
        write_if_changed(&dir.join("instance-state"), &inst.state)?;
        write_if_changed(&dir.join("hostname"), &inst.hostname)?;
        write_if_changed(&dir.join("instance-id"), &inst.instance_id)?;
        if !inst.private_ip.is_empty() {
            let net = self.net_dir();
            std::fs::create_dir_all(&net)?;
            let link = net.join(&inst.private_ip);
            let current = std::fs::read_link(&link).ok();
            // moto may reuse an IP only after the previous owner is terminated.
            if current.as_deref() != Some(dir.as_path())
                && (inst.state != "terminated" || current.is_none())
            {
                let tmp = net.join(format!(".{}.tmp", inst.private_ip));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&dir, &tmp)?;
                std::fs::rename(&tmp, &link)?;
            }
        }
        Ok(())
    }

    /// Writes `<sandbox>/faults` of every instance: the fault rules matching it, for the stand-ins
    /// of any node (`<net>/<ip>/faults`, see [`Faults::node_lines`]).
    pub fn write_fault_files(&self, faults: &Faults) {
        for inst in self.all() {
            let mut text = faults.node_lines(&inst.target()).join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            let path = self.sandbox_dir(&inst.instance_id).join("faults");
            if let Err(e) = write_if_changed(&path, &text) {
                tracing::warn!(instance_id = %inst.instance_id, error = %e, "cannot write the node's fault file");
            }
        }
    }

    /// Marks an instance terminated locally (after the simulator terminated it in moto).
    pub fn mark_terminated(&self, instance_id: &str) {
        let mut map = self.instances.lock().expect("instances lock");
        if let Some(inst) = map.get_mut(instance_id) {
            inst.state = "terminated".into();
            let _ = std::fs::write(
                self.sandbox_dir(instance_id).join("instance-state"),
                "terminated",
            );
        }
    }

    /// Marks an instance's node dead (`node_dies`): its agent is offline from now on.
    pub fn mark_dead(&self, instance_id: &str) {
        if let Some(inst) = self
            .instances
            .lock()
            .expect("instances lock")
            .get_mut(instance_id)
        {
            inst.dead = true;
        }
    }

    /// Records that the agent was seen online at `now` (its last ping).
    pub fn mark_seen_online(&self, instance_id: &str, now: SystemTime) {
        if let Some(inst) = self
            .instances
            .lock()
            .expect("instances lock")
            .get_mut(instance_id)
        {
            inst.ever_online = true;
            inst.last_ping = Some(now);
        }
    }

    /// One instance.
    pub fn get(&self, instance_id: &str) -> Option<Instance> {
        self.instances
            .lock()
            .expect("instances lock")
            .get(instance_id)
            .cloned()
    }

    /// Every instance, sorted by id.
    pub fn all(&self) -> Vec<Instance> {
        let mut v: Vec<Instance> = self
            .instances
            .lock()
            .expect("instances lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        v
    }
}

fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(content) {
        std::fs::write(path, content)?;
    }
    Ok(())
}

/// A readable message for an SDK error (code and message when the service answered).
pub fn error_text<E: std::error::Error + 'static>(err: &E) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}
