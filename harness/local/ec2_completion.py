"""Completes moto's EC2 where the platform meets a gap: the default VPC's way out.

On AWS every default VPC has an internet gateway and a main route table that
sends ``0.0.0.0/0`` to it, which is how Fargate tasks in its public subnets
pull images. moto creates the default VPC without either.
"""

from __future__ import annotations

from typing import Any

from moto.ec2.models import EC2Backend

_ORIGINAL = EC2Backend.create_default_vpc


def _create_default_vpc(self: Any) -> Any:
    vpc = _ORIGINAL(self)
    gateway = self.create_internet_gateway()
    self.attach_internet_gateway(gateway.id, vpc.id)
    for table in self.route_tables.values():
        if table.vpc_id == vpc.id and table.main_association_id:
            self.create_route(table.id, "0.0.0.0/0", gateway_id=gateway.id)
    return vpc


def install() -> None:
    """Make every default VPC created from now on look as AWS makes it."""
    EC2Backend.create_default_vpc = _create_default_vpc  # type: ignore[method-assign]
