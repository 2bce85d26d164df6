"""Task records in moto's ECS that mirror what the local data plane really runs.

moto 5.2.5 never creates tasks for a service, gives a task one container
whatever its definition holds, moves a task through its states on every
``describe_tasks`` by itself, ignores ``list_tasks``' ``serviceName`` filter and
lists stopped tasks by default, and marks a task STOPPED the moment
``stop_task`` is called. This module completes that, with ECS's behaviour:

- :class:`LocalTask` is a moto task whose state, health and containers are
  set by the data plane only, one container record per container definition,
  and whose ENI carries the task's real address;
- ``list_tasks`` filters by ``serviceName`` (``group`` = ``service:<name>``)
  and lists RUNNING tasks unless ``desiredStatus`` says otherwise;
- ``stop_task`` on a local task sets its desired status to STOPPED and hands
  the stop to the data plane, which stops the processes; the record turns
  STOPPED once they have ended, as on ECS.

Note: these are moto's internals; ``install()`` refuses to patch a method that
moto has changed (see ``tests/local/test_ecs_records.py``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.ecs.models import (
    Cluster,
    EC2ContainerServiceBackend,
    Service,
    Task,
    TaskDefinition,
)
from moto.ecs.responses import EC2ContainerServiceResponse

from harness.errors import DeployError

logger = logging.getLogger(__name__)

StopHandler = Callable[["LocalTask", str], None]

_MARKER = "__euglena_records__"
_ORIGINAL_LIST = EC2ContainerServiceBackend.list_tasks
_ORIGINAL_STOP = EC2ContainerServiceBackend.stop_task
_ORIGINAL_CREATE_SERVICE = EC2ContainerServiceResponse.create_service
_ORIGINAL_UPDATE_SERVICE = EC2ContainerServiceResponse.update_service
DEFAULT_DEPLOYMENT = {"minimumHealthyPercent": 100, "maximumPercent": 200}
_stop_handlers: dict[str, StopHandler] = {}
_lock = threading.Lock()


class LocalContainer:
    """One container of a local task, as ``describe_tasks`` shows it."""

    def __init__(self, task_arn: str, definition: dict[str, Any]) -> None:
        self.container_arn = f"{task_arn}/{uuid.uuid4()}"
        self.task_arn = task_arn
        self.name = str(definition["name"])
        self.image = definition.get("image")
        self.last_status = "PENDING"
        self.health_status = "UNKNOWN"
        self.exit_code: int | None = None
        self.reason: str | None = None
        self.network_interfaces: list[dict[str, str]] = []
        self.cpu = str(definition.get("cpu", 0))
        self.memory_reservation = definition.get("memoryReservation")
        self.essential = bool(definition.get("essential", True))
        self.checked = bool(definition.get("healthCheck"))


class LocalTask(Task):
    """A moto task whose lifecycle the local data plane drives, not moto's clock."""

    def __init__(self, *args: Any, address: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local_status = "PROVISIONING"
        self.health_status = "UNKNOWN"
        self.stop_code: str | None = None
        self.stopped_at: datetime | None = None
        self.started_at: datetime | None = None
        self.stopping_at: datetime | None = None
        self.created_at = datetime.now(UTC)
        self.assign_address(address)

    @property
    def status(self) -> str:
        return self._local_status

    @status.setter
    def status(self, value: str) -> None:
        self._local_status = value

    def advance(self) -> None:
        """Nothing: only the data plane moves a local task between states."""

    def assign_address(self, address: str) -> None:
        """Give the task's ENI the address its network namespace has."""
        self.address = address
        attachments: list[dict[str, Any]] = self.attachments
        for attachment in attachments:
            for detail in attachment["details"]:
                if detail["name"] == "privateIPv4Address":
                    detail["value"] = address

    @property
    def local_containers(self) -> list[LocalContainer]:
        """The task's container records, one per container definition."""
        containers: list[Any] = self.containers
        return [c for c in containers if isinstance(c, LocalContainer)]

    @property
    def service_name(self) -> str | None:
        group = str(self.group or "")
        return group.removeprefix("service:") if group.startswith("service:") else None


def create_task(
    backend: EC2ContainerServiceBackend,
    *,
    cluster: Cluster,
    definition: TaskDefinition,
    group: str,
    started_by: str,
    network: dict[str, Any],
    address: str,
) -> LocalTask:
    """Add a PROVISIONING task record with a container record per definition."""
    task = LocalTask(
        cluster,
        definition,
        None,
        None,
        backend,
        group,
        launch_type="FARGATE",
        started_by=started_by,
        networking_configuration=network,
        platform_version="1.4.0",
        address=address,
    )
    containers: list[Any] = [
        LocalContainer(task.task_arn, container)
        for container in definition.container_definitions
    ]
    task.containers = containers
    with _lock:
        backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
    logger.debug("task record %s created at %s", task.id, address)
    return task


def on_stop(backend: EC2ContainerServiceBackend, handler: StopHandler) -> None:
    """Send ``stop_task`` calls for local tasks of ``backend`` to ``handler``."""
    _stop_handlers[_key(backend)] = handler


def forget(backend: EC2ContainerServiceBackend) -> None:
    """Stop sending ``backend``'s stops anywhere (its data plane has ended)."""
    _stop_handlers.pop(_key(backend), None)


def install() -> None:
    """Complete moto's ECS as the module docstring says; idempotent."""
    backend = EC2ContainerServiceBackend
    _patch(backend, "list_tasks", _ORIGINAL_LIST, _list_tasks)
    _patch(backend, "stop_task", _ORIGINAL_STOP, _stop_task)
    response = EC2ContainerServiceResponse
    _patch(response, "create_service", _ORIGINAL_CREATE_SERVICE, _create_service)
    _patch(response, "update_service", _ORIGINAL_UPDATE_SERVICE, _update_service)


def deployment_configuration(service: Any) -> dict[str, int]:
    """The service's deployment limits, with ECS's defaults for what is unset."""
    given = getattr(service, "deployment_configuration", None) or {}
    return {**DEFAULT_DEPLOYMENT, **given}


def _patch(
    cls: type, name: str, original: Any, replacement: Callable[..., Any]
) -> None:
    current = getattr(cls, name)
    if getattr(current, _MARKER, False):
        return
    if current is not original:
        raise DeployError(
            f"moto's {cls.__name__}.{name} is not the one this completion was"
            " written for; check harness/local/ecs_records.py against the moto"
            " version requirements.txt pins",
            resource=f"{cls.__module__}.{cls.__name__}.{name}",
        )
    setattr(replacement, _MARKER, True)
    setattr(cls, name, replacement)


def _keep_deployment_configuration(response: Any, service_name: str) -> None:
    given = response._get_param("deploymentConfiguration")
    if not given:
        return
    cluster = response._get_param("cluster", "default")
    service = response.ecs_backend._get_service(cluster, service_name.split("/")[-1])
    service.deployment_configuration = {
        key: given[key]
        for key in ("minimumHealthyPercent", "maximumPercent")
        if key in given
    }


def _create_service(self: EC2ContainerServiceResponse) -> Any:
    result = _ORIGINAL_CREATE_SERVICE(self)
    _keep_deployment_configuration(self, self._get_param("serviceName"))
    return result


def _update_service(self: EC2ContainerServiceResponse) -> Any:
    backend = self.ecs_backend
    name = self._get_param("service").split("/")[-1]
    service = backend._get_service(self._get_param("cluster", "default"), name)
    counts = (service.running_count, service.pending_count)
    before = _definition_arn(backend, service.task_definition)
    result = _ORIGINAL_UPDATE_SERVICE(self)
    _keep_deployment_configuration(self, name)
    if _key(backend) in _stop_handlers:
        # The data plane counts what runs; moto would claim the new count runs.
        service.running_count, service.pending_count = counts
        after = _definition_arn(backend, service.task_definition)
        forced = bool(self._get_param("forceNewDeployment"))
        if after != before or forced:
            _start_deployment(service, after)
    return result


def _definition_arn(backend: EC2ContainerServiceBackend, reference: Any) -> str:
    return str(backend.describe_task_definition(str(reference)).arn)


def _start_deployment(service: Any, definition_arn: str) -> None:
    """ECS starts a new PRIMARY deployment within UpdateService itself."""
    for deployment in service.deployments:
        deployment["status"] = "ACTIVE"
    service.deployments.insert(
        0, new_deployment(service, definition_arn, datetime.now(UTC))
    )


def new_deployment(service: Service, primary: str, now: datetime) -> dict[str, Any]:
    """A PRIMARY deployment of ``primary`` as ECS starts one, IN_PROGRESS."""
    identifier = f"ecs-svc/{uuid.uuid4().int % 10**19:019d}"
    return {
        "id": identifier,
        "status": "PRIMARY",
        "taskDefinition": primary,
        "desiredCount": service.desired_count,
        "runningCount": 0,
        "pendingCount": 0,
        "failedTasks": 0,
        "createdAt": now,
        "updatedAt": now,
        "launchType": service.launch_type,
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": f"ECS deployment {identifier} in progress.",
    }


def _key(backend: EC2ContainerServiceBackend) -> str:
    return f"{backend.account_id}/{backend.region_name}"


def _list_tasks(
    self: EC2ContainerServiceBackend,
    cluster_str: str | None = None,
    container_instance: str | None = None,
    family: str | None = None,
    started_by: str | None = None,
    service_name: str | None = None,
    desiredStatus: str | None = None,  # moto's parameter name
) -> list[Task]:
    tasks = _ORIGINAL_LIST(
        self,
        cluster_str,
        container_instance,
        family,
        started_by,
        None,
        desiredStatus or "RUNNING",
    )
    if service_name:
        wanted = f"service:{service_name.split('/')[-1]}"
        tasks = [task for task in tasks if task.group == wanted]
    return tasks


def _stop_task(
    self: EC2ContainerServiceBackend, cluster_str: str, task_str: str, reason: str
) -> Task:
    cluster = self._get_cluster(cluster_str)
    task_id = task_str.split("/")[-1]
    task = next(
        (
            t
            for arn, t in self.tasks.get(cluster.name, {}).items()
            if arn.endswith(task_id)
        ),
        None,
    )
    if not isinstance(task, LocalTask):
        return _ORIGINAL_STOP(self, cluster_str, task_str, reason)
    if task.desired_status != "STOPPED":
        task.desired_status = "STOPPED"
        task.stopped_reason = reason or "Task stopped by user"
        task.stop_code = "UserInitiated"
        handler = _stop_handlers.get(_key(self))
        if handler is not None:
            handler(task, task.stopped_reason)
    return task
