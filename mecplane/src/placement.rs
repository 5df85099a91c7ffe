//! Where a cluster's nodes may go, checked against EC2 before anything is made: the subnets a
//! spec names exist and share one VPC (the spec's `vpc_id`, when it names one); each subnet's
//! zone is usable (a Local or Wavelength zone's group opted in to) and offers the instance type.
//! A spec that names a VPC and no subnets gets the VPC's subnets chosen here (standard zones
//! only, one per zone, at most [`MAX_CHOSEN_SUBNETS`]).
//!
//! One place for these facts, used twice: by `POST /clusters` (a refusal is a `422` naming the
//! field, before anything is claimed) and by the `security-group` stage (a subnet can vanish
//! between the request and the stage). The checks are pure ([`check_subnets`], [`check_zones`],
//! [`pick_subnets`]); [`check`] and [`choose_subnets`] do the lookups around them through the
//! [`SecurityGroups`] and [`Zones`] ports.
//!
//! It also holds what a zone's type decides about its nodes' disks: the root volume type
//! ([`root_volume_type`]: gp3, and gp2 in Wavelength zones, which offer no other), used by the
//! launch stage for the request, the record and its event.

use crate::error::{CloudError, StageError};
use crate::ports::{SecurityGroups, Subnet, Zone, Zones};
use crate::record::Role;
use crate::spec::{ClusterSpec, ValidationError};

/// The zone type of a standard availability zone (`DescribeAvailabilityZones`' `ZoneType`).
pub const STANDARD_ZONE: &str = "availability-zone";
/// The zone type of a Wavelength zone: no public IPv4, nodes get carrier IPs.
pub const WAVELENGTH_ZONE: &str = "wavelength-zone";
/// A node's root volume type where EC2 offers it: every standard zone and the Local Zones.
pub const ROOT_VOLUME_TYPE: &str = "gp3";
/// The zone types where [`ROOT_VOLUME_TYPE`] is not offered: (zone type, the volume type used
/// there, what a message calls such zones). EC2 has no API that lists a zone's EBS volume types,
/// so this is AWS's documentation, kept in this one place: Wavelength Zones support only General
/// Purpose SSD `gp2` volumes (AWS Wavelength Developer Guide, "Quotas and considerations": the
/// EBS volume type supported in Wavelength Zones is gp2); a gp3 root there fails RunInstances.
const VOLUME_FALLBACKS: &[(&str, &str, &str)] = &[(WAVELENGTH_ZONE, "gp2", "Wavelength zones")];
/// Most subnets chosen for a spec that names only its VPC (control planes spread over them).
pub const MAX_CHOSEN_SUBNETS: usize = 3;
/// How many of a zone's instance types a placement error lists.
const MAX_OFFERED_SHOWN: usize = 20;

/// The root volume type of a node in a zone of `zone_type` (`None`: not known, as for the default
/// subnet, which is always in a standard zone): [`ROOT_VOLUME_TYPE`], or what is used instead
/// where that is not offered ([`VOLUME_FALLBACKS`]).
pub fn root_volume_type(zone_type: Option<&str>) -> &'static str {
    VOLUME_FALLBACKS
        .iter()
        .find(|(kind, ..)| Some(*kind) == zone_type)
        .map_or(ROOT_VOLUME_TYPE, |(_, volume, _)| volume)
}

/// What a launch says about a root volume in `zone` (of `zone_type`) that is not
/// [`ROOT_VOLUME_TYPE`]: `root volume gp2 in us-east-1-wl1-bos-wlz-1 (gp3 is not offered in
/// Wavelength zones)`. `None` where the root volume is the usual one.
pub fn volume_fallback(zone: &str, zone_type: Option<&str>) -> Option<String> {
    let (_, volume, zones) = VOLUME_FALLBACKS
        .iter()
        .find(|(kind, ..)| Some(*kind) == zone_type)?;
    Some(format!(
        "root volume {volume} in {zone} ({ROOT_VOLUME_TYPE} is not offered in {zones})"
    ))
}

