"""One container of a locally run task: its definition read, its process tree.

What :mod:`harness.local.supervisor` needs per container: the health check and
volumes the definition states, the ``awslogs`` stream ECS would name, the
process started through the catalog, its output read line by line, and its
stop (SIGTERM to the main process, SIGKILL to all of it after ``stopTimeout``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.errors import DeployError
from harness.local.catalog import Catalog, ContainerContext, Launch, rewrite_paths
from harness.local.ecs_scheduler import ContainerState
from harness.local.servers.base import process_tree, session_members

logger = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 30.0
# Fargate's wait for a container's dependencies when startTimeout is not set.
DEFAULT_START_TIMEOUT = 180.0
_KILL_WAIT = 5.0
_TAIL_LINES = 200

LogSink = Callable[[str, str, str], None]


@dataclass(frozen=True)
class HealthCheck:
    """A container's health check, as its definition states it."""

    argv: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 5.0
    retries: int = 3
    start_period: float = 0.0

    @classmethod
    def parse(cls, check: Mapping[str, Any], container: str) -> HealthCheck:
        """Read a ``healthCheck`` block; ECS's defaults fill what it omits."""
        kind, *args = check["command"]
        if kind not in ("CMD", "CMD-SHELL") or not args:
            raise DeployError(
                f"health check of container {container!r} must start with CMD or"
                f" CMD-SHELL followed by a command, not {check['command']!r}",
                resource=container,
            )
        return cls(
            argv=("sh", "-c", " ".join(args)) if kind == "CMD-SHELL" else tuple(args),
            interval=float(check.get("interval", 30)),
            timeout=float(check.get("timeout", 5)),
            retries=int(check.get("retries", 3)),
            start_period=float(check.get("startPeriod", 0)),
        )


def volume_dirs(
    definition: Mapping[str, Any], state_root: Path, task_dir: Path
) -> dict[str, Path]:
    """The directory of each volume of a task definition, by volume name.

    An EFS volume is ``<state_root>/efs/<fileSystemId>/<rootDirectory>`` and a
    host volume ``<state_root>/host/<sourcePath>``, both outliving the task;
    any other volume lives in the task's directory, as long as the task.
    """
    dirs = {}
    for volume in definition.get("volumes", []):
        efs = volume.get("efsVolumeConfiguration")
        source = (volume.get("host") or {}).get("sourcePath")
        if efs:
            root = str(efs.get("rootDirectory") or "/").strip("/")
            path = state_root / "efs" / efs["fileSystemId"] / root
        elif source:
            path = state_root / "host" / str(source).strip("/")
        else:
            path = task_dir / "volumes" / volume["name"]
        dirs[str(volume["name"])] = path
    return dirs


def log_target(definition: Mapping[str, Any], task_id: str) -> tuple[str, str] | None:
    """The awslogs group and stream of a container, named as ECS names them."""
    config = definition.get("logConfiguration") or {}
    if config.get("logDriver") != "awslogs":
        return None
    options = config.get("options", {})
    prefix = options.get("awslogs-stream-prefix")
    stream = f"{prefix}/{definition['name']}/{task_id}" if prefix else task_id
    return str(options["awslogs-group"]), stream


def kill(procs: Sequence[psutil.Process], child: subprocess.Popen[bytes]) -> None:
    """Send SIGKILL to ``procs`` and wait a little for them to be gone.

    ``child`` is killed but left to its Popen to reap: psutil would take its exit
    status first, and the Popen would then report 0.
    """
    if child.poll() is None:
        child.kill()
    others = [proc for proc in procs if proc.pid != child.pid]
    for proc in others:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(others, timeout=_KILL_WAIT)


