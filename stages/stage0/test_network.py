"""Network discovery finds the default VPC or the named one, and refuses others."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from harness.aws.network import NetworkDiscovery
from harness.deployment import Deployment
from harness.errors import ConfigError
from harness.probes.inventory import inventory


@pytest.fixture
def named_vpc(deployment: Deployment) -> Iterator[str]:
    """A VPC named ``euglena-test-<run>`` with subnets in two zones."""
    ec2 = deployment.client("ec2")
    name = f"euglena-test-{deployment.settings.run_id}"
    vpc = ec2.create_vpc(
        CidrBlock="10.77.0.0/16",
        TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": name}]}
        ],
    )["Vpc"]["VpcId"]
    zones = [
        z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]
    ][:2]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.77.{i}.0/24", AvailabilityZone=zone
        )["Subnet"]["SubnetId"]
        for i, zone in enumerate(zones)
    ]
    yield name
    for subnet in subnets:
        ec2.delete_subnet(SubnetId=subnet)
    ec2.delete_vpc(VpcId=vpc)


def test_discovery_finds_the_default_vpc(deployment: Deployment) -> None:
    """Without a VPC setting, discovery picks the default VPC and its subnets."""
    network = NetworkDiscovery(
        deployment.client("ec2"), deployment.settings
    ).discover_all()

    assert network.is_default
    assert len(network.zones) >= 2
    assert network.subnets


def test_discovery_finds_the_named_vpc(deployment: Deployment, named_vpc: str) -> None:
    """With VPC_NAME set, discovery picks that VPC and only its subnets."""
    settings = replace(deployment.settings, vpc_name=named_vpc)

    network = NetworkDiscovery(deployment.client("ec2"), settings).discover_all()

    assert network.vpc_name == named_vpc
    assert not network.is_default
    assert {subnet.cidr for subnet in network.subnets} == {
        "10.77.0.0/24",
        "10.77.1.0/24",
    }


def test_unknown_vpc_fails_before_anything_is_created(deployment: Deployment) -> None:
    """An unknown VPC name stops the deploy, listing real VPCs, creating nothing."""
    settings = replace(deployment.other_run("novpc000"), vpc_name="no-such-vpc")

    with pytest.raises(ConfigError, match="no-such-vpc") as caught:
        deployment.deployer(settings).deploy()

    assert "existing VPCs" in str(caught.value)
    assert inventory(deployment.clients, settings) == {}
