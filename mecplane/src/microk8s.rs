//! Facts about MicroK8s that the stages and the security group rules rely on: its ports, the channels
//! mecplane accepts, and which add-ons exist on which architecture.

use crate::spec::Arch;

/// The Kubernetes API server (the only port that may be opened outside the cluster).
pub const PORT_API: u16 = 16443;
/// The cluster agent that `microk8s join` contacts.
pub const PORT_CLUSTER_AGENT: u16 = 25000;
/// dqlite, between control-plane nodes.
pub const PORT_DQLITE: u16 = 19001;
/// The kubelet.
pub const PORT_KUBELET: u16 = 10250;
/// Flannel/Calico VXLAN (UDP).
pub const PORT_VXLAN: u16 = 4789;

/// TCP ports opened between the cluster's own nodes (self-referencing rules).
pub const INTRA_CLUSTER_TCP: [u16; 4] = [PORT_API, PORT_CLUSTER_AGENT, PORT_DQLITE, PORT_KUBELET];
/// UDP ports opened between the cluster's own nodes.
pub const INTRA_CLUSTER_UDP: [u16; 1] = [PORT_VXLAN];

/// The channel a cluster gets when its spec names none.
pub const DEFAULT_CHANNEL: &str = "1.32/stable";
/// The oldest and newest minor versions mecplane will install.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 28..=33;

/// Add-ons that MicroK8s ships for both architectures.
const ADDONS_ANY_ARCH: &[&str] = &[
    "dns",
    "ingress",
    "hostpath-storage",
    "metallb",
    "cert-manager",
    "observability",
    "rook-ceph",
    "rbac",
    "metrics-server",
    "dashboard",
    "registry",
    "helm",
    "helm3",
    "community",
];
/// Add-ons MicroK8s ships only for amd64.
const ADDONS_AMD64_ONLY: &[&str] = &["gpu", "istio", "nfs", "kata"];

/// Whether `addon` (possibly `name:args`, as `metallb:10.0.0.1-10.0.0.9`) exists on `arch`.
pub fn addon_available(addon: &str, arch: Arch) -> bool {
    let name = addon.split(':').next().unwrap_or(addon);
    ADDONS_ANY_ARCH.contains(&name) || (arch == Arch::Amd64 && ADDONS_AMD64_ONLY.contains(&name))
}

/// Parses `X.Y/stable` (or `/candidate`, `/beta`, `/edge`) into its minor version.
pub fn channel_minor(channel: &str) -> Option<u32> {
    let (version, risk) = channel.split_once('/')?;
    if !matches!(risk, "stable" | "candidate" | "beta" | "edge") {
        return None;
    }
    let (major, minor) = version.split_once('.')?;
    if major != "1" {
        return None;
    }
    minor.parse().ok().filter(|m| SUPPORTED_MINORS.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        assert_eq!(channel_minor(DEFAULT_CHANNEL), Some(32));
        assert_eq!(channel_minor("1.30/edge"), Some(30));
        assert_eq!(channel_minor("1.32"), None);
        assert_eq!(channel_minor("2.1/stable"), None);
        assert_eq!(channel_minor("1.12/stable"), None);
        assert_eq!(channel_minor("1.32/nightly"), None);
    }

    #[test]
    fn addons_follow_the_architecture() {
        assert!(addon_available("dns", Arch::Arm64));
        assert!(addon_available("metallb:10.0.0.10-10.0.0.20", Arch::Arm64));
        assert!(!addon_available("gpu", Arch::Arm64));
        assert!(addon_available("gpu", Arch::Amd64));
        assert!(!addon_available("kubeflow", Arch::Amd64));
    }
}
