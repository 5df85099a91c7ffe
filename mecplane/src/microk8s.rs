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
    let name = addon_name(addon);
    ADDONS_ANY_ARCH.contains(&name) || (arch == Arch::Amd64 && ADDONS_AMD64_ONLY.contains(&name))
}

/// The add-on's name: what comes before the first `:`.
pub fn addon_name(addon: &str) -> &str {
    addon.split_once(':').map_or(addon, |(name, _)| name)
}

/// The bytes an add-on's arguments may hold (MicroK8s' `name:args` syntax, as
/// `metallb:10.0.0.10-10.0.0.20,10.0.1.0/24`): nothing a shell, YAML or the list separator of
/// [`addons_env`] would read.
fn is_addon_arg_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-:.,/=_".contains(&b)
}

/// Checks the shape of an add-on as a spec lists it, `name` or `name:args`, and splits it. The
/// arguments (everything after the first `:`, commas included) are one argument of
/// `microk8s enable`, as MicroK8s reads `name:args`; the node script writes them into the launch
/// configuration's `args`.
pub fn validate_addon(addon: &str) -> Result<(&str, Option<&str>), String> {
    let (name, args) = match addon.split_once(':') {
        Some((name, args)) => (name, Some(args)),
        None => (addon, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err("must be an add-on name (lowercase letters, digits and '-'), optionally with :arguments".into());
    }
    if let Some(args) = args {
        if args.is_empty() || args.len() > 200 || !args.bytes().all(is_addon_arg_byte) {
            return Err(
                "arguments after ':' must be 1 to 200 characters: letters, digits and - : . , / = _"
                    .into(),
            );
        }
    }
    Ok((name, args))
}

/// The `MK8S_ADDONS` value of the bootstrap script: the add-ons separated by spaces, so that a
/// comma inside arguments (`metallb:10.0.0.10-10.0.0.20,10.0.1.0/24`) does not split the list.
pub fn addons_env(addons: &[String]) -> String {
    addons.join(" ")
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

/// Whether a cluster on `from` may move to `to`: the same risk, one minor up (MicroK8s upgrades
/// Kubernetes one minor at a time and never down). The reason names what is wrong.
pub fn check_upgrade(from: &str, to: &str) -> Result<(), String> {
    fn minor(c: &str) -> Option<(u32, &str)> {
        channel_minor(c).map(|m| (m, c.split_once('/').map_or("", |(_, r)| r)))
    }
    let Some((to_minor, to_risk)) = minor(to) else {
        return Err(format!(
            "must look like 1.33/stable with a minor from {} to {}",
            SUPPORTED_MINORS.start(),
            SUPPORTED_MINORS.end()
        ));
    };
    let Some((from_minor, from_risk)) = minor(from) else {
        return Err(format!(
            "the cluster's channel {from} is not one mecplane upgrades"
        ));
    };
    if to_minor < from_minor {
        return Err(format!(
            "{to} would downgrade the cluster from {from}; MicroK8s is never downgraded"
        ));
    }
    if to_minor > from_minor + 1 {
        return Err(format!(
            "{to} skips a minor: the cluster runs {from}; upgrade to 1.{}/{from_risk} first",
            from_minor + 1
        ));
    }
    if to_risk != from_risk {
        return Err(format!(
            "{to} changes the risk level of {from}; only the minor version can change"
        ));
    }
    Ok(())
}

/// What moving a cluster's add-ons from `from` to `to` takes (pure): the names to disable (gone,
/// or listed again with other arguments), then the entries to enable (new, or with new arguments).
pub fn addon_changes(from: &[String], to: &[String]) -> (Vec<String>, Vec<String>) {
    let disable = from
        .iter()
        .filter(|a| !to.contains(a))
        .map(|a| addon_name(a).to_string())
        .collect();
    let enable = to.iter().filter(|a| !from.contains(a)).cloned().collect();
    (disable, enable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_go_one_minor_up_on_the_same_risk() {
        assert_eq!(check_upgrade("1.32/stable", "1.33/stable"), Ok(()));
        assert_eq!(check_upgrade("1.32/edge", "1.32/edge"), Ok(()));
        let skip = check_upgrade("1.31/stable", "1.33/stable").unwrap_err();
        assert!(skip.contains("upgrade to 1.32/stable first"), "{skip}");
        let down = check_upgrade("1.32/stable", "1.31/stable").unwrap_err();
        assert!(down.contains("never downgraded"), "{down}");
        let risk = check_upgrade("1.32/stable", "1.33/edge").unwrap_err();
        assert!(risk.contains("risk"), "{risk}");
        assert!(check_upgrade("1.32/stable", "1.40/stable").is_err());
        assert!(check_upgrade("1.32/stable", "latest").is_err());
    }

    #[test]
    fn addon_changes_disable_then_enable_what_differs() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (disable, enable) = addon_changes(
            &v(&["dns", "metallb:10.0.0.1-10.0.0.9", "ingress"]),
            &v(&["dns", "metallb:10.0.0.1-10.0.0.20", "cert-manager"]),
        );
        assert_eq!(disable, v(&["metallb", "ingress"]));
        assert_eq!(enable, v(&["metallb:10.0.0.1-10.0.0.20", "cert-manager"]));
        let same = v(&["dns"]);
        assert_eq!(addon_changes(&same, &same), (vec![], vec![]));
    }

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

    #[test]
    fn addon_arguments_are_split_at_the_first_colon() {
        assert_eq!(validate_addon("dns"), Ok(("dns", None)));
        assert_eq!(
            validate_addon("metallb:10.0.0.10-10.0.0.20,10.0.1.0/24"),
            Ok(("metallb", Some("10.0.0.10-10.0.0.20,10.0.1.0/24")))
        );
        assert_eq!(
            validate_addon("dns:1.1.1.1,8.8.8.8"),
            Ok(("dns", Some("1.1.1.1,8.8.8.8")))
        );
        for bad in [
            "",
            ":x",
            "dns:",
            "DNS",
            "dns:a b",
            "dns:a'b",
            "dns:$(x)",
            "dns:\"a\"",
            "a,b",
        ] {
            assert!(validate_addon(bad).is_err(), "{bad}");
        }
        assert_eq!(addon_name("metallb:10.0.0.1-10.0.0.9"), "metallb");
    }
}
