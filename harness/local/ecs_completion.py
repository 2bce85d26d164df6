"""Task scale-in protection for moto's ECS, with AWS's rules.

moto 5.2.5 answers ``UpdateTaskProtection`` and ``GetTaskProtection`` with HTTP
500. ``install()`` adds both actions to moto's ECS response class and keeps
the protection of each task on moto's ECS backend (one per account and region),
so a moto server in this process serves them as the ECS API reference
describes:

- ``protectionEnabled`` with ``expiresInMinutes`` from 1 to 2,880, 120 when
  enabling without it; a new update resets the expiry;
- only tasks that belong to a service (group ``service:<name>``) can be
  protected; a standalone task is a ``TASK_NOT_VALID`` failure;
- at most 10 tasks per update and 100 per read (``InvalidParameterException``);
- an unknown task is a ``MISSING`` failure; an expired protection reads as
  disabled.

Fast local tests may scale every expiry with ``set_protection_time_scale``:
with 1/60, a minute of protection lasts one second. The default is 1.0, what
AWS does.

Note: these classes are moto's internals, so ``tests/test_ecs_completion.py``
pins the moto version and fails when moto starts implementing the actions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core.responses import ActionResult
from moto.ecs.exceptions import InvalidParameterException
from moto.ecs.models import EC2ContainerServiceBackend, Task
from moto.ecs.responses import EC2ContainerServiceResponse

from harness.errors import DeployError

logger = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN_MINUTES = 120
MIN_EXPIRES_IN_MINUTES = 1
MAX_EXPIRES_IN_MINUTES = 2880
MAX_TASKS_PER_UPDATE = 10
MAX_TASKS_PER_GET = 100
ACTIONS = ("update_task_protection", "get_task_protection")

_MARKER = "__euglena_completion__"
_STATE_ATTRIBUTE = "euglena_task_protection"
_lock = threading.Lock()
_time_scale = 1.0


@dataclass(frozen=True)
class _Protection:
    expires_at: datetime

    def is_active(self, now: datetime) -> bool:
        return now < self.expires_at


def set_protection_time_scale(factor: float) -> None:
    """Make every protection granted from now on last ``factor`` times as long."""
    global _time_scale
    if not factor > 0:
        raise ValueError(
            f"protection time scale must be a positive number, got {factor!r}: "
            "use 1.0 for AWS's durations, or e.g. 1/60 for a second per minute"
        )
    _time_scale = factor
    logger.info("task protection expiry scaled by %s", factor)


def protection_time_scale() -> float:
    """How much shorter or longer than on AWS protection lasts here."""
    return _time_scale


def install() -> None:
    """Add task protection to moto's ECS; calling it again changes nothing."""
    handlers: dict[str, tuple[type, Callable[..., Any]]] = {
        "update_task_protection": (EC2ContainerServiceResponse, _respond_update),
        "get_task_protection": (EC2ContainerServiceResponse, _respond_get),
    }
    for name, (cls, function) in handlers.items():
        _attach(cls, name, function)
    _attach(EC2ContainerServiceBackend, "update_task_protection", _update)
    _attach(EC2ContainerServiceBackend, "get_task_protection", _get)
    logger.debug("moto ECS completed with %s", ", ".join(ACTIONS))


def is_installed() -> bool:
    """Whether ``install()`` has completed moto's ECS in this process."""
    return all(
        getattr(getattr(EC2ContainerServiceResponse, name, None), _MARKER, False)
        for name in ACTIONS
    )


def _attach(cls: type, name: str, function: Callable[..., Any]) -> None:
    existing = getattr(cls, name, None)
    if existing is not None and not getattr(existing, _MARKER, False):
        raise DeployError(
            f"moto now implements {cls.__name__}.{name} itself: compare its "
            "behaviour with harness/local/ecs_completion.py and drop the "
            "completion, or keep moto at the version requirements.txt pins",
            resource=f"{cls.__module__}.{cls.__name__}",
        )
    setattr(function, _MARKER, True)
    setattr(cls, name, function)


def _respond_update(self: EC2ContainerServiceResponse) -> ActionResult:
    protected, failures = self.ecs_backend.update_task_protection(  # type: ignore[attr-defined]
        cluster=self._get_param("cluster"),
        tasks=self._get_param("tasks") or [],
        protection_enabled=bool(self._get_param("protectionEnabled")),
        expires_in_minutes=self._get_param("expiresInMinutes"),
    )
    return ActionResult({"protectedTasks": protected, "failures": failures})


