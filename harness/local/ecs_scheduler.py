"""The ECS service scheduler of the local target: services get real tasks.

moto stores services but never runs them. :class:`ServiceScheduler` watches
every service of one emulated account and region and does what ECS's scheduler
does, through a :class:`Launcher` that really runs task definitions:

- starts tasks until the primary deployment has the desired count, replacing
  tasks that stop on their own;
- rolls a new task definition out one task at a time within the service's
  ``minimumHealthyPercent`` and ``maximumPercent``;
- on scale-in stops only tasks without scale-in protection, and waits, saying
  so in the service's events, while every candidate is protected;
- mirrors each task's processes into its ECS record (last status, health,
  containers, exit codes, stop code and reason) and keeps the service's
  running and pending counts, deployments and events as ECS reports them;
- registers a task in its service's target groups once it runs and is
  healthy, and deregisters it when it stops.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from moto.ecs.models import EC2ContainerServiceBackend, Service, ecs_backends

from harness.local import ecs_completion, ecs_records
from harness.local.ecs_records import LocalTask

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.5
ACTIVE_STATES = ("PROVISIONING", "PENDING", "ACTIVATING")


@dataclass(frozen=True)
class ContainerState:
    """What the data plane knows of one container's process."""

    name: str
    status: str  # PENDING, RUNNING or STOPPED
    health: str = "UNKNOWN"  # UNKNOWN, HEALTHY or UNHEALTHY
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TaskState:
    """What the data plane knows of one task's processes."""

    containers: tuple[ContainerState, ...]
    stopped: bool = False
    stop_code: str | None = None
    stopped_reason: str | None = None


class RunningTask(Protocol):
    """A task definition being run by a launcher."""

    address: str

    def state(self) -> TaskState: ...

    def stop(self, reason: str) -> None: ...


class Launcher(Protocol):
    """Runs a task definition's containers, in a network of the task's own."""

    def launch(self, record: LocalTask, definition: dict[str, Any]) -> RunningTask: ...


@dataclass
class _Placed:
    record: LocalTask
    process: RunningTask
    registered: list[str] = field(default_factory=list)