/// Why a placement was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The spec cannot be placed as asked: the field at fault and why.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// EC2 could not be asked; asking again may work.
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

impl From<PlacementError> for StageError {
    fn from(e: PlacementError) -> Self {
        match e {
            PlacementError::Invalid(e) => e.into(),
            PlacementError::Cloud(e) => e.into(),
        }
    }
}

/// What the lookup found for a spec's subnets (all empty for a spec without subnets: the
/// default VPC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// The named subnets, as EC2 described them.
    pub subnets: Vec<Subnet>,
    /// Their zones.
    pub zones: Vec<Zone>,
    /// The zones the nodes go to, each with its type, sorted and once each.
    pub placed: Vec<(String, String)>,
}

impl Placement {
    /// The zone of one of the named subnets.
    pub fn zone_of(&self, subnet_id: &str) -> Option<&Zone> {
        let subnet = self.subnets.iter().find(|s| s.subnet_id == subnet_id)?;
        self.zones.iter().find(|z| z.name == subnet.zone)
    }
}

/// The subnets a spec names, each with its entry (`subnet_ids[1]`, `worker_subnet_ids[0]`):
/// the control planes' (a lone `subnet_id` of an older record as `subnet_ids[0]`), then the
/// workers' own.
pub fn named_subnets(spec: &ClusterSpec) -> impl Iterator<Item = (String, &String)> {
    spec.subnets(Role::ControlPlane)
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("subnet_ids[{i}]"), id))
        .chain(
            spec.worker_subnet_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (format!("worker_subnet_ids[{i}]"), id)),
        )
}

/// Checks the spec's subnets against those EC2 found (pure): each exists, all in one VPC — the
/// spec's `vpc_id` when it names one. The error names the list entry (`subnet_ids[1]`,
/// `worker_subnet_ids[0]`).
pub fn check_subnets(spec: &ClusterSpec, found: &[Subnet]) -> Result<(), ValidationError> {
    let mut first: Option<&Subnet> = None;
    for (at, id) in named_subnets(spec) {
        let Some(subnet) = found.iter().find(|s| s.subnet_id == *id) else {
            return Err(ValidationError {
                field: at,
                message: format!("no subnet {id} in {}", spec.region),
            });
        };
        if let Some(vpc) = spec.vpc_id.as_deref().filter(|v| *v != subnet.vpc_id) {
            return Err(ValidationError {
                field: at,
                message: format!(
                    "{id} is in {}, not in {vpc} (vpc_id): a cluster's subnets are in its VPC",
                    subnet.vpc_id
                ),
            });
        }
        match first {
            Some(f) if f.vpc_id != subnet.vpc_id => {
                return Err(ValidationError {
                    field: at,
                    message: format!(
                        "{id} is in {}, {} in {}: a cluster's subnets share one VPC",
                        subnet.vpc_id, f.subnet_id, f.vpc_id
                    ),
                })
            }
            Some(_) => {}
            None => first = Some(subnet),
        }
    }
    Ok(())
}

/// Why [`check_zones`] refused a placement.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRefusal {
    pub error: ValidationError,
    /// The zone that lacks the instance type: its offerings complete the message.
    pub lacking_type: Option<String>,
}

