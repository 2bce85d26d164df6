"""Waiting until a deployment's services are steady, and where its parts answer.

Both work through the ECS API alone, so they serve the ``aws`` and ``local``
targets alike.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.errors import NotReadyError

logger = logging.getLogger(__name__)

STEADY_TIMEOUT = 300.0


def _service_state(ecs: Any, cluster: str, names: list[str]) -> list[dict[str, Any]]:
    return list(ecs.describe_services(cluster=cluster, services=names)["services"])


def is_steady(service: dict[str, Any]) -> bool:
    """Whether ECS runs the desired tasks of one finished deployment."""
    deployments = service.get("deployments", [])
    return (
        service["runningCount"] == service["desiredCount"]
        and service["pendingCount"] == 0
        and len(deployments) == 1
        and deployments[0].get("rolloutState", "COMPLETED") == "COMPLETED"
    )


def unhealthy_containers(ecs: Any, cluster: str, service: str) -> list[str]:
    """Health-checked containers of the service's running tasks not yet HEALTHY."""
    arns = ecs.list_tasks(cluster=cluster, serviceName=service)["taskArns"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
    waiting = []
    for task in tasks:
        if task["lastStatus"] != "RUNNING":
            waiting.append(
                f"{task['taskArn'].rsplit('/', 1)[-1]} ({task['lastStatus']})"
            )
            continue
        definition = ecs.describe_task_definition(
            taskDefinition=task["taskDefinitionArn"]
        )["taskDefinition"]
        checked = {
            c["name"]
            for c in definition["containerDefinitions"]
            if c.get("healthCheck")
        }
        waiting += [
            f"{task['taskArn'].rsplit('/', 1)[-1]}/{c['name']}"
            for c in task["containers"]
            if c["name"] in checked and c.get("healthStatus") != "HEALTHY"
        ]
    return waiting


def outdated_tasks(ecs: Any, cluster: str, service: dict[str, Any]) -> list[str]:
    """Tasks of the service not yet on its primary deployment's task definition."""
    name = service["serviceName"]
    arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
    primary = service.get("deployments", [{}])[0].get("taskDefinition")
    return [
        t["taskArn"] for t in tasks if primary and t["taskDefinitionArn"] != primary
    ]


def _ready(ecs: Any, cluster: str, names: list[str]) -> list[dict[str, Any]]:
    found = _service_state(ecs, cluster, names)
    if (
        all(is_steady(s) for s in found)
        and not any(outdated_tasks(ecs, cluster, s) for s in found)
        and not any(unhealthy_containers(ecs, cluster, name) for name in names)
    ):
        return []
    return found


def wait_until_steady(
    ecs: Any,
    cluster: str,
    names: list[str],
    timeout: float = STEADY_TIMEOUT,
    *,
    logs: Any = None,
) -> None:
    """Poll until every named service is steady and its health checks pass."""
    retrying = Retrying(
        retry=retry_if_result(bool),
        stop=stop_after_delay(timeout),
        wait=wait_fixed(1.0),
    )
    try:
        retrying(_ready, ecs, cluster, names)
    except RetryError as error:
        last = error.last_attempt.result()
        raise NotReadyError(
            f"services not steady within {timeout:.0f}s",
            resource=", ".join(names),
            details=_explain(ecs, cluster, last, logs),
        ) from None
    logger.info("services steady: %s", ", ".join(names))


def _explain(
    ecs: Any, cluster: str, services: list[dict[str, Any]], logs: Any = None
) -> str:
    lines = []
    for service in services:
        lines.append(
            f"{service['serviceName']}: desired {service['desiredCount']},"
            f" running {service['runningCount']}, pending {service['pendingCount']}"
        )
        lines += [f"  event: {e['message']}" for e in service.get("events", [])[:5]]
        waiting = unhealthy_containers(ecs, cluster, service["serviceName"])
        if waiting:
            lines.append(f"  not healthy yet: {', '.join(waiting)}")
    stopped = ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"]
    if stopped:
        for task in ecs.describe_tasks(cluster=cluster, tasks=stopped[:5])["tasks"]:
            lines.append(
                f"  stopped task {task['taskArn']}: {task.get('stoppedReason')}"
            )
            lines += [
                f"    {c['name']}: exit {c.get('exitCode')} {c.get('reason') or ''}"
                for c in task.get("containers", [])
            ]
            lines += _last_logs(logs, ecs, task)
    return "\n".join(lines)


def _last_logs(logs: Any, ecs: Any, task: dict[str, Any], count: int = 5) -> list[str]:
    """The last lines each container of a stopped task wrote to CloudWatch Logs."""
    if logs is None:
        return []
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    task_id = task["taskArn"].rsplit("/", 1)[-1]
    lines = []
    for container in definition["taskDefinition"]["containerDefinitions"]:
        options = container.get("logConfiguration", {}).get("options", {})
        if "awslogs-group" not in options:
            continue
        stream = f"{options.get('awslogs-stream-prefix')}/{container['name']}/{task_id}"
        try:
            events = logs.get_log_events(
                logGroupName=options["awslogs-group"], logStreamName=stream, limit=count
            )["events"]
        except ClientError:
            continue
        lines += [f"      {container['name']}| {e['message']}" for e in events]
    return lines


def task_address(task: dict[str, Any]) -> str:
    """The private address of a task's ENI."""
    for attachment in task.get("attachments", []):
        for detail in attachment.get("details", []):
            if detail["name"] == "privateIPv4Address":
                return str(detail["value"])
    raise NotReadyError(f"task {task['taskArn']} has no network address yet")


def running_task(ecs: Any, cluster: str, service: str) -> dict[str, Any]:
    """One RUNNING task of ``service``."""
    arns = ecs.list_tasks(cluster=cluster, serviceName=service)["taskArns"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
    running = [task for task in tasks if task["lastStatus"] == "RUNNING"]
    if not running:
        raise NotReadyError(f"service {service} has no running task", resource=cluster)
    return dict(running[0])


def backing_endpoints(
    ecs: Any, cluster: str, service: str, credentials: tuple[str, str]
) -> dict[str, str]:
    """Where RabbitMQ, Redis and Chroma of the service's task answer."""
    host = task_address(running_task(ecs, cluster, service))
    user, password = credentials
    return {
        "rabbitmq_url": f"amqp://{user}:{password}@{host}:5672/%2F",
        "rabbitmq_management_url": f"http://{host}:15672",
        "redis_url": f"redis://{host}:6379/0",
        "chroma_url": f"http://{host}:8000",
    }
