"""Checking and stopping a running deployment from outside its process."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.deployment import Deployment
from harness.errors import NotReadyError
from harness.teardown import Reaper

logger = logging.getLogger(__name__)

DOWN_TIMEOUT = 120.0


@dataclass
class ServiceHealth:
    name: str
    status: str
    desired: int
    running: int
    pending: int
    events: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (
            self.status == "ACTIVE"
            and self.running == self.desired
            and self.pending == 0
        )


@dataclass
class HealthReport:
    services: list[ServiceHealth]

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(service.healthy for service in self.services)

    def render(self) -> str:
        header = ("service", "status", "desired", "running", "pending")
        lines = ["{:<24} {:<8} {:>7} {:>7} {:>7}".format(*header)]
        for service in self.services:
            lines.append(
                f"{service.name:<24} {service.status:<8} {service.desired:>7}"
                f" {service.running:>7} {service.pending:>7}"
            )
            lines.extend(f"    {event}" for event in service.events)
        lines.append("healthy" if self.healthy else "NOT healthy")
        return "\n".join(lines)


def check_deployment(deployment: Deployment) -> HealthReport:
    """Each service's counts and latest events, as ECS reports them."""
    ecs = deployment.client("ecs")
    names = list(deployment.outputs.get("services", {}))
    found: list[dict[str, Any]] = []
    if names:
        found = ecs.describe_services(
            cluster=deployment.settings.cluster_name, services=names
        )["services"]
    return HealthReport(
        services=[
            ServiceHealth(
                name=service["serviceName"],
                status=service["status"],
                desired=service["desiredCount"],
                running=service["runningCount"],
                pending=service["pendingCount"],
                events=[event["message"] for event in service.get("events", [])[:3]],
            )
            for service in found
        ]
    )


def stop_deployment(deployment: Deployment, outputs: Path) -> None:
    """Stop the ``up`` process that owns the deployment, or tear it down here."""
    pid = deployment.outputs.get("pid")
    if pid and psutil.pid_exists(int(pid)):
        logger.info("asking the up process %s to tear down", pid)
        os.kill(int(pid), signal.SIGTERM)
        _wait_gone(int(pid))
        return
    if deployment.outputs.get("aws_endpoint_url"):
        outputs.unlink(missing_ok=True)
        logger.info(
            "the emulated account ended with its process; nothing left to remove"
        )
        return
    Reaper(deployment.clients, deployment.settings).reap_run(deployment.settings.run_id)
    outputs.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether the process runs; a zombie has ended and waits only to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int) -> None:
    retrying = Retrying(
        retry=retry_if_result(lambda alive: alive),
        stop=stop_after_delay(DOWN_TIMEOUT),
        wait=wait_fixed(0.2),
        retry_error_callback=lambda state: (
            state.outcome.result() if state.outcome else True
        ),
    )
    if retrying(_alive, pid):
        raise NotReadyError(
            f"the up process {pid} did not stop within {DOWN_TIMEOUT:.0f}s"
        )
