"""Finding the VPC, subnets and security groups the platform is deployed into."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from harness.config import Settings
from harness.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subnet:
    id: str
    name: str
    zone: str
    cidr: str
    public: bool


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    name: str


@dataclass(frozen=True)
class Network:
    """Where the platform goes: one VPC and the subnets and groups within it."""

    vpc_id: str
    vpc_name: str
    cidr: str
    is_default: bool
    subnets: tuple[Subnet, ...]
    security_groups: tuple[SecurityGroup, ...]

    @property
    def subnet_ids(self) -> list[str]:
        return [subnet.id for subnet in self.subnets]

    @property
    def zones(self) -> list[str]:
        return sorted({subnet.zone for subnet in self.subnets})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name(resource: dict[str, Any]) -> str:
    for tag in resource.get("Tags", []):
        if tag["Key"] == "Name":
            return str(tag["Value"])
    return ""


class NetworkDiscovery:
    """Finds the named VPC, or the default one, and what lies inside it."""

    def __init__(self, ec2: Any, settings: Settings) -> None:
        self._ec2 = ec2
        self._settings = settings

    def get_default_vpc(self) -> dict[str, Any]:
        vpcs = self._ec2.describe_vpcs(
            Filters=[{"Name": "is-default", "Values": ["true"]}]
        )["Vpcs"]
        if not vpcs:
            raise ConfigError(
                "this account has no default VPC in the region; set VPC_NAME or"
                " VPC_ID in aws.env to the VPC to deploy into",
                region=self._settings.region,
            )
        return dict(vpcs[0])

    def find_vpc(self) -> dict[str, Any]:
        """The VPC named by VPC_ID or VPC_NAME, else the default VPC."""
        wanted = self._settings.vpc_id or self._settings.vpc_name
        if not wanted:
            return self.get_default_vpc()
        vpcs = self._ec2.describe_vpcs()["Vpcs"]
        for vpc in vpcs:
            if wanted in (vpc["VpcId"], _name(vpc)):
                return dict(vpc)
        existing = ", ".join(
            f"{vpc['VpcId']} ({_name(vpc) or 'no name'})" for vpc in vpcs
        )
        raise ConfigError(
            f"no VPC is named or has the id {wanted!r};"
            f" existing VPCs: {existing or 'none'};"
            " fix VPC_NAME / VPC_ID in aws.env",
            region=self._settings.region,
        )

    def find_subnets(self, vpc_id: str) -> tuple[Subnet, ...]:
        """Every subnet of the VPC, or the ones SUBNET_NAMES names."""
        found = self._ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
        )["Subnets"]
        subnets = [
            Subnet(
                id=item["SubnetId"],
                name=_name(item),
                zone=item["AvailabilityZone"],
                cidr=item["CidrBlock"],
                public=bool(item.get("MapPublicIpOnLaunch")),
            )
            for item in found
        ]
        subnets.sort(key=lambda subnet: (subnet.zone, subnet.id))
        wanted = self._settings.subnet_names
        if not wanted:
            return tuple(subnets)
        return tuple(self._pick(subnets, wanted, "subnet", "SUBNET_NAMES"))

    def find_security_groups(self, vpc_id: str) -> tuple[SecurityGroup, ...]:
        """The groups SECURITY_GROUP_NAMES names (none when it is unset)."""
        wanted = self._settings.security_group_names
        if not wanted:
            return ()
        found = self._ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
        )["SecurityGroups"]
        groups = [SecurityGroup(id=g["GroupId"], name=g["GroupName"]) for g in found]
        return tuple(
            self._pick(groups, wanted, "security group", "SECURITY_GROUP_NAMES")
        )

    def _pick(
        self, items: list[Any], wanted: tuple[str, ...], kind: str, key: str
    ) -> list[Any]:
        by_name = {name: item for item in items for name in (item.name, item.id)}
        missing = [name for name in wanted if name not in by_name]
        if missing:
            existing = ", ".join(sorted(item.name or item.id for item in items))
            raise ConfigError(
                f"no {kind} named {', '.join(missing)} in the VPC; existing: "
                f"{existing or 'none'}; fix {key} in aws.env",
                region=self._settings.region,
            )
        return [by_name[name] for name in wanted]

    def discover_all(self) -> Network:
        vpc = self.find_vpc()
        network = Network(
            vpc_id=vpc["VpcId"],
            vpc_name=_name(vpc),
            cidr=vpc["CidrBlock"],
            is_default=bool(vpc.get("IsDefault")),
            subnets=self.find_subnets(vpc["VpcId"]),
            security_groups=self.find_security_groups(vpc["VpcId"]),
        )
        logger.info(
            "network: %s with %d subnets in %s",
            network.vpc_id,
            len(network.subnets),
            ", ".join(network.zones),
        )
        return network
