"""Faults a test injects into a deployment, through what each target allows.

Tests reach every fault through ``deployment.faults``: on ``local`` the data
plane kills a container's process or cuts a task's network itself; on ``aws``
only what the ECS API can do is done, and the rest skips the test with the
reason.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Protocol

import pytest

logger = logging.getLogger(__name__)


class Faults(Protocol):
    """The faults a deployment can be put through."""

    def kill_container(
        self, task_arn: str, container: str, signum: int = signal.SIGKILL
    ) -> None: ...

    def cut_network(self, task_arn: str) -> None: ...

    def restore_network(self, task_arn: str) -> None: ...

    def fail_api(
        self, service: str, seconds: float, operation: str | None = None
    ) -> None: ...


class LocalFaults:
    """Faults of the local target, done to the processes and namespaces."""

    def __init__(self, plane: Any) -> None:
        self._plane = plane

    def kill_container(
        self, task_arn: str, container: str, signum: int = signal.SIGKILL
    ) -> None:
        logger.warning("fault: signal %s to %s of %s", signum, container, task_arn)
        self._plane.task(task_arn).runner.signal(container, signum)

    def cut_network(self, task_arn: str) -> None:
        logger.warning("fault: network of %s cut", task_arn)
        self._plane.task(task_arn).namespace.cut()

    def restore_network(self, task_arn: str) -> None:
        logger.warning("fault: network of %s restored", task_arn)
        self._plane.task(task_arn).namespace.restore()

    def fail_api(
        self, service: str, seconds: float, operation: str | None = None
    ) -> None:
        """Make an AWS API (``monitoring``, ``ecs`` ...) answer 503 for a while."""
        self._plane.outages.fail(service, seconds, operation)


class UnreachableFaults:
    """Faults where the harness cannot reach the tasks: each skips, saying why."""

    def __init__(self, why: str) -> None:
        self._why = why

    def kill_container(
        self, task_arn: str, container: str, signum: int = signal.SIGKILL
    ) -> None:
        pytest.skip(f"cannot kill container {container}: {self._why}")

    def cut_network(self, task_arn: str) -> None:
        pytest.skip(f"cannot cut the network of a task: {self._why}")

    def restore_network(self, task_arn: str) -> None:
        pytest.skip(f"cannot restore the network of a task: {self._why}")

    def fail_api(
        self, service: str, seconds: float, operation: str | None = None
    ) -> None:
        pytest.skip(f"cannot make the {service} API fail: {self._why}")
