"""The local stack's moto, with a small zone catalogue and carrier IPs.

Every place that starts the local stack's moto runs this file with the venv's python, with the
arguments `moto_server` takes (`.venv/bin/python local/moto_catalogue.py -H 127.0.0.1 -p 47501`):
it extends the pinned moto (5.2.5, `local/requirements.txt`) in memory, then hands over to moto's
own server entry point. It relies on moto 5.2.5's internals on purpose; a moto upgrade re-checks
the five patches below.

moto knows standard availability zones only. For placement to be exercised end to end the
catalogue adds, in us-east-1 (the region of the e2e clusters), with fixed names that tests use:

| zone                      | zone id             | type            | group                | opt-in         |
|---------------------------|---------------------|-----------------|----------------------|----------------|
| us-east-1-bos-1a          | use1-bos1-az1       | local-zone      | us-east-1-bos-1      | opted-in       |
| us-east-1-wl1-bos-wlz-1   | use1-wl1-bos-wlz1   | wavelength-zone | us-east-1-wl1        | opted-in       |
| us-east-1-mia-1a          | use1-mia1-az1       | local-zone      | us-east-1-mia-1      | not-opted-in   |

each with parent zone us-east-1a (use1-az6), and the instance types each one offers
(`DescribeInstanceTypeOfferings`, location types availability-zone and availability-zone-id):
the Boston Local Zone t3.medium, t3.xlarge, c5.2xlarge, m5.2xlarge, r5.2xlarge; the Wavelength
zone t3.medium, t3.xlarge, r5.2xlarge, g4dn.2xlarge; the Miami Local Zone as Boston. moto's own
zones answer `opt-in-not-required`, their region as group and network border group.

The patches:

1. zones: the three `Zone`s join `RegionsAndZonesBackend.zones["us-east-1"]` (so `CreateSubnet`
   with `AvailabilityZone=<name>` works) with the attributes the DescribeAvailabilityZones
   serializer reads by their snake_case names (`opt_in_status`, `group_name`,
   `network_border_group`, `parent_zone_name`, `parent_zone_id`); DescribeAvailabilityZones leaves
   out zones that are not opted in unless `AllAvailabilityZones=true`, as EC2 does.
2. offerings: appended to moto's `INSTANCE_TYPE_OFFERINGS` tables.
3. carrier IPs: a RunInstances whose primary network interface says
   `AssociateCarrierIpAddress=true` gets no public IPv4 and a carrier IP from 155.146.0.0/16
   (unique in the process), shown as the interface's `association.carrierIp` in
   DescribeInstances and DescribeNetworkInterfaces. It is kept while the interface lives. An
   instance launched with interfaces lists its primary interface's groups as its SecurityGroups,
   as in EC2 (moto lists none).
4. volume types: a Wavelength zone offers EBS gp2 volumes only (AWS Wavelength's documented
   limitation; moto makes any type anywhere). RunInstances into a Wavelength zone (by
   `SubnetId`, the primary interface's `SubnetId`, or `Placement.AvailabilityZone`) whose block
   device mappings ask for any other `VolumeType` fails before anything is made, with a 400
   `InvalidParameterCombination` naming the type and the zone (the message is ours; the code is
   the one EC2 gives a parameter that does not fit the rest of the request); so does CreateVolume
   there. A mapping that names no type gets moto's default, gp2.
5. Lambda clients of executions (speed only): moto's state-machine interpreter builds a new boto3
   client for every Lambda Task it runs (botocore loads the Lambda model and endpoint rules each
   time, ~0.1 s of CPU) and ignores the Task's credentials; one client per region and endpoint
   serves every Task (botocore clients are safe to share between threads).
"""

from __future__ import annotations

import ipaddress
import os
import random
import sys
import threading
from typing import Any

if __name__ == "__main__" and os.environ.get("MECPLANE_MOTO_ZYGOTE"):
    # Under `make test`: this stack's moto is forked from the warm one of local/moto_zygote.py,
    # before this file imports moto at all; when that zygote does not answer, on as usual.
    from moto_zygote import run_as_fork

    run_as_fork("moto")