class ServiceScheduler:
    """Runs every service of one account and region; see the module docstring."""

    def __init__(
        self,
        account_id: str,
        region: str,
        launcher: Launcher,
        *,
        elbv2: Any,
        definition_of: Callable[[str], dict[str, Any]],
        tick: float = TICK_SECONDS,
    ) -> None:
        self._backend: EC2ContainerServiceBackend = ecs_backends[account_id][region]
        self._launcher = launcher
        self._elbv2 = elbv2
        self._definition_of = definition_of
        self._tick = tick
        self._tasks: dict[str, _Placed] = {}
        self._steady: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self.errors: list[str] = []

    def start(self) -> ServiceScheduler:
        ecs_completion.install()
        ecs_records.install()
        ecs_records.on_stop(self._backend, self._stop_requested)
        self._thread = threading.Thread(
            target=self._run, name="ecs-scheduler", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop scheduling and stop every task still running."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        ecs_records.forget(self._backend)
        with self._lock:
            for placed in self._tasks.values():
                placed.process.stop("Scheduler stopped")

    def tick(self) -> None:
        """One pass of the scheduler over every service (the loop calls it)."""
        with self._lock:
            for placed in list(self._tasks.values()):
                self._mirror(placed)
            for service in list(self._backend.services.values()):
                if service.status == "ACTIVE":
                    self._reconcile(service)
                else:
                    self._drain(service)

    def _run(self) -> None:
        while not self._stopping.wait(self._tick):
            try:
                self.tick()
            except Exception as error:  # the loop must outlive one bad pass
                logger.exception("scheduler pass failed")
                self.errors.append(repr(error))

    def _stop_requested(self, record: LocalTask, reason: str) -> None:
        with self._lock:
            placed = self._tasks.get(record.task_arn)
            if placed is not None:
                self._begin_stop(placed, reason, record.stop_code or "UserInitiated")

    def _begin_stop(self, placed: _Placed, reason: str, code: str) -> None:
        record = placed.record
        if any(
            c.essential and c.last_status == "STOPPED" for c in record.local_containers
        ):
            return  # already ending on its own; its own reason stands
        record.desired_status = "STOPPED"
        record.stopped_reason = record.stopped_reason or reason
        record.stop_code = record.stop_code or code
        record.stopping_at = record.stopping_at or datetime.now(UTC)
        self._deregister(placed)
        placed.process.stop(reason)

    def _mirror(self, placed: _Placed) -> None:
        record, state = placed.record, placed.process.state()
        by_name = {container.name: container for container in state.containers}
        for container in record.local_containers:
            seen = by_name.get(container.name)
            if seen is not None:
                container.last_status = seen.status
                container.health_status = seen.health
                container.exit_code = seen.exit_code
                container.reason = seen.reason
        record.health_status = _task_health(record)
        if state.stopped:
            self._finish(placed, state)
        elif record.desired_status == "STOPPED":
            record.status = "DEACTIVATING"
        elif all(
            c.last_status == "RUNNING" for c in record.local_containers if c.essential
        ):
            if record.status != "RUNNING":
                record.status = "RUNNING"
                record.started_at = datetime.now(UTC)
        else:
            record.status = "PENDING"

    def _finish(self, placed: _Placed, state: TaskState) -> None:
        record = placed.record
        record.status = "STOPPED"
        record.desired_status = "STOPPED"
        record.stopped_at = datetime.now(UTC)
        record.stop_code = (
            record.stop_code or state.stop_code or "EssentialContainerExited"
        )
        record.stopped_reason = record.stopped_reason or state.stopped_reason or ""
        self._deregister(placed)
        del self._tasks[record.task_arn]
        service = self._service_of(record)
        if service is not None:
            _event(service, f"has stopped 1 running tasks: (task {record.id}).")
        logger.info("task %s stopped: %s", record.id, record.stopped_reason)

    def _service_of(self, record: LocalTask) -> Service | None:
        if record.service_name is None:
            return None
        key = f"{record.cluster_name}:{record.service_name}"
        service: Service | None = self._backend.services.get(key)
        return service

    def _drain(self, service: Service) -> None:
        """A deleted service's tasks stop, as ECS drains them."""
        for placed in self._live(service):
            self._begin_stop(placed, "Service deleted", "ServiceSchedulerInitiated")
        service.running_count = 0
        service.pending_count = 0

    def _reconcile(self, service: Service) -> None:
        primary = self._primary_definition(service)
        live = self._live(service)
        new = [p for p in live if p.record.task_definition_arn == primary]
        old = [p for p in live if p.record.task_definition_arn != primary]
        limits = ecs_records.deployment_configuration(service)
        ceiling = max(
            1, math.floor(service.desired_count * limits["maximumPercent"] / 100)
        )
        floor = math.ceil(service.desired_count * limits["minimumHealthyPercent"] / 100)
        if len(new) < service.desired_count and len(live) < ceiling:
            self._launch(service, primary)
        elif old:
            self._retire(service, old, len(live) - 1 >= floor or not new)
        elif len(new) > service.desired_count:
            self._scale_in(service, new, len(new) - service.desired_count)
        for placed in live:
            self._register(service, placed)
        self._count(service, primary)

    def _primary_definition(self, service: Service) -> str:
        wanted = str(service.task_definition)
        definition = self._backend.describe_task_definition(wanted)
        return str(definition.arn)

    def _live(self, service: Service) -> list[_Placed]:
        return [
            placed
            for placed in self._tasks.values()
            if placed.record.service_name == service.name
            and placed.record.cluster_name == service.cluster_name
            and placed.record.desired_status == "RUNNING"
        ]

    def _launch(self, service: Service, definition_arn: str) -> None:
        definition = self._backend.describe_task_definition(definition_arn)
        cluster = self._backend._get_cluster(service.cluster_name)
        network = service.network_configuration or {
            "awsvpcConfiguration": {"subnets": [], "securityGroups": []}
        }
        record = ecs_records.create_task(
            self._backend,
            cluster=cluster,
            definition=definition,
            group=f"service:{service.name}",
            started_by=str(service.deployments[0]["id"]) if service.deployments else "",
            network=network,
            address="",
        )
        process = self._launcher.launch(record, self._definition_of(definition_arn))
        record.assign_address(process.address)
        self._tasks[record.task_arn] = _Placed(record, process)
        self._steady.discard(service.name)
        _event(service, f"has started 1 tasks: (task {record.id}).")
        logger.info(
            "service %s: started task %s at %s",
            service.name,
            record.id,
            process.address,
        )

    def _retire(self, service: Service, old: list[_Placed], may_stop: bool) -> None:
        candidates = [p for p in old if not self._protected(p)]
        if not may_stop:
            return
        if not candidates:
            self._waiting(service, len(old))
            return
        self._begin_stop(
            candidates[0],
            "Task replaced by a new deployment",
            "ServiceSchedulerInitiated",
        )

    def _scale_in(self, service: Service, tasks: list[_Placed], excess: int) -> None:
        unprotected = [p for p in tasks if not self._protected(p)]
        unprotected.sort(key=lambda p: p.record.created_at, reverse=True)
        for placed in unprotected[:excess]:
            self._begin_stop(
                placed,
                "Scaling activity initiated by (deployment)",
                "ServiceSchedulerInitiated",
            )
        if len(unprotected) < excess:
            self._waiting(service, len(tasks) - len(unprotected))

    def _waiting(self, service: Service, protected: int) -> None:
        message = (
            f"was unable to scale in due to (reason: {protected} tasks under"
            " protection)."
        )
        if not service.events or not service.events[0]["message"].endswith(message):
            _event(service, message)

    def _protected(self, placed: _Placed) -> bool:
        found, _ = self._backend.get_task_protection(  # type: ignore[attr-defined]
            cluster=placed.record.cluster_arn, tasks=[placed.record.task_arn]
        )
        return bool(found and found[0]["protectionEnabled"])

    def _register(self, service: Service, placed: _Placed) -> None:
        record = placed.record
        if placed.registered or record.status != "RUNNING":
            return
        if record.health_status == "UNHEALTHY":
            return
        for balancer in service.load_balancers:
            group = balancer["targetGroupArn"]
            self._elbv2.register_targets(
                TargetGroupArn=group,
                Targets=[{"Id": record.address, "Port": balancer["containerPort"]}],
            )
            placed.registered.append(group)
            _event(service, f"registered 1 targets in (target-group {group})")

    def _deregister(self, placed: _Placed) -> None:
        for group in placed.registered:
            port = next(
                (
                    lb["containerPort"]
                    for lb in self._service_lbs(placed)
                    if lb["targetGroupArn"] == group
                ),
                None,
            )
            target: dict[str, Any] = {"Id": placed.record.address}
            if port is not None:
                target["Port"] = port
            self._elbv2.deregister_targets(TargetGroupArn=group, Targets=[target])
        placed.registered = []

    def _service_lbs(self, placed: _Placed) -> list[dict[str, Any]]:
        service = self._service_of(placed.record)
        return list(service.load_balancers) if service else []

    def _count(self, service: Service, primary: str) -> None:
        live = self._live(service)
        running = [p for p in live if p.record.status == "RUNNING"]
        pending = [p for p in live if p.record.status in ACTIVE_STATES]
        service.running_count = len(running)
        service.pending_count = len(pending)
        _update_deployments(service, primary, live)
        steady = (
            len(running) == service.desired_count
            and not pending
            and all(p.record.task_definition_arn == primary for p in live)
        )
        if steady and service.name not in self._steady:
            self._steady.add(service.name)
            _event(service, "has reached a steady state.")
        elif not steady:
            self._steady.discard(service.name)


def _task_health(record: LocalTask) -> str:
    healths = [
        c.health_status for c in record.local_containers if c.essential and c.checked
    ]
    if "UNHEALTHY" in healths:
        return "UNHEALTHY"
    if healths and all(h == "HEALTHY" for h in healths):
        return "HEALTHY"
    return "UNKNOWN"


def _update_deployments(service: Service, primary: str, live: list[_Placed]) -> None:
    now = datetime.now(UTC)
    deployments: list[dict[str, Any]] = list(service.deployments)
    if not deployments or deployments[0].get("taskDefinition") not in (primary, None):
        for deployment in deployments:
            deployment["status"] = "ACTIVE"
        deployments.insert(0, ecs_records.new_deployment(service, primary, now))
    for deployment in deployments:
        mine = [
            p
            for p in live
            if p.record.task_definition_arn == deployment["taskDefinition"]
        ]
        deployment["runningCount"] = sum(p.record.status == "RUNNING" for p in mine)
        deployment["pendingCount"] = sum(p.record.status in ACTIVE_STATES for p in mine)
        deployment["updatedAt"] = now
    deployments[0]["taskDefinition"] = primary
    deployments[0]["desiredCount"] = service.desired_count
    old = [d for d in deployments[1:] if d["runningCount"] or d["pendingCount"]]
    primary_done = deployments[0]["runningCount"] == service.desired_count
    if primary_done and not old:
        deployments[0]["rolloutState"] = "COMPLETED"
        deployments[0]["rolloutStateReason"] = (
            f"ECS deployment {deployments[0]['id']} completed."
        )
    service.deployments = [deployments[0], *old]


def _event(service: Service, message: str) -> None:
    service.events.insert(
        0,
        {
            "id": str(uuid.uuid4()),
            "createdAt": datetime.now(UTC),
            "message": f"(service {service.name}) {message}",
        },
    )
    del service.events[100:]
    logger.info("(service %s) %s", service.name, message)