/// Checks the zones of the spec's subnets (pure): each usable (a Local or Wavelength zone's
/// group opted in to), each offering the instance type (`offered`: the zones that do). The error
/// names the subnet's entry, or `instance_type`; a zone EC2 did not describe is left to EC2.
/// Answers the zones the nodes go to, with their types.
pub fn check_zones(
    spec: &ClusterSpec,
    subnets: &[Subnet],
    zones: &[Zone],
    offered: &[String],
) -> Result<Vec<(String, String)>, ZoneRefusal> {
    let mut placed = Vec::new();
    for (at, id) in named_subnets(spec) {
        let Some(subnet) = subnets.iter().find(|s| s.subnet_id == *id) else {
            continue;
        };
        let Some(zone) = zones.iter().find(|z| z.name == subnet.zone) else {
            continue;
        };
        if !zone.usable {
            return Err(ZoneRefusal {
                    error: ValidationError {
                        field: at,
                        message: format!(
                            "{id} is in {}, a {} of zone group {} the account has not opted in to: aws ec2 modify-availability-zone-group --group-name {} --opt-in-status opted-in",
                            zone.name, zone.zone_type, zone.group, zone.group
                        ),
                    },
                    lacking_type: None,
                });
        }
        if !offered.contains(&zone.name) {
            return Err(ZoneRefusal {
                error: ValidationError {
                    field: "instance_type".into(),
                    message: format!(
                        "{} is not offered in {} ({}, subnet {id})",
                        spec.instance_type, zone.name, zone.zone_type
                    ),
                },
                lacking_type: Some(zone.name.clone()),
            });
        }
        // A network load balancer spans Availability Zones only (ELB's CreateLoadBalancer: Local
        // Zone subnets are for Application Load Balancers, Wavelength has none).
        if spec.api_endpoint == crate::spec::ApiEndpoint::Nlb
            && at.starts_with("subnet_ids")
            && zone.zone_type != STANDARD_ZONE
        {
            return Err(ZoneRefusal {
                error: ValidationError {
                    field: "api_endpoint".into(),
                    message: format!(
                        "nlb needs the control planes in availability zones: {id} ({at}) is in {}, a {}; name availability-zone subnets in subnet_ids (workers may go to worker_subnet_ids) or use api_endpoint node",
                        zone.name, zone.zone_type
                    ),
                },
                lacking_type: None,
            });
        }
        placed.push((zone.name.clone(), zone.zone_type.clone()));
    }
    placed.sort();
    placed.dedup();
    Ok(placed)
}

/// The subnets of a VPC a spec that names no subnets gets (pure): in standard availability zones
/// that may be used, one per zone (the lowest subnet id), at most [`MAX_CHOSEN_SUBNETS`], zones in
/// name order — those offering the instance type (`offered`) when any does. The error names
/// `vpc_id` when the VPC has no subnet in a standard zone (or does not exist).
pub fn pick_subnets(
    spec: &ClusterSpec,
    vpc_id: &str,
    subnets: &[Subnet],
    zones: &[Zone],
    offered: &[String],
) -> Result<Vec<String>, ValidationError> {
    let standard = |s: &&Subnet| {
        s.vpc_id == vpc_id
            && zones
                .iter()
                .any(|z| z.name == s.zone && z.zone_type == STANDARD_ZONE && z.usable)
    };
    let mut candidates: Vec<&Subnet> = subnets.iter().filter(standard).collect();
    if candidates.is_empty() {
        let message = if subnets.iter().any(|s| s.vpc_id == vpc_id) {
            format!(
                "{vpc_id} has subnets only outside the standard availability zones of {}: name them in subnet_ids",
                spec.region
            )
        } else {
            format!(
                "{vpc_id} has no subnet in {} (no such VPC there, or it has no subnets)",
                spec.region
            )
        };
        return Err(ValidationError {
            field: "vpc_id".into(),
            message,
        });
    }
    if candidates.iter().any(|s| offered.contains(&s.zone)) {
        candidates.retain(|s| offered.contains(&s.zone));
    }
    candidates.sort_by(|a, b| (&a.zone, &a.subnet_id).cmp(&(&b.zone, &b.subnet_id)));
    candidates.dedup_by(|a, b| a.zone == b.zone);
    Ok(candidates
        .into_iter()
        .take(MAX_CHOSEN_SUBNETS)
        .map(|s| s.subnet_id.clone())
        .collect())
}

/// What a lookup learned from EC2 for one spec: subnets, their zones, and those of the zones that
/// offer the spec's instance type. [`choose_subnets`] hands it to [`check`], which then asks only
/// for what it does not know yet.
#[derive(Debug, Default, PartialEq)]
pub struct Seen {
    subnets: Vec<Subnet>,
    zones: Vec<Zone>,
    offered: Vec<String>,
}