@dataclass(eq=False)
class Container:
    """One container of a task: its definition, state and process."""

    definition: Mapping[str, Any]
    volumes: Mapping[str, Path]
    status: str = "PENDING"
    health: str = "UNKNOWN"
    exit_code: int | None = None
    reason: str | None = None
    started_at: float | None = None
    popen: subprocess.Popen[bytes] | None = None
    launch: Launch | None = None
    env: dict[str, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    @property
    def essential(self) -> bool:
        return bool(self.definition.get("essential", True))

    @property
    def check(self) -> HealthCheck | None:
        found = self.definition.get("healthCheck")
        return HealthCheck.parse(found, self.name) if found else None

    @property
    def stop_timeout(self) -> float:
        return float(self.definition.get("stopTimeout", DEFAULT_STOP_TIMEOUT))

    @property
    def start_timeout(self) -> float:
        return float(self.definition.get("startTimeout", DEFAULT_START_TIMEOUT))

    @property
    def depends_on(self) -> list[tuple[str, str]]:
        deps = self.definition.get("dependsOn") or []
        return [(str(dep["containerName"]), str(dep["condition"])) for dep in deps]

    @property
    def mounts(self) -> dict[str, Path]:
        """Each mount point's container path and the volume directory behind it."""
        mounts = {}
        for point in self.definition.get("mountPoints", []):
            if point["sourceVolume"] not in self.volumes:
                raise DeployError(
                    f"container {self.name!r} mounts volume {point['sourceVolume']!r},"
                    " which the task definition does not declare; add it to"
                    " 'volumes'",
                    resource=self.name,
                )
            directory = self.volumes[point["sourceVolume"]]
            mounts[str(Path(point["containerPath"]))] = directory
        return mounts

    def snapshot(self) -> ContainerState:
        """The container as the scheduler mirrors it into its ECS record."""
        return ContainerState(
            self.name, self.status, self.health, self.exit_code, self.reason
        )

    def context(self, data_dir: Path) -> ContainerContext:
        """What the catalog needs to launch this container."""
        mounts = self.mounts
        data_dir.mkdir(parents=True, exist_ok=True)
        return ContainerContext(
            name=self.name,
            image=str(self.definition["image"]),
            environment=self.environment(),
            command=tuple(rewrite_paths(arg, mounts) for arg in self._args("command")),
            entry_point=tuple(self._args("entryPoint")),
            data_dir=data_dir,
            mounts=mounts,
        )

    def environment(self) -> dict[str, str]:
        """The definition's environment, mounted container paths rewritten."""
        mounts = self.mounts
        return {
            str(item["name"]): rewrite_paths(str(item["value"]), mounts)
            for item in self.definition.get("environment", [])
        }

    def _args(self, key: str) -> list[str]:
        return [str(arg) for arg in self.definition.get(key) or []]

    def spawn(
        self,
        catalog: Catalog,
        prefix: Sequence[str],
        extra_env: Mapping[str, str],
        data_dir: Path,
    ) -> subprocess.Popen[bytes]:
        """Start the container's main process in a session of its own."""
        launch = catalog.launch(self.context(data_dir))
        self.env = {
            "PATH": launch.path,
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            **self.environment(),
            **extra_env,
            **launch.env,
        }
        self.launch = launch
        self.popen = subprocess.Popen(
            [*prefix, *launch.argv],
            env=self.env,
            cwd=launch.cwd or data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.popen

    def processes(self) -> list[psutil.Process]:
        """Every live process of the container: the main tree and its session."""
        if self.popen is None:
            return []
        if self.popen.returncode is None:
            return process_tree(self.popen.pid)
        # The main process is reaped and its pid may be reused; only the
        # session id still names what it left behind.
        return session_members(self.popen.pid)

    def pump(self, target: tuple[str, str] | None, sink: LogSink | None) -> None:
        """Read the container's output to its end, each line to ``sink``."""
        assert self.popen is not None
        assert self.popen.stdout is not None
        with self.popen.stdout as stdout:
            for raw in iter(stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self.tail.append(line)
                if sink is None or target is None:
                    continue
                try:
                    sink(*target, line)
                except Exception:
                    logger.exception("log sink failed for container %s", self.name)

    def run_check(self, prefix: Sequence[str], check: HealthCheck) -> bool:
        """Run the health check once in the container's environment."""
        assert self.launch is not None
        proc = subprocess.Popen(
            [*prefix, *check.argv],
            env=self.env,
            cwd=self.launch.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(check.timeout) == 0
        except subprocess.TimeoutExpired:
            kill(process_tree(proc.pid), proc)
            proc.wait()
            return False

    def terminate(self) -> int:
        """Stop the container as ``docker stop`` does; return its exit code."""
        assert self.popen is not None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "container %s ignored SIGTERM for %.0f s; killing it",
                    self.name,
                    self.stop_timeout,
                )
        kill(self.processes(), self.popen)
        return self.popen.wait()