def _respond_get(self: EC2ContainerServiceResponse) -> ActionResult:
    protected, failures = self.ecs_backend.get_task_protection(  # type: ignore[attr-defined]
        cluster=self._get_param("cluster"),
        tasks=self._get_param("tasks"),
    )
    return ActionResult({"protectedTasks": protected, "failures": failures})


def _update(
    backend: EC2ContainerServiceBackend,
    cluster: str,
    tasks: list[str],
    protection_enabled: bool,
    expires_in_minutes: int | None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    if not 1 <= len(tasks) <= MAX_TASKS_PER_UPDATE:
        raise InvalidParameterException(
            f"tasks must list between 1 and {MAX_TASKS_PER_UPDATE} tasks; "
            f"{len(tasks)} were given."
        )
    minutes = _checked_minutes(protection_enabled, expires_in_minutes)
    found, failures = _resolve(backend, cluster, tasks)
    now = datetime.now(UTC)
    protected = []
    with _lock:
        state = _state(backend)
        for task in found:
            if minutes is None:
                state.pop(task.task_arn, None)
            else:
                lasts = timedelta(minutes=minutes) * _time_scale
                state[task.task_arn] = _Protection(expires_at=now + lasts)
            protected.append(_describe(task, state.get(task.task_arn), now))
    return protected, failures


def _get(
    backend: EC2ContainerServiceBackend, cluster: str, tasks: list[str] | None
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    if tasks is not None and len(tasks) > MAX_TASKS_PER_GET:
        raise InvalidParameterException(
            f"tasks must list at most {MAX_TASKS_PER_GET} tasks; "
            f"{len(tasks)} were given."
        )
    if tasks is None:  # every service task of the cluster
        cluster_name = backend._get_cluster(cluster).name
        cluster_tasks = backend.tasks.get(cluster_name, {}).values()
        tasks = [t.task_arn for t in cluster_tasks if t.group.startswith("service:")]
    found, failures = _resolve(backend, cluster, tasks)
    now = datetime.now(UTC)
    with _lock:
        state = _state(backend)
        for arn in [arn for arn, p in state.items() if not p.is_active(now)]:
            del state[arn]
        protected = [_describe(t, state.get(t.task_arn), now) for t in found]
    return protected, failures


def _checked_minutes(enabled: bool, minutes: int | None) -> int | None:
    """The protection's duration, or None when the update disables it."""
    if not enabled:
        return None
    if minutes is None:
        return DEFAULT_EXPIRES_IN_MINUTES
    if not MIN_EXPIRES_IN_MINUTES <= minutes <= MAX_EXPIRES_IN_MINUTES:
        raise InvalidParameterException(
            f"expiresInMinutes must be between {MIN_EXPIRES_IN_MINUTES} and "
            f"{MAX_EXPIRES_IN_MINUTES}; {minutes} was given."
        )
    return minutes


def _resolve(
    backend: EC2ContainerServiceBackend, cluster: str, references: list[str]
) -> tuple[list[Task], list[dict[str, str]]]:
    """The service tasks named by ID or ARN, and a failure for every other."""
    cluster_name = backend._get_cluster(cluster).name
    by_id = {
        t.task_arn.split("/")[-1]: t
        for t in backend.tasks.get(cluster_name, {}).values()
    }
    found: list[Task] = []
    failures: list[dict[str, str]] = []
    for reference in references:
        task = by_id.get(reference.split("/")[-1])
        if task is None:
            failures.append(_failure(reference, "MISSING", "The task was not found."))
        elif not task.group.startswith("service:"):
            detail = "Task protection is supported only for tasks of a service."
            failures.append(_failure(task.task_arn, "TASK_NOT_VALID", detail))
        else:
            found.append(task)
    return found, failures


def _describe(
    task: Task, protection: _Protection | None, now: datetime
) -> dict[str, Any]:
    if protection is None or not protection.is_active(now):
        return {"taskArn": task.task_arn, "protectionEnabled": False}
    return {
        "taskArn": task.task_arn,
        "protectionEnabled": True,
        "expirationDate": protection.expires_at,
    }


def _failure(arn: str, reason: str, detail: str) -> dict[str, str]:
    return {"arn": arn, "reason": reason, "detail": detail}


def _state(backend: EC2ContainerServiceBackend) -> dict[str, _Protection]:
    # Kept on the backend so that moto's reset forgets it with everything else.
    state: dict[str, _Protection] = vars(backend).setdefault(_STATE_ATTRIBUTE, {})
    return state