/// For a spec that names its VPC and no control-plane subnets: looks up the VPC's subnets and
/// their zones and writes the chosen ones into the spec's `subnet_ids` (and `subnet_id`), so every
/// later stage and change sees concrete subnets. Answers what it saw when it chose (for
/// [`check`]); any other spec is left as it is, with `None`.
pub async fn choose_subnets<E: SecurityGroups + Zones + ?Sized>(
    ec2: &E,
    spec: &mut ClusterSpec,
) -> Result<Option<Seen>, PlacementError> {
    let Some(vpc_id) = spec.vpc_id.clone() else {
        return Ok(None);
    };
    if !spec.subnets(Role::ControlPlane).is_empty() {
        return Ok(None);
    }
    let subnets = ec2.vpc_subnets(&vpc_id).await?;
    let names = zone_names(&subnets);
    let (zones, offered) = if names.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            ec2.zones(&names).await?,
            offered_zones(ec2, &names, &spec.instance_type).await?,
        )
    };
    let chosen = pick_subnets(spec, &vpc_id, &subnets, &zones, &offered)?;
    spec.subnet_id = chosen.first().cloned();
    spec.subnet_ids = chosen;
    Ok(Some(Seen {
        subnets,
        zones,
        offered,
    }))
}

/// Looks up the spec's subnets, their zones and the instance type's offerings there — only what
/// `seen` (by [`choose_subnets`] for this spec) does not hold already — then [`check_subnets`] and
/// [`check_zones`]; a zone that does not offer the type is named with what it does offer. A spec
/// without subnets (the default VPC) makes no call.
pub async fn check<E: SecurityGroups + Zones + ?Sized>(
    ec2: &E,
    spec: &ClusterSpec,
    seen: Option<&Seen>,
) -> Result<Placement, PlacementError> {
    let ids: Vec<String> = named_subnets(spec).map(|(_, id)| id.clone()).collect();
    if ids.is_empty() {
        return Ok(Placement::default());
    }
    let nothing = Seen::default();
    let seen = seen.unwrap_or(&nothing);
    let mut subnets: Vec<Subnet> = seen
        .subnets
        .iter()
        .filter(|s| ids.contains(&s.subnet_id))
        .cloned()
        .collect();
    let mut unseen: Vec<String> = ids
        .into_iter()
        .filter(|id| !subnets.iter().any(|s| &s.subnet_id == id))
        .collect();
    unseen.sort();
    unseen.dedup();
    if !unseen.is_empty() {
        subnets.extend(ec2.subnets(&unseen).await?);
    }
    check_subnets(spec, &subnets)?;
    let names = zone_names(&subnets);
    let mut zones: Vec<Zone> = seen
        .zones
        .iter()
        .filter(|z| names.contains(&z.name))
        .cloned()
        .collect();
    let mut offered: Vec<String> = seen
        .offered
        .iter()
        .filter(|z| names.contains(z))
        .cloned()
        .collect();
    let new_names: Vec<String> = names
        .into_iter()
        .filter(|n| !zones.iter().any(|z| &z.name == n))
        .collect();
    if !new_names.is_empty() {
        zones.extend(ec2.zones(&new_names).await?);
        offered.extend(offered_zones(ec2, &new_names, &spec.instance_type).await?);
    }
    match check_zones(spec, &subnets, &zones, &offered) {
        Ok(placed) => Ok(Placement {
            subnets,
            zones,
            placed,
        }),
        Err(ZoneRefusal {
            error: mut e,
            lacking_type: Some(zone),
        }) => {
            let mut types: Vec<String> = ec2
                .offerings(std::slice::from_ref(&zone), None)
                .await?
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            types.sort();
            types.dedup();
            e.message = format!("{}; offered there: {}", e.message, listed(&types));
            Err(e.into())
        }
        Err(ZoneRefusal { error, .. }) => Err(error.into()),
    }
}

