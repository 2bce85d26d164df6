"""moto's ECS, completed where its records differ from what ECS reports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto.ecs.models import EC2ContainerServiceBackend

from harness.aws.clients import ClientFactory
from harness.errors import DeployError
from harness.local import ecs_records
from harness.local.moto_server import MotoServer

REGION = "us-east-1"
NETWORK: dict[str, Any] = {}


@pytest.fixture(scope="module")
def ecs() -> Iterator[Any]:
    """An ECS client for an account with a cluster ``c`` and a definition ``d``."""
    ecs_records.install()
    with MotoServer() as server:
        clients = ClientFactory(REGION, endpoint_url=server.endpoint_url)
        client = clients.client("ecs")
        client.create_cluster(clusterName="c")
        client.register_task_definition(
            family="d",
            networkMode="awsvpc",
            containerDefinitions=[{"name": "x", "image": "x", "memory": 64}],
        )
        subnet = clients.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]
        NETWORK["awsvpcConfiguration"] = {"subnets": [subnet], "securityGroups": []}
        yield client


def _run(ecs: Any, count: int = 1) -> list[dict[str, Any]]:
    return list(
        ecs.run_task(
            cluster="c",
            taskDefinition="d",
            count=count,
            launchType="FARGATE",
            networkConfiguration=NETWORK,
        )["tasks"]
    )


def test_list_tasks_lists_running_tasks_by_default(ecs: Any) -> None:
    """Without desiredStatus only RUNNING tasks are listed, as on ECS."""
    first, second = _run(ecs, 2)
    ecs.stop_task(cluster="c", task=first["taskArn"], reason="done")

    listed = ecs.list_tasks(cluster="c")["taskArns"]
    stopped = ecs.list_tasks(cluster="c", desiredStatus="STOPPED")["taskArns"]

    assert first["taskArn"] not in listed
    assert second["taskArn"] in listed
    assert first["taskArn"] in stopped


def test_service_name_filter_keeps_only_that_service(ecs: Any) -> None:
    """serviceName lists no standalone task (moto ignores the filter)."""
    _run(ecs)

    listed = ecs.list_tasks(cluster="c", serviceName="nothing-runs-this")

    assert listed["taskArns"] == []


def test_deployment_configuration_is_kept(ecs: Any) -> None:
    """A service's deployment limits are stored and described back."""
    ecs.create_service(
        cluster="c",
        serviceName="limited",
        taskDefinition="d",
        desiredCount=0,
        deploymentConfiguration={"minimumHealthyPercent": 0, "maximumPercent": 100},
    )

    ecs.update_service(
        cluster="c",
        service="limited",
        deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 150},
    )

    found = ecs.describe_services(cluster="c", services=["limited"])["services"][0]
    assert found["deploymentConfiguration"] == {
        "minimumHealthyPercent": 50,
        "maximumPercent": 150,
    }


def test_changed_moto_method_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If moto's method is not the one completed, installing fails loudly."""
    monkeypatch.setattr(EC2ContainerServiceBackend, "describe_tasks", lambda: None)

    with pytest.raises(DeployError, match="not the one this completion"):
        ecs_records._patch(
            EC2ContainerServiceBackend,
            "describe_tasks",
            object(),
            lambda: None,
        )
