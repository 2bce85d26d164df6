"""A deploy's plan: every mutating AWS call it makes, in order, for review.

The deploy runs for real, into a scratch emulated account, so the plan is the
same sequence of calls the deployer would make against an empty real account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.config import Settings
from harness.deploy import Deployer
from harness.targets import open_account

READ_ONLY_PREFIXES = ("Describe", "List", "Get", "Discover")
# Parameters that name what a call acts on; shown so the plan reads as a list
# of resources rather than of operations.
NAMING_KEYS = (
    "RoleName",
    "PolicyName",
    "PolicyArn",
    "GroupName",
    "Name",
    "clusterName",
    "serviceName",
    "service",
    "family",
    "logGroupName",
    "repositoryName",
    "taskDefinition",
    "desiredCount",
    "Port",
    "FromPort",
)


@dataclass(frozen=True)
class PlannedCall:
    service: str
    operation: str
    names: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        named = " ".join(f"{key}={value}" for key, value in self.names)
        return f"{self.service} {self.operation} {named}".rstrip()


def _names(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    found = []
    for key in NAMING_KEYS:
        if key in params and isinstance(params[key], str | int):
            value = str(params[key])
            if "/" in value and value.startswith("arn:"):
                value = value.rsplit("/", 1)[-1]
            found.append((key, value))
    for permission in params.get("IpPermissions", []):
        found.append(("port", str(permission.get("FromPort", "all"))))
    return tuple(found)


def plan(settings: Settings) -> list[PlannedCall]:
    """The mutating calls a first deploy of ``settings`` makes, in order."""
    calls: list[PlannedCall] = []

    def observe(service: str, operation: str, params: dict[str, Any]) -> None:
        if not operation.startswith(READ_ONLY_PREFIXES):
            calls.append(PlannedCall(service, operation, _names(params)))

    with open_account(settings, observer=observe, scratch=True) as clients:
        Deployer(settings, clients).deploy()
    return calls