/// The zones of `subnets`, sorted, once each.
fn zone_names(subnets: &[Subnet]) -> Vec<String> {
    let mut names: Vec<String> = subnets.iter().map(|s| s.zone.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The zones among `names` that offer `instance_type`.
async fn offered_zones<E: Zones + ?Sized>(
    ec2: &E,
    names: &[String],
    instance_type: &str,
) -> Result<Vec<String>, CloudError> {
    Ok(ec2
        .offerings(names, Some(instance_type))
        .await?
        .into_iter()
        .map(|(zone, _)| zone)
        .collect())
}

/// `a, b, c` (the first [`MAX_OFFERED_SHOWN`], then how many more), or `none`.
fn listed(types: &[String]) -> String {
    if types.is_empty() {
        return "none".into();
    }
    let shown = types.len().min(MAX_OFFERED_SHOWN);
    let more = types.len() - shown;
    let mut text = types[..shown].join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeCloud;
    use crate::stages::fixtures::{self, zone};

    #[tokio::test]
    async fn a_vpc_alone_gets_one_standard_subnet_per_zone_at_most_three() {
        let cloud = FakeCloud::new();
        for (id, az) in [
            ("subnet-0000000b2", "us-east-1b"),
            ("subnet-0000000a1", "us-east-1a"),
            ("subnet-0000000a0", "us-east-1a"),
            ("subnet-0000000c0", "us-east-1c"),
            ("subnet-0000000d0", "us-east-1d"),
        ] {
            cloud.add_subnet(id, "vpc-0000000a", az);
        }
        cloud.add_zone(zone("us-east-1-bos-1a", "local-zone", true), &["t3.medium"]);
        cloud.add_subnet("subnet-000000f00", "vpc-0000000a", "us-east-1-bos-1a");
        cloud.add_subnet("subnet-000000e00", "vpc-0000000b", "us-east-1e");
        let mut spec = fixtures::spec(3, 2);
        spec.vpc_id = Some("vpc-0000000a".into());
        let seen = choose_subnets(&cloud, &mut spec).await.unwrap();
        assert!(seen.is_some());
        assert_eq!(
            spec.subnet_ids,
            ["subnet-0000000a0", "subnet-0000000b2", "subnet-0000000c0"]
        );
        assert_eq!(spec.subnet_id.as_deref(), Some("subnet-0000000a0"));
        // The choice looked up the VPC's subnets, their zones and the offerings: three calls.
        assert_eq!(cloud.lookup_calls(), 3);
        let placed = [
            ("us-east-1a".to_string(), STANDARD_ZONE.to_string()),
            ("us-east-1b".into(), STANDARD_ZONE.into()),
            ("us-east-1c".into(), STANDARD_ZONE.into()),
        ];
        // The check after it asks EC2 nothing more; without what was seen it asks again.
        assert_eq!(
            check(&cloud, &spec, seen.as_ref()).await.unwrap().placed,
            placed
        );
        assert_eq!(cloud.lookup_calls(), 3);
        assert_eq!(check(&cloud, &spec, None).await.unwrap().placed, placed);
        assert_eq!(cloud.lookup_calls(), 6);
        // A worker subnet the choice did not see is looked up, in a zone it saw: one call.
        cloud.add_subnet("subnet-0000000b9", "vpc-0000000a", "us-east-1b");
        spec.worker_subnet_ids = vec!["subnet-0000000b9".into()];
        assert_eq!(
            check(&cloud, &spec, seen.as_ref()).await.unwrap().placed,
            placed
        );
        assert_eq!(cloud.lookup_calls(), 7);
        // One of another VPC is still refused, naming it.
        spec.worker_subnet_ids = vec!["subnet-000000e00".into()];
        match check(&cloud, &spec, seen.as_ref()).await {
            Err(PlacementError::Invalid(e)) => assert_eq!(e.field, "worker_subnet_ids[0]"),
            other => panic!("{other:?}"),
        }
        spec.worker_subnet_ids.clear();
        // Chosen once: a spec with subnets is left as it is.
        assert!(choose_subnets(&cloud, &mut spec).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_vpc_without_standard_subnets_is_refused_naming_vpc_id() {
        let cloud = FakeCloud::new();
        cloud.add_zone(zone("us-east-1-bos-1a", "local-zone", true), &["t3.medium"]);
        cloud.add_subnet("subnet-000000f00", "vpc-0000000a", "us-east-1-bos-1a");
        let mut spec = fixtures::spec(1, 0);
        for (vpc, says) in [
            (
                "vpc-0000000a",
                "only outside the standard availability zones",
            ),
            ("vpc-000000ff", "no subnet in us-east-1"),
        ] {
            spec.vpc_id = Some(vpc.into());
            match choose_subnets(&cloud, &mut spec).await {
                Err(PlacementError::Invalid(e)) => {
                    assert_eq!(e.field, "vpc_id");
                    assert!(e.message.contains(says), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(spec.subnet_ids.is_empty());
    }

    #[test]
    fn zones_offering_the_type_are_preferred() {
        let mut spec = fixtures::spec(1, 0);
        spec.instance_type = "t4g.medium".into();
        let subnets = [
            Subnet {
                subnet_id: "subnet-0000000a0".into(),
                vpc_id: "vpc-0000000a".into(),
                zone: "us-east-1a".into(),
            },
            Subnet {
                subnet_id: "subnet-0000000e0".into(),
                vpc_id: "vpc-0000000a".into(),
                zone: "us-east-1e".into(),
            },
        ];
        let zones = [
            zone("us-east-1a", STANDARD_ZONE, true),
            zone("us-east-1e", STANDARD_ZONE, true),
        ];
        let picked = pick_subnets(
            &spec,
            "vpc-0000000a",
            &subnets,
            &zones,
            &["us-east-1e".into()],
        );
        assert_eq!(picked.unwrap(), ["subnet-0000000e0"]);
        // None offers it: every standard zone, and the check names instance_type later.
        let picked = pick_subnets(&spec, "vpc-0000000a", &subnets, &zones, &[]);
        assert_eq!(picked.unwrap(), ["subnet-0000000a0", "subnet-0000000e0"]);
    }

    #[test]
    fn subnets_outside_the_named_vpc_are_refused_naming_the_entry() {
        let mut spec = fixtures::spec(1, 1);
        spec.vpc_id = Some("vpc-0000000a".into());
        spec.subnet_ids = vec!["subnet-0000000a0".into()];
        spec.worker_subnet_ids = vec!["subnet-0000000b0".into()];
        let found = [
            Subnet {
                subnet_id: "subnet-0000000a0".into(),
                vpc_id: "vpc-0000000a".into(),
                zone: "us-east-1a".into(),
            },
            Subnet {
                subnet_id: "subnet-0000000b0".into(),
                vpc_id: "vpc-0000000b".into(),
                zone: "us-east-1b".into(),
            },
        ];
        let e = check_subnets(&spec, &found).unwrap_err();
        assert_eq!(e.field, "worker_subnet_ids[0]");
        assert!(e.message.contains("not in vpc-0000000a"), "{e}");
    }

    #[test]
    fn root_volumes_are_gp3_except_in_wavelength_zones_which_say_so() {
        for kind in [Some(STANDARD_ZONE), Some("local-zone"), None] {
            assert_eq!(root_volume_type(kind), "gp3");
            assert_eq!(volume_fallback("us-east-1-bos-1a", kind), None);
        }
        assert_eq!(root_volume_type(Some(WAVELENGTH_ZONE)), "gp2");
        assert_eq!(
            volume_fallback("us-east-1-wl1-bos-wlz-1", Some(WAVELENGTH_ZONE)).as_deref(),
            Some("root volume gp2 in us-east-1-wl1-bos-wlz-1 (gp3 is not offered in Wavelength zones)")
        );
    }

    #[test]
    fn long_offering_lists_are_cut() {
        let types: Vec<String> = (0..25).map(|i| format!("t{i:02}.large")).collect();
        let text = listed(&types);
        assert!(text.starts_with("t00.large, t01.large") && text.ends_with(" and 5 more"));
        assert_eq!(listed(&[]), "none");
    }
}
