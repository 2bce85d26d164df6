"""Text renderings for people: tables the command line prints."""

from __future__ import annotations

from collections.abc import Sequence

from harness.aws.network import Network
from harness.network_check import Check


def network_table(network: Network, checks: Sequence[Check] = ()) -> str:
    default = " (default)" if network.is_default else ""
    lines = [
        f"VPC      {network.vpc_id} {network.vpc_name}{default}  {network.cidr}",
        "",
        f"{'subnet':<26} {'zone':<12} {'cidr':<18} {'public':<6} name",
    ]
    for subnet in network.subnets:
        lines.append(
            f"{subnet.id:<26} {subnet.zone:<12} {subnet.cidr:<18}"
            f" {'yes' if subnet.public else 'no':<6} {subnet.name}"
        )
    if network.security_groups:
        lines += ["", "security groups"]
        lines += [f"  {group.id:<24} {group.name}" for group in network.security_groups]
    if checks:
        lines += ["", "checks"]
        lines += [
            f"  [{'ok' if check.ok else 'FAIL':>4}] {check.rule}: {check.detail}"
            for check in checks
        ]
    return "\n".join(lines)
