"""What ECS holds about the agent service: counts, last scaling, busy agents.

The autoscaler keeps no state between invocations, so the time of the last
scaling is read back from the service: the newest of its deployments'
``updatedAt`` and of its events that report tasks started or stopped.
A busy agent is a running task of the service with scale-in protection on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)

DESCRIBE_BATCH = 100  # DescribeTasks and GetTaskProtection take 100 tasks a call
SCALING_EVENT_WORDS = ("has started", "has stopped")


class ServiceNotFoundError(Exception):
    """The agent service is not in the cluster (or is being deleted)."""


@dataclass(frozen=True)
class ServiceState:
    """The agent service's counts and when it last changed size."""

    desired: int
    running: int
    pending: int
    last_scaling_at: datetime | None


def read_service(ecs: Any, cluster: str, service: str) -> ServiceState:
    """Describe the agent service."""
    answer = ecs.describe_services(cluster=cluster, services=[service])
    found = [s for s in answer.get("services", []) if s.get("status") == "ACTIVE"]
    if not found:
        raise ServiceNotFoundError(
            f"service {service!r} is not active in cluster {cluster!r} "
            f"({answer.get('failures') or 'not listed'}): check AGENT_SERVICE "
            "and ECS_CLUSTER, or deploy the agent service first"
        )
    described = found[0]
    return ServiceState(
        desired=int(described.get("desiredCount", 0)),
        running=int(described.get("runningCount", 0)),
        pending=int(described.get("pendingCount", 0)),
        last_scaling_at=_last_scaling(described),
    )


def count_busy(ecs: Any, cluster: str, service: str) -> int:
    """How many of the service's running tasks hold scale-in protection."""
    arns = list(_service_tasks(ecs, cluster, service))
    busy = 0
    for batch in _batches(arns):
        answer = ecs.get_task_protection(cluster=cluster, tasks=batch)
        busy += sum(
            1 for t in answer.get("protectedTasks", []) if t["protectionEnabled"]
        )
    logger.debug("%d of %d running %s tasks are busy", busy, len(arns), service)
    return busy


def _service_tasks(ecs: Any, cluster: str, service: str) -> Iterator[str]:
    # The group check guards against a list_tasks that ignores serviceName.
    pages = ecs.get_paginator("list_tasks").paginate(
        cluster=cluster, serviceName=service, desiredStatus="RUNNING"
    )
    arns = [arn for page in pages for arn in page.get("taskArns", [])]
    for batch in _batches(arns):
        for task in ecs.describe_tasks(cluster=cluster, tasks=batch).get("tasks", []):
            if task.get("group") == f"service:{service}":
                yield task["taskArn"]


def _last_scaling(service: dict[str, Any]) -> datetime | None:
    moments = [
        d.get("updatedAt") or d.get("createdAt") for d in service.get("deployments", [])
    ]
    moments += [
        event["createdAt"]
        for event in service.get("events", [])
        if any(word in event.get("message", "") for word in SCALING_EVENT_WORDS)
    ]
    present = [moment for moment in moments if moment is not None]
    return max(present) if present else None


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), DESCRIBE_BATCH):
        yield items[start : start + DESCRIBE_BATCH]
