"""Task metadata v4 and the ECS agent's task-protection endpoint, as tasks see them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from moto.ecs.models import ecs_backends

from harness.aws.clients import ClientFactory
from harness.local import ecs_completion, ecs_records
from harness.local.moto_server import MotoServer
from harness.local.task_endpoints import TaskEndpoints, TaskEntry
from services.shared.ecs_manager import AgentEndpoint

REGION = "us-east-1"


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[MotoServer, Any]]:
    """A moto account with cluster ``c`` and task definition ``d``."""
    ecs_completion.install()
    with MotoServer() as server:
        clients = ClientFactory(REGION, endpoint_url=server.endpoint_url)
        ecs = clients.client("ecs")
        ecs.create_cluster(clusterName="c")
        ecs.register_task_definition(
            family="d",
            networkMode="awsvpc",
            containerDefinitions=[{"name": "agent", "image": "a", "memory": 64}],
        )
        yield server, ecs


@pytest.fixture
def endpoints(account: tuple[MotoServer, Any]) -> Iterator[TaskEndpoints]:
    """The endpoints, serving on loopback."""
    served = TaskEndpoints(account[1]).start()
    yield served
    served.stop()


def _task(server: MotoServer, group: str) -> ecs_records.LocalTask:
    backend = ecs_backends[server.account_id][REGION]
    subnet = next(iter(_subnets(server)))
    return ecs_records.create_task(
        backend,
        cluster=backend._get_cluster("c"),
        definition=backend.describe_task_definition("d"),
        group=group,
        started_by="test",
        network={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": []}},
        address="10.213.0.9",
    )


def _subnets(server: MotoServer) -> list[str]:
    ec2 = ClientFactory(REGION, endpoint_url=server.endpoint_url).client("ec2")
    return [subnet["SubnetId"] for subnet in ec2.describe_subnets()["Subnets"]]


def _serve(endpoints: TaskEndpoints, task: ecs_records.LocalTask) -> dict[str, str]:
    endpoints.add(task.id, TaskEntry(task.cluster_arn, task.task_arn))
    return endpoints.environment(task.id, "agent")


def test_metadata_names_the_task_and_its_address(
    account: tuple[MotoServer, Any], endpoints: TaskEndpoints
) -> None:
    """``$ECS_CONTAINER_METADATA_URI_V4/task`` gives cluster, ARN and family."""
    task = _task(account[0], "service:s")
    env = _serve(endpoints, task)

    body = httpx.get(env["ECS_CONTAINER_METADATA_URI_V4"] + "/task").json()
    mine = httpx.get(env["ECS_CONTAINER_METADATA_URI_V4"]).json()

    assert body["TaskARN"] == task.task_arn
    assert body["Cluster"] == task.cluster_arn
    assert (body["Family"], body["Revision"]) == ("d", "1")
    assert mine["Name"] == "agent"
    assert mine["Networks"][0]["IPv4Addresses"] == ["10.213.0.9"]


def test_agent_sets_protection_seen_by_the_ecs_api(
    account: tuple[MotoServer, Any], endpoints: TaskEndpoints
) -> None:
    """The platform's own client protects the task through the agent endpoint."""
    server, ecs = account
    task = _task(server, "service:s")
    agent = AgentEndpoint(_serve(endpoints, task)["ECS_AGENT_URI"])

    state = agent.set(True, 30)

    seen = ecs.get_task_protection(cluster="c", tasks=[task.task_arn])
    assert state.enabled
    assert state.task_arn == task.task_arn
    assert seen["protectedTasks"][0]["protectionEnabled"] is True
    assert agent.set(False, 0).enabled is False
    assert agent.get().enabled is False


def test_bad_expiry_is_an_error_with_http_400(
    account: tuple[MotoServer, Any], endpoints: TaskEndpoints
) -> None:
    """An expiry outside 1-2880 minutes answers 400 with the API's error code."""
    task = _task(account[0], "service:s")
    url = _serve(endpoints, task)["ECS_AGENT_URI"] + "/task-protection/v1/state"

    answer = httpx.put(url, json={"ProtectionEnabled": True, "ExpiresInMinutes": 0})

    assert answer.status_code == 400
    assert answer.json()["error"]["Code"] == "InvalidParameterException"


def test_standalone_task_gets_a_failure(
    account: tuple[MotoServer, Any], endpoints: TaskEndpoints
) -> None:
    """A task outside any service cannot be protected: TASK_NOT_VALID."""
    task = _task(account[0], "family:d")
    url = _serve(endpoints, task)["ECS_AGENT_URI"] + "/task-protection/v1/state"

    answer = httpx.put(url, json={"ProtectionEnabled": True})

    assert answer.json()["failure"]["Reason"] == "TASK_NOT_VALID"
