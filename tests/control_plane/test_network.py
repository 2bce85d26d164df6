"""NetworkDiscovery and the network check against an emulated account."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.aws.clients import ClientFactory
from harness.aws.network import NetworkDiscovery
from harness.config import Settings
from harness.deploy import Deployer
from harness.errors import ConfigError
from harness.network_check import validate


def _vpc_without_way_out(ec2: Any, name: str) -> str:
    """A named VPC with one subnet and no internet gateway."""
    vpc = ec2.create_vpc(
        CidrBlock="10.9.0.0/16",
        TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": name}]}
        ],
    )["Vpc"]["VpcId"]
    ec2.create_subnet(
        VpcId=vpc,
        CidrBlock="10.9.1.0/24",
        AvailabilityZone="us-east-1a",
        TagSpecifications=[
            {"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": "only-one"}]}
        ],
    )
    return str(vpc)


def _name_subnets(ec2: Any, vpc_id: str) -> list[str]:
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    names = []
    for number, subnet in enumerate(subnets["Subnets"]):
        name = f"public-{number}"
        ec2.create_tags(
            Resources=[subnet["SubnetId"]], Tags=[{"Key": "Name", "Value": name}]
        )
        names.append(name)
    return names


def test_default_vpc_spans_several_zones(
    clients: ClientFactory, settings: Settings
) -> None:
    """Without settings, discovery takes the default VPC and all its subnets."""
    network = NetworkDiscovery(clients.client("ec2"), settings).discover_all()

    assert network.is_default
    assert len(network.subnets) == 6
    assert len(network.zones) == 6
    assert network.security_groups == ()


def test_named_subnets_are_taken_in_the_order_given(
    clients: ClientFactory, settings: Settings
) -> None:
    """SUBNET_NAMES picks exactly those subnets, in the order written."""
    ec2 = clients.client("ec2")
    discovery = NetworkDiscovery(ec2, settings)
    names = _name_subnets(ec2, discovery.get_default_vpc()["VpcId"])
    wanted = (names[3], names[1])

    network = NetworkDiscovery(
        ec2, replace(settings, subnet_names=wanted)
    ).discover_all()

    assert tuple(subnet.name for subnet in network.subnets) == wanted


def test_unknown_subnet_name_lists_the_existing_ones(
    clients: ClientFactory, settings: Settings
) -> None:
    """A subnet name that matches nothing is refused with the names that exist."""
    ec2 = clients.client("ec2")
    _name_subnets(ec2, NetworkDiscovery(ec2, settings).get_default_vpc()["VpcId"])
    wrong = replace(settings, subnet_names=("public-0", "private-9"))

    with pytest.raises(ConfigError, match=r"private-9.*public-0.*SUBNET_NAMES"):
        NetworkDiscovery(ec2, wrong).discover_all()


def test_named_security_group_is_found_and_unknown_is_refused(
    clients: ClientFactory, settings: Settings
) -> None:
    """SECURITY_GROUP_NAMES finds a group of the VPC; a wrong name lists real ones."""
    ec2 = clients.client("ec2")
    vpc_id = NetworkDiscovery(ec2, settings).get_default_vpc()["VpcId"]
    group = ec2.create_security_group(
        GroupName="corp-egress", Description="test", VpcId=vpc_id
    )["GroupId"]

    found = NetworkDiscovery(
        ec2, replace(settings, security_group_names=("corp-egress",))
    ).discover_all()

    assert [g.id for g in found.security_groups] == [group]
    with pytest.raises(ConfigError, match=r"corp-egres\b.*corp-egress"):
        NetworkDiscovery(
            ec2, replace(settings, security_group_names=("corp-egres",))
        ).discover_all()


def test_vpc_found_by_id(clients: ClientFactory, settings: Settings) -> None:
    """VPC_ID picks that VPC even when it has no name."""
    ec2 = clients.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]

    network = NetworkDiscovery(ec2, replace(settings, vpc_id=vpc_id)).discover_all()

    assert network.vpc_id == vpc_id
    assert network.vpc_name == ""


def test_default_vpc_passes_the_network_check(
    clients: ClientFactory, settings: Settings
) -> None:
    """The default VPC has two zones and a route out, as on AWS."""
    network = NetworkDiscovery(clients.client("ec2"), settings).discover_all()

    checks = validate(clients, settings, network)

    assert [check.ok for check in checks] == [True, True], checks


def test_network_check_names_each_failed_rule(
    clients: ClientFactory, settings: Settings
) -> None:
    """A one-zone VPC with no internet gateway fails both rules, naming the subnet."""
    ec2 = clients.client("ec2")
    _vpc_without_way_out(ec2, "isolated")
    named = replace(settings, vpc_name="isolated")
    network = NetworkDiscovery(ec2, named).discover_all()

    checks = {check.rule: check for check in validate(clients, named, network)}

    zones = checks["subnets in two availability zones (ALB)"]
    route = checks["outbound route for image pulls and AWS APIs"]
    assert not zones.ok
    assert not route.ok
    assert network.subnets[0].id in route.detail


def test_network_check_sees_the_paths_a_deploy_opened(
    clients: ClientFactory, settings: Settings
) -> None:
    """After a deploy the check finds ALB -> gateway and task <-> task open."""
    Deployer(settings, clients).deploy()
    network = NetworkDiscovery(clients.client("ec2"), settings).discover_all()

    checks = {check.rule: check.ok for check in validate(clients, settings, network)}

    assert checks["ALB -> gateway on 8080"]
    assert checks["task <-> task"]


def test_network_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m harness network --json --validate`` prints the VPC and checks."""
    status = cli.main(["network", "--json", "--validate", "--run-id", "cli00000"])

    printed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert printed["is_default"] is True
    assert {check["ok"] for check in printed["checks"]} == {True}


def test_network_command_refuses_an_unknown_vpc(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An unknown VPC name in aws.env exits 2 naming the VPCs that exist."""
    env_file = tmp_path / "aws.env"
    env_file.write_text("VPC_NAME=nowhere\n")

    status = cli.main(["network", "--env-file", str(env_file)])

    error = capsys.readouterr().err
    assert status == 2
    assert "no VPC is named or has the id 'nowhere'" in error
    assert "existing VPCs: vpc-" in error
