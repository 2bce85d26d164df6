"""Whether a network can host the platform, one named rule at a time."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.aws.clients import ClientFactory
from harness.aws.network import Network
from harness.aws.security_groups import GATEWAY_PORT, NFS_PORT
from harness.config import Settings


@dataclass(frozen=True)
class Check:
    rule: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _zones(network: Network) -> Check:
    zones = network.zones
    return Check(
        "subnets in two availability zones (ALB)",
        len(zones) >= 2,
        f"zones: {', '.join(zones) or 'none'}",
    )


def _route_tables(ec2: Any, network: Network) -> Check:
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [network.vpc_id]}]
    )["RouteTables"]
    main = next(
        (t for t in tables if any(a.get("Main") for a in t.get("Associations", []))),
        None,
    )
    without = []
    for subnet in network.subnets:
        table = next(
            (
                t
                for t in tables
                if any(
                    a.get("SubnetId") == subnet.id for a in t.get("Associations", [])
                )
            ),
            main,
        )
        routes = table.get("Routes", []) if table else []
        if not any(
            r.get("DestinationCidrBlock") == "0.0.0.0/0"
            and (r.get("GatewayId", "").startswith("igw-") or r.get("NatGatewayId"))
            for r in routes
        ):
            without.append(subnet.id)
    return Check(
        "outbound route for image pulls and AWS APIs",
        not without,
        f"no internet or NAT route: {', '.join(without)}"
        if without
        else "every subnet routes out",
    )


def _allows(group: dict[str, Any], port: int, source: str) -> bool:
    for rule in group.get("IpPermissions", []):
        if rule.get("IpProtocol") != "-1" and not (
            rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535)
        ):
            continue
        if any(
            pair.get("GroupId") == source for pair in rule.get("UserIdGroupPairs", [])
        ):
            return True
    return False


def _group_paths(ec2: Any, settings: Settings) -> list[Check]:
    names = [f"{settings.prefix}-{role}" for role in ("alb", "tasks", "efs")]
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": names}]
    )["SecurityGroups"]
    groups = {g["GroupName"].rsplit("-", 1)[-1]: g for g in found}
    if "alb" not in groups or "tasks" not in groups:
        return []
    alb, tasks = groups["alb"], groups["tasks"]
    checks = [
        Check(
            f"ALB -> gateway on {GATEWAY_PORT}",
            _allows(tasks, GATEWAY_PORT, alb["GroupId"]),
            f"{tasks['GroupId']} ingress from {alb['GroupId']}",
        ),
        Check(
            "task <-> task",
            _allows(tasks, 5672, tasks["GroupId"]),
            f"{tasks['GroupId']} ingress from itself",
        ),
    ]
    if "efs" in groups:
        efs = groups["efs"]
        checks.append(
            Check(
                f"NFS {NFS_PORT} from tasks to EFS",
                _allows(efs, NFS_PORT, tasks["GroupId"]),
                f"{efs['GroupId']} ingress from {tasks['GroupId']}",
            )
        )
    return checks


def validate(
    clients: ClientFactory, settings: Settings, network: Network
) -> list[Check]:
    """Every rule the platform needs of the network, each passed or failed."""
    ec2 = clients.client("ec2")
    return [_zones(network), _route_tables(ec2, network), *_group_paths(ec2, settings)]