from moto.ec2.exceptions import InvalidParameterCombination
from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend, Zone
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.responses.availability_zones_and_regions import AvailabilityZonesAndRegions

REGION = "us-east-1"
PARENT_ZONE = ("us-east-1a", "use1-az6")

# (name, zone id, zone type, group, opt-in status, instance types offered)
CATALOGUE = [
    (
        "us-east-1-bos-1a",
        "use1-bos1-az1",
        "local-zone",
        "us-east-1-bos-1",
        "opted-in",
        ["t3.medium", "t3.xlarge", "c5.2xlarge", "m5.2xlarge", "r5.2xlarge"],
    ),
    (
        "us-east-1-wl1-bos-wlz-1",
        "use1-wl1-bos-wlz1",
        "wavelength-zone",
        "us-east-1-wl1",
        "opted-in",
        ["t3.medium", "t3.xlarge", "r5.2xlarge", "g4dn.2xlarge"],
    ),
    (
        "us-east-1-mia-1a",
        "use1-mia1-az1",
        "local-zone",
        "us-east-1-mia-1",
        "not-opted-in",
        ["t3.medium", "t3.xlarge", "c5.2xlarge", "m5.2xlarge", "r5.2xlarge"],
    ),
]

CARRIER_POOL = ipaddress.IPv4Network("155.146.0.0/16")

# The only EBS volume type a Wavelength zone offers.
WAVELENGTH_VOLUME_TYPE = "gp2"


def add_zones() -> None:
    """Patch 1: moto's own zones get their standard attributes, the catalogue's zones join."""
    for zones in RegionsAndZonesBackend.zones.values():
        for zone in zones:
            zone.opt_in_status = "opt-in-not-required"
            zone.group_name = zone.region_name
            zone.network_border_group = zone.region_name
    known = {z.name for z in RegionsAndZonesBackend.zones[REGION]}
    for name, zone_id, zone_type, group, opt_in, _ in CATALOGUE:
        if name in known:
            continue
        zone = Zone(region_name=REGION, name=name, zone_id=zone_id, zone_type=zone_type)
        zone.opt_in_status = opt_in
        zone.group_name = group
        zone.network_border_group = group
        zone.parent_zone_name, zone.parent_zone_id = PARENT_ZONE
        RegionsAndZonesBackend.zones[REGION].append(zone)

    original = AvailabilityZonesAndRegions.describe_availability_zones

    def describe_availability_zones(self: AvailabilityZonesAndRegions) -> Any:
        result = original(self)
        if str(self._get_param("AllAvailabilityZones", False)).lower() != "true":
            zones = result.result["AvailabilityZones"]
            result.result["AvailabilityZones"] = [
                z for z in zones if getattr(z, "opt_in_status", None) != "not-opted-in"
            ]
        return result

    AvailabilityZonesAndRegions.describe_availability_zones = describe_availability_zones


def add_offerings() -> None:
    """Patch 2: the catalogue's instance-type offerings, by zone name and by zone id."""
    for location_type, index in (("availability-zone", 0), ("availability-zone-id", 1)):
        table = INSTANCE_TYPE_OFFERINGS[location_type].setdefault(REGION, [])
        present = {(o["InstanceType"], o["Location"]) for o in table}
        for entry in CATALOGUE:
            location = entry[index]
            for instance_type in entry[5]:
                if (instance_type, location) not in present:
                    table.append(
                        {
                            "InstanceType": instance_type,
                            "Location": location,
                            "LocationType": location_type,
                        }
                    )


_carrier_ips_used: set[str] = set()


def _new_carrier_ip() -> str:
    hosts = CARRIER_POOL.num_addresses - 2
    if len(_carrier_ips_used) >= hosts:
        raise RuntimeError(f"no carrier IP left in {CARRIER_POOL}")
    while True:
        ip = str(CARRIER_POOL.network_address + random.randint(1, hosts))
        if ip not in _carrier_ips_used:
            _carrier_ips_used.add(ip)
            return ip


