"""What every supervised server process shares: spawn, readiness, stop, logs.

A server runs as a child of this process in a session of its own, so its whole
tree (a start script, the real server, the helpers it forks) can be found and
ended. Its output goes to a log file; when a start fails, the error carries the
tail of that log.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

import psutil
import tenacity

from harness.errors import DeployError

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
_POLL_SECONDS = 0.2
_KILL_GRACE_SECONDS = 5.0


ServerT = TypeVar("ServerT", bound="ServerProcess")


class ServerStartError(DeployError):
    """A server process did not become ready; the message holds its log tail."""


class ServerExitedError(Exception):
    """The server process ended while we were waiting for it to be ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that nothing listens on at ``host`` right now.

    Note: another process may take the port between this call and the server's
    bind; a start that then fails says so in its log tail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def netns_prefix(netns: str | None) -> list[str]:
    """Return the command prefix that runs a program inside network namespace
    ``netns``, or nothing when it is None."""
    return ["ip", "netns", "exec", netns] if netns else []


def tail(path: Path, lines: int = LOG_TAIL_LINES, offset: int = 0) -> str:
    """Return the last ``lines`` lines of ``path`` written after byte ``offset``."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"(log {path} is empty)"


def process_tree(pid: int) -> list[psutil.Process]:
    """Return the process ``pid``, its descendants and the members of its session.

    The session catches descendants that were reparented after their parent
    exited, which a walk of the children alone would miss.
    """
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        leader = psutil.Process(pid)
        found[pid] = leader
        for child in leader.children(recursive=True):
            found[child.pid] = child
    found.update((proc.pid, proc) for proc in session_members(pid))
    return list(found.values())


def session_members(sid: int) -> list[psutil.Process]:
    """Return the live processes whose session id is ``sid``."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getsid(proc.pid) == sid:
                members.append(proc)
    return members


def end_processes(procs: Sequence[psutil.Process], grace: float) -> None:
    """Send SIGTERM to ``procs``, then SIGKILL to those still alive after ``grace``."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        logger.warning("process %s ignored SIGTERM; killing it", proc.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


class ServerProcess(abc.ABC):
    """One real server process supervised from this one."""

    #: Short name used for the log file and in messages.
    kind = "server"
    #: Signal that asks the server for a clean shutdown.
    stop_signal = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path,
        *,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.netns = netns
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.kind}.log"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pids(self) -> list[int]:
        """Return the pids of the server's live process tree."""
        if self._popen is None or self._popen.poll() is not None:
            return []
        return [proc.pid for proc in process_tree(self._popen.pid)]

    @abc.abstractmethod
    def command(self) -> list[str]:
        """Return the server's command line, without any namespace prefix."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Return when the server serves; raise anything while it does not."""

    @property
    def ports(self) -> tuple[int, ...]:
        """Return the TCP ports the server listens on once it serves."""
        return ()

    def prepare(self) -> None:  # noqa: B027 - an optional step, empty by default
        """Write what the server needs on disk before it starts."""

    def environment(self) -> dict[str, str]:
        """Return the environment the server process gets."""
        return {**os.environ, **self.extra_env}

    def describe(self) -> str:
        """Return how messages name this server."""
        return f"{self.kind} in {self.data_dir}"

    def start(self) -> Self:
        """Start the server and return once it serves, or raise ServerStartError."""
        if self.is_running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._spawn()
        try:
            self.wait_ready(time.monotonic() + self.start_timeout)
        except BaseException:
            # Interrupted or failed, a half-started server must not outlive us.
            self.stop()
            raise
        logger.info("%s ready (pid %s)", self.describe(), self.pid)
        return self

    def _spawn(self) -> None:
        argv = [*netns_prefix(self.netns), *self.command()]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        logger.debug("starting %s: %s", self.describe(), " ".join(argv))
        try:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.data_dir,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            self._close_log()
            raise ServerStartError(
                f"cannot run {argv[0]!r}: it is not installed or not on PATH;"
                f" install it (see the README's set-up) and try again",
                resource=self.describe(),
            ) from exc

    def wait_ready(self, deadline: float) -> None:
        """Poll the server until it serves, failing at ``deadline`` (monotonic)."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(max(0.0, deadline - time.monotonic())),
            wait=tenacity.wait_fixed(_POLL_SECONDS),
            retry=tenacity.retry_if_not_exception_type(ServerExitedError),
            reraise=True,
        )
        try:
            retrying(self._check_ready)
        except ServerExitedError as exc:
            raise self._start_error(str(exc)) from exc
        except Exception as exc:
            reason = f"not ready after {self.start_timeout:.0f} s; last probe: {exc!r}"
            raise self._start_error(reason) from exc

    def _check_ready(self) -> None:
        if self._popen is None:
            raise ServerExitedError("it was never started")
        code = self._popen.poll()
        if code is not None:
            raise ServerExitedError(f"it exited with code {code} while starting")
        self.probe()
        self._check_owns_ports(self._popen.pid)

    def _check_owns_ports(self, pid: int) -> None:
        # A probe may be answered by another server that already held the port
        # while ours is failing to bind it; only our own listening socket counts.
        listening = set()
        for proc in process_tree(pid):
            with contextlib.suppress(psutil.Error):
                for conn in proc.net_connections("inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        listening.add(conn.laddr.port)
        missing = sorted(set(self.ports) - listening)
        if missing:
            raise ConnectionError(f"ports {missing} are answered by another process")

    def _start_error(self, reason: str) -> ServerStartError:
        return ServerStartError(
            f"{self.kind} did not start: {reason}. Its log {self.log_path} ends with"
            " the lines below; a port already in use or a leftover process from an"
            " earlier run are the usual causes",
            resource=self.describe(),
            details=tail(self.log_path, offset=self._log_offset),
        )

    def stop(self, timeout: float | None = None) -> None:
        """Ask the server to shut down, then end whatever is left of its tree."""
        if self._popen is None:
            return
        timeout = self.stop_timeout if timeout is None else timeout
        tree = process_tree(self._popen.pid)
        if self._popen.poll() is None:
            self._popen.send_signal(self.stop_signal)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s", self.describe(), timeout)
        # The leader may have been reaped, so its pid is looked up by session only.
        leftovers = {proc.pid: proc for proc in tree}
        leftovers.update((p.pid, p) for p in session_members(self._popen.pid))
        end_processes(list(leftovers.values()), _KILL_GRACE_SECONDS)
        self._popen.wait()
        self._close_log()
        logger.info("%s stopped", self.describe())

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> Self:
        """Stop the server and start it again on the same data."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_on_free_ports(build: Callable[[], ServerT], attempts: int = 3) -> ServerT:
    """Build a server with ``build`` and start it, building it anew on failure.

    ``build`` should pick its ports with ``free_port``, so that a port taken by
    another process between the pick and the bind is not picked again.
    """
    for attempt in range(1, attempts + 1):
        server = build()
        try:
            return server.start()
        except ServerStartError:
            if attempt == attempts:
                raise
            logger.warning("%s failed to start; trying new ports", server.describe())
    raise AssertionError("unreachable: the last attempt returns or raises")
