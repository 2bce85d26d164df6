"""The local target's container supervisor: one task definition, really run.

:class:`TaskRunner` runs every container of a task definition (as
``describe_task_definition`` returns it) as a process launched through the
:mod:`~harness.local.catalog`, under a command prefix of the caller's (for
instance ``ip netns exec <task namespace>``), and honours what ECS honours:

- a container starts once its ``dependsOn`` conditions hold (START, COMPLETE,
  SUCCESS, HEALTHY), or is given up after its ``startTimeout`` (Fargate's 3
  minutes by default);
- health checks run as defined (``CMD-SHELL`` through ``sh -c``, ``CMD`` as an
  argument list) in the container's environment and namespace: UNKNOWN until a
  first verdict, failures during the start period do not count, UNHEALTHY after
  ``retries`` consecutive failures, HEALTHY after any success;
- when an essential container exits, or turns UNHEALTHY, the task stops;
- a stop sends SIGTERM to each container's main process, dependants before
  their dependencies, and SIGKILL to everything left of the container after its
  ``stopTimeout`` (30 s by default); when a main process ends, the rest of its
  container is killed, as when a container's PID 1 exits;
- each container's output goes, line by line, to a log sink under the
  ``awslogs`` group and the stream ECS would name.

Volumes are directories: an EFS volume is ``<state root>/efs/<fileSystemId>/
<rootDirectory>`` and outlives the task, a host volume ``<state root>/host/
<sourcePath>``, any other volume a directory of the task's own.

Note: without a mount namespace per container, a ``mountPoint`` takes effect
through the catalog, which maps the paths its images keep data in to the mounted
directory; access points of EFS volumes are not read (their root directory is
the file system's root), and ``volumesFrom`` is not supported.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.errors import DeployError, NotReadyError
from harness.local.catalog import Catalog
from harness.local.containers import Container, LogSink, kill, log_target, volume_dirs
from harness.local.ecs_scheduler import TaskState

logger = logging.getLogger(__name__)

ESSENTIAL_EXITED = "Essential container in task exited"
HEALTH_FAILED = "Task failed container health checks"
_TICK = 0.1
_PUMP_WAIT = 5.0

Observer = Callable[[TaskState], None]


class TaskRunner:
    """Runs the containers of one task definition; see the module docstring."""

    def __init__(
        self,
        definition: Mapping[str, Any],
        task_id: str,
        *,
        state_root: Path,
        prefix: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        catalog: Catalog | None = None,
        log_sink: LogSink | None = None,
        observer: Observer | None = None,
        stop_on_unhealthy: bool = True,
    ) -> None:
        self.task_id = task_id
        self.definition = definition
        self.task_dir = Path(state_root) / "tasks" / task_id
        self.prefix = tuple(prefix)
        self.catalog = catalog or Catalog()
        self.stop_on_unhealthy = stop_on_unhealthy
        self._extra_env = dict(extra_env or {})
        self._sink = log_sink
        self._observer = observer
        self._volumes = volume_dirs(definition, Path(state_root), self.task_dir)
        self._containers = {
            str(c["name"]): Container(c, self._volumes)
            for c in definition["containerDefinitions"]
        }
        self._validate()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._request: tuple[str, str] | None = None
        self._final: tuple[str, str] | None = None
        self._began = 0.0

    def _validate(self) -> None:
        """Fail before anything runs on what ECS would refuse or fail to pull."""
        for container in self._containers.values():
            self.catalog.resolve(str(container.definition["image"]))
            _ = container.check, container.mounts
            for name, _condition in container.depends_on:
                if name not in self._containers:
                    raise DeployError(
                        f"container {container.name!r} depends on {name!r}, which"
                        " is not in the task definition; fix its 'dependsOn'",
                        resource=str(self.definition.get("family")),
                    )

    def start(self) -> Self:
        """Start supervising: containers start as their dependencies allow."""
        for directory in self._volumes.values():
            directory.mkdir(parents=True, exist_ok=True)
        self.task_dir.mkdir(parents=True, exist_ok=True)

        self._began = time.monotonic()
        name = f"task-{self.task_id}"
        threading.Thread(target=self._run, name=name, daemon=True).start()
        logger.info("task %s started (%s)", self.task_id, self.definition.get("family"))
        return self

    def state(self) -> TaskState:
        """What runs now: each container's status, health and exit code."""
        with self._lock:
            reason, code = self._final or (None, None)
            return TaskState(
                containers=tuple(c.snapshot() for c in self._containers.values()),
                stopped=self._stopped.is_set(),
                stop_code=code,
                stopped_reason=reason,
            )

    def stop(self, reason: str, code: str = "UserInitiated") -> None:
        """Ask the task to stop; returns at once (see :meth:`wait`)."""
        with self._lock:
            self._request = self._request or (reason, code)
        self._wake.set()

    def wait(self, timeout: float) -> TaskState:
        """Return the final state once the task has stopped, within ``timeout``."""
        if not self._stopped.wait(timeout):
            raise NotReadyError(
                f"task {self.task_id} did not stop within {timeout:.0f} s; last"
                f" state: {self.state()}",
                resource=self.task_id,
            )
        return self.state()

    @property
    def longest_stop(self) -> float:
        """How long a stop may take at most: every stop timeout, one after another."""
        return sum(c.stop_timeout for c in self._containers.values()) + _PUMP_WAIT

    def started_at(self, name: str) -> float | None:
        """The monotonic time at which container ``name`` was started, if it was."""
        return self._containers[name].started_at

    def output(self, name: str) -> list[str]:
        """The last lines container ``name`` wrote."""
        return list(self._containers[name].tail)

    def signal(self, name: str, signum: int) -> None:
        """Send ``signum`` to a container's main process, as ``docker kill`` does."""
        container = self._containers.get(name)
        if container is None:
            raise DeployError(
                f"task {self.task_id} has no container {name!r}; its containers"
                f" are {', '.join(self._containers)}",
                resource=self.task_id,
            )
        if container.popen is not None and container.popen.poll() is None:
            os.kill(container.popen.pid, signum)
            logger.info("sent signal %s to container %s", signum, name)

    @property
    def pids(self) -> list[int]:
        """The pids of every live process of every container of the task."""
        return [p.pid for c in self._containers.values() for p in c.processes()]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop("Task stopped by its owner")
        self.wait(self.longest_stop + 30)

    def _run(self) -> None:
        try:
            while self._request is None:
                self._reap()
                self._start_ready()
                self._check_health()
                self._wake.wait(_TICK)
                self._wake.clear()
        except Exception:
            logger.exception("supervisor of task %s failed", self.task_id)
            self.stop("Task stopped by an internal error", "TaskFailedToStart")
        finally:
            self._shutdown()

    def _notify(self) -> None:
        if self._observer is None:
            return
        try:
            self._observer(self.state())
        except Exception:
            logger.exception("observer of task %s failed", self.task_id)

    def _reap(self) -> None:
        for container in self._containers.values():
            if container.popen is None or container.status != "RUNNING":
                continue
            code = container.popen.poll()
            if code is not None:
                self._exited(container, code)

    def _exited(self, container: Container, code: int) -> None:
        # As when a container's PID 1 exits: nothing else of it survives.
        if container.popen is not None:
            kill(container.processes(), container.popen)
        with self._lock:
            if container.status == "STOPPED":
                return
            container.status = "STOPPED"
            container.exit_code = 128 - code if code < 0 else code
            container.done.set()
        logger.info(
            "container %s of task %s exited with code %s",
            container.name,
            self.task_id,
            container.exit_code,
        )
        self._notify()
        if container.essential:
            self.stop(ESSENTIAL_EXITED, "EssentialContainerExited")

    def _start_ready(self) -> None:
        for container in self._containers.values():
            if container.status != "PENDING":
                continue
            verdict = self._dependencies(container)
            if verdict is True:
                self._launch(container)
            elif isinstance(verdict, str):
                self._fail(container, verdict)
            elif time.monotonic() - self._began > container.start_timeout:
                self._fail(container, "dependencies not met within its startTimeout")

    def _dependencies(self, container: Container) -> bool | str | None:
        """True when every condition holds, a reason when one never can, None
        while waiting."""
        ready = True
        for name, condition in container.depends_on:
            other = self._containers[name]
            met = {
                "START": other.started_at is not None,
                "COMPLETE": other.status == "STOPPED" and other.started_at is not None,
                "SUCCESS": other.status == "STOPPED" and other.exit_code == 0,
                "HEALTHY": other.health == "HEALTHY" and other.status == "RUNNING",
            }[condition]
            if not met and other.status == "STOPPED":
                return f"dependency {name} can no longer be {condition}"
            ready = ready and met
        return True if ready else None

    def _fail(self, container: Container, why: str) -> None:
        with self._lock:
            container.status = "STOPPED"
            container.reason = f"CannotStartContainerError: {why}"
            container.done.set()
        logger.warning("container %s of task %s: %s", container.name, self.task_id, why)
        self._notify()
        if container.essential:
            self.stop(ESSENTIAL_EXITED, "TaskFailedToStart")

    def _launch(self, container: Container) -> None:
        data_dir = self.task_dir / container.name
        try:
            container.spawn(self.catalog, self.prefix, self._extra_env, data_dir)
        except (DeployError, OSError) as exc:
            self._fail(container, str(exc))
            return

        with self._lock:
            container.status, container.started_at = "RUNNING", time.monotonic()
        logger.info("container %s of task %s running", container.name, self.task_id)
        target = log_target(container.definition, self.task_id)
        threads = [threading.Thread(target=container.pump, args=(target, self._sink))]
        if container.check is not None:
            threads.append(threading.Thread(target=self._probe, args=(container,)))
        for thread in threads:
            thread.daemon = True
            thread.start()
        container.threads = threads
        self._notify()

    def _probe(self, container: Container) -> None:
        check = container.check
        assert check is not None
        assert container.started_at is not None
        failures = 0
        while not container.done.wait(check.interval):
            healthy = container.run_check(self.prefix, check)
            starting = time.monotonic() - container.started_at < check.start_period
            if not healthy and starting:
                continue
            failures = 0 if healthy else failures + 1
            verdict = "HEALTHY" if healthy else "UNHEALTHY"
            with self._lock:
                changed = (
                    container.status == "RUNNING"
                    and (healthy or failures >= check.retries)
                    and container.health != verdict
                )
                if changed:
                    container.health = verdict
            if changed:
                logger.info("container %s is %s", container.name, verdict)
                self._notify()
                self._wake.set()

    def _check_health(self) -> None:
        if not self.stop_on_unhealthy:
            return
        for container in self._containers.values():
            if container.essential and container.health == "UNHEALTHY":
                self.stop(HEALTH_FAILED, "ServiceSchedulerInitiated")

    def _shutdown(self) -> None:
        with self._lock:
            reason, code = self._request or ("Task stopped", "UserInitiated")
            for container in self._containers.values():
                container.done.set()
                if container.status == "PENDING":
                    container.status = "STOPPED"
        logger.info("stopping task %s: %s", self.task_id, reason)

        for wave in self._stop_waves():
            threads = [
                threading.Thread(target=self._stop_container, args=(c,)) for c in wave
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for container in self._containers.values():
            for thread in container.threads:
                thread.join(_PUMP_WAIT)
        shutil.rmtree(self.task_dir, ignore_errors=True)

        with self._lock:
            self._final = (reason, code)
            self._stopped.set()
        logger.info("task %s stopped: %s", self.task_id, reason)
        self._notify()

    def _stop_waves(self) -> Iterator[list[Container]]:
        """Started containers in stop order: dependants before dependencies."""
        left = [c for c in self._containers.values() if c.popen is not None]
        while left:
            needed = {name for c in left for name, _ in c.depends_on}
            wave = [c for c in left if c.name not in needed] or left
            yield wave
            left = [c for c in left if c not in wave]

    def _stop_container(self, container: Container) -> None:
        self._exited(container, container.terminate())
