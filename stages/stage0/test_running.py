"""The deployed task really runs: healthy containers, health through the ALB, and
a service that replaces a task whose essential container dies."""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.deployment import Deployment

SERVICE = "euglena-service"
EXPECTED_CONTAINERS = {"gateway", "agent", "redis", "rabbitmq", "chroma"}


def _eventually(check: Any, timeout: float = 180.0) -> Any:
    for attempt in Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(1.0),
        retry=retry_if_exception_type((AssertionError, httpx.TransportError)),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def _running_tasks(deployment: Deployment) -> list[dict[str, Any]]:
    ecs = deployment.client("ecs")
    cluster = deployment.settings.cluster_name
    arns = ecs.list_tasks(cluster=cluster, serviceName=SERVICE)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return [task for task in tasks if task["lastStatus"] == "RUNNING"]


def test_every_container_reports_healthy(deployment: Deployment) -> None:
    """The service's one task runs all five containers, each HEALTHY."""

    def healthy() -> dict[str, Any]:
        tasks = _running_tasks(deployment)
        assert len(tasks) == 1, tasks
        health = {c["name"]: c.get("healthStatus") for c in tasks[0]["containers"]}
        assert health == dict.fromkeys(EXPECTED_CONTAINERS, "HEALTHY"), health
        return tasks[0]

    task = _eventually(healthy)

    assert task["healthStatus"] == "HEALTHY"


def test_health_passes_through_the_load_balancer(deployment: Deployment) -> None:
    """GET /health through the ALB answers 200 with every dependency's status."""

    def through_alb() -> dict[str, Any]:
        answer = httpx.get(deployment.outputs["gateway_url"] + "/health", timeout=10)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    body = _eventually(through_alb)

    assert body["status"] == "ok"
    address = _address(_one_running(deployment))
    elbv2 = deployment.client("elbv2")
    group = elbv2.describe_target_groups(Names=[f"{deployment.settings.prefix}-gw"])
    arn = group["TargetGroups"][0]["TargetGroupArn"]
    targets = elbv2.describe_target_health(TargetGroupArn=arn)
    states = {
        t["Target"]["Id"]: t["TargetHealth"]["State"]
        for t in targets["TargetHealthDescriptions"]
    }
    assert states[address] == "healthy", states
    assert set(states.values()) <= {"healthy", "draining"}, states


def _address(task: dict[str, Any]) -> str:
    details = task["attachments"][0]["details"]
    return next(d["value"] for d in details if d["name"] == "privateIPv4Address")


def test_dead_essential_container_is_replaced(deployment: Deployment) -> None:
    """Killing the gateway process stops its task; the service starts a new one."""
    before = _eventually(lambda: _one_running(deployment))

    deployment.faults.kill_container(before["taskArn"], "gateway")

    def replaced() -> dict[str, Any]:
        task = _one_running(deployment)
        assert task["taskArn"] != before["taskArn"]
        return task

    _eventually(replaced, timeout=300)
    ecs = deployment.client("ecs")
    stopped = ecs.describe_tasks(
        cluster=deployment.settings.cluster_name, tasks=[before["taskArn"]]
    )["tasks"][0]
    events = ecs.describe_services(
        cluster=deployment.settings.cluster_name, services=[SERVICE]
    )["services"][0]["events"]
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert any(before["taskArn"].split("/")[-1] in e["message"] for e in events)


def _one_running(deployment: Deployment) -> dict[str, Any]:
    tasks = _running_tasks(deployment)
    assert len(tasks) == 1, tasks
    return tasks[0]