def add_carrier_ips() -> None:
    """Patch 3: `AssociateCarrierIpAddress` on the primary interface gives a carrier IP."""
    original_prep_nics = Instance.prep_nics

    def prep_nics(self: Instance, nic_spec: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        primary = next((n for n in nic_spec if int(n.get("DeviceIndex", 0)) == 0), None)
        carrier = primary is not None and str(primary.get("AssociateCarrierIpAddress")).lower() == "true"
        if carrier:
            # No public IPv4 where a carrier IP is asked for, whatever the subnet maps by default.
            primary["AssociatePublicIpAddress"] = False
            kwargs["associate_public_ip"] = False
            self.associate_public_ip = False
        original_prep_nics(self, nic_spec, *args, **kwargs)
        if carrier:
            self.nics[0].carrier_ip = _new_carrier_ip()
        if not self.security_groups and 0 in self.nics:
            # As in EC2, an instance launched with interfaces is in its primary interface's groups.
            self.security_groups = list(self.nics[0].group_set)

    Instance.prep_nics = prep_nics

    original_association = NetworkInterface.association

    def association(self: NetworkInterface) -> dict[str, Any]:
        result = original_association.fget(self)
        carrier_ip = getattr(self, "carrier_ip", None)
        if carrier_ip:
            result["carrierIp"] = carrier_ip
            result["ipOwnerId"] = "amazon"
        return result

    NetworkInterface.association = property(association)


def _refuse_volume_type(zone_name: str | None, volume_type: str | None) -> None:
    """Raises EC2's 400 for a volume type other than gp2 in a Wavelength zone."""
    wavelength = {entry[0] for entry in CATALOGUE if entry[2] == "wavelength-zone"}
    if zone_name in wavelength and (volume_type or WAVELENGTH_VOLUME_TYPE) != WAVELENGTH_VOLUME_TYPE:
        raise InvalidParameterCombination(
            msg=f"The volume type {volume_type} is not supported in {zone_name}: "
            f"a Wavelength Zone supports {WAVELENGTH_VOLUME_TYPE} volumes only"
        )


def add_volume_types() -> None:
    """Patch 4: a Wavelength zone refuses any EBS volume type but gp2."""
    original_run_instances = InstanceBackend.run_instances

    def run_instances(self: Any, image_id: str, count: int, *args: Any, **kwargs: Any) -> Any:
        subnet_id = kwargs.get("subnet_id")
        if not subnet_id:
            primary = next(
                (n for n in kwargs.get("nics") or [] if int(n.get("DeviceIndex", 0)) == 0), None
            )
            subnet_id = primary.get("SubnetId") if primary else None
        zone = self.get_subnet(subnet_id).availability_zone if subnet_id else kwargs.get("placement")
        for mapping in kwargs.get("block_device_mappings") or []:
            _refuse_volume_type(zone, (mapping.get("Ebs") or {}).get("VolumeType"))
        return original_run_instances(self, image_id, count, *args, **kwargs)

    InstanceBackend.run_instances = run_instances

    original_create_volume = EBSBackend.create_volume

    def create_volume(self: Any, size: int, zone_name: str, *args: Any, **kwargs: Any) -> Any:
        _refuse_volume_type(zone_name, kwargs.get("volume_type"))
        return original_create_volume(self, size, zone_name, *args, **kwargs)

    EBSBackend.create_volume = create_volume


def share_lambda_clients() -> None:
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    new_client = lambda_eval_utils.boto_client_for
    clients: dict[tuple[str, str, str], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (region, service, moto_server_port())
        with lock:
            if key not in clients:
                clients[key] = new_client(region=region, service=service, state_credentials=state_credentials)
            return clients[key]

    lambda_eval_utils.boto_client_for = boto_client_for


def patch_moto() -> None:
    """Applies the five patches (local/moto_zygote.py applies them before it forks its motos)."""
    add_zones()
    add_offerings()
    add_carrier_ips()
    add_volume_types()
    share_lambda_clients()


def main() -> None:
    patch_moto()
    from moto.server import main as moto_server

    moto_server(sys.argv[1:])


if __name__ == "__main__":
    main()
