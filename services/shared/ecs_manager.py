"""Scale-in protection of the ECS task this process runs in.

A busy agent holds protection so that a scale-in stops idle tasks only. The
ECS agent's endpoint ``$ECS_AGENT_URI/task-protection/v1/state`` is asked
first (as on Fargate); when it fails, the ECS API's ``UpdateTaskProtection`` is
called with the cluster and task ARN that the task metadata endpoint
(``$ECS_CONTAINER_METADATA_URI_V4/task``) names. Outside ECS neither variable
is set and protection is a no-op, said once in the log.

Protection is enabled when work starts, renewed at half its lifetime by a
background thread while the work goes on, and released when the work ends or
fails. A process that gives up on work still running (a shutdown that requeues
the task) calls :meth:`TaskProtection.drop` to stop the renewal and release at
once, since the work's own release would come too late or never.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)

STATE_PATH = "/task-protection/v1/state"
DEFAULT_MINUTES = 60
MAX_MINUTES = 2880


class ProtectionError(Exception):
    """The protection state could not be changed or read."""


@dataclass(frozen=True)
class ProtectionState:
    """Whether the task is protected, until when, as ECS reports it."""

    enabled: bool
    expiration: str | None = None
    task_arn: str | None = None


@dataclass(frozen=True)
class TaskMetadata:
    """The identity of the task this process runs in."""

    cluster: str
    task_arn: str

    @property
    def region(self) -> str | None:
        parts = self.task_arn.split(":")
        return parts[3] if len(parts) > 3 and parts[3] else None


def read_task_metadata(metadata_uri: str, *, timeout: float = 3.0) -> TaskMetadata:
    """Read cluster and task ARN from the task metadata endpoint (v4)."""
    try:
        response = httpx.get(metadata_uri.rstrip("/") + "/task", timeout=timeout)
        response.raise_for_status()
        body = response.json()
        return TaskMetadata(cluster=body["Cluster"], task_arn=body["TaskARN"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        raise ProtectionError(
            f"task metadata at {metadata_uri}/task is unusable: {error!r}"
        ) from error


class Backend(Protocol):
    """One way of setting the task's protection."""

    name: str

    def set(self, enabled: bool, minutes: int) -> ProtectionState: ...

    def get(self) -> ProtectionState: ...


class AgentEndpoint:
    """The ECS agent's task protection endpoint, reachable from inside the task."""

    name = "ECS agent endpoint"

    def __init__(self, agent_uri: str, *, timeout: float = 5.0) -> None:
        self._url = agent_uri.rstrip("/") + STATE_PATH
        self._timeout = timeout

    def set(self, enabled: bool, minutes: int) -> ProtectionState:
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = minutes
        return self._call("PUT", body)

    def get(self) -> ProtectionState:
        return self._call("GET", None)

    def _call(self, method: str, body: dict[str, Any] | None) -> ProtectionState:
        try:
            response = httpx.request(
                method, self._url, json=body, timeout=self._timeout
            )
            payload = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ProtectionError(f"{method} {self._url} failed: {error!r}") from error
        if not isinstance(payload, dict):
            raise ProtectionError(f"{method} {self._url} answered {payload!r}")
        return parse_agent_answer(payload, f"{method} {self._url}")


def parse_agent_answer(payload: dict[str, Any], call: str) -> ProtectionState:
    """Turn the ECS agent's answer into a state, or raise with its failure."""
    for key in ("failure", "error"):
        if payload.get(key):
            raise ProtectionError(f"{call} answered {key}: {payload[key]}")
    protection = payload.get("protection")
    if not isinstance(protection, dict):
        raise ProtectionError(f"{call} answered without protection: {payload!r}")
    return ProtectionState(
        enabled=bool(protection.get("ProtectionEnabled")),
        expiration=protection.get("ExpirationDate"),
        task_arn=protection.get("TaskArn"),
    )


class EcsApi:
    """The ECS API's task protection calls, for the task the metadata names."""

    name = "ECS API"

    def __init__(self, metadata_uri: str, *, client: Any = None) -> None:
        self._metadata_uri = metadata_uri
        self._client = client

    @cached_property
    def metadata(self) -> TaskMetadata:
        return read_task_metadata(self._metadata_uri)

    def set(self, enabled: bool, minutes: int) -> ProtectionState:
        arguments: dict[str, Any] = {"protectionEnabled": enabled}
        if enabled:
            arguments["expiresInMinutes"] = minutes
        return self._call("update_task_protection", arguments)

    def get(self) -> ProtectionState:
        return self._call("get_task_protection", {})

    def _call(self, operation: str, arguments: dict[str, Any]) -> ProtectionState:
        metadata = self.metadata
        try:
            answer = getattr(self._ecs(), operation)(
                cluster=metadata.cluster, tasks=[metadata.task_arn], **arguments
            )
        except Exception as error:
            raise ProtectionError(f"ECS {operation} failed: {error!r}") from error
        if answer.get("failures"):
            raise ProtectionError(f"ECS {operation} failed: {answer['failures']}")
        tasks = answer.get("protectedTasks") or [{}]
        expiration = tasks[0].get("expirationDate")
        return ProtectionState(
            enabled=bool(tasks[0].get("protectionEnabled")),
            expiration=None if expiration is None else str(expiration),
            task_arn=tasks[0].get("taskArn", metadata.task_arn),
        )

    def _ecs(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("ecs", region_name=self.metadata.region)
        return self._client


class TaskProtection:
    """Holds scale-in protection around units of work; see the module docstring."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        minutes: int = DEFAULT_MINUTES,
        renew_every: float | None = None,
    ) -> None:
        if not 1 <= minutes <= MAX_MINUTES:
            raise ValueError(
                f"protection of {minutes} minutes is outside ECS's 1 to {MAX_MINUTES}"
            )
        self._backends = backends
        self._lock = threading.Lock()
        self._holding: threading.Event | None = None  # the renewal to stop
        self.minutes = minutes
        self.renew_every = renew_every if renew_every else minutes * 60 / 2
        if not backends:
            logger.info("no ECS agent in this environment: task protection is off")

    @classmethod
    def for_task(
        cls,
        agent_uri: str | None,
        metadata_uri: str | None,
        *,
        minutes: int = DEFAULT_MINUTES,
    ) -> TaskProtection:
        """Build from the task's ``ECS_AGENT_URI`` and metadata URI (v4), if any."""
        backends: list[Backend] = []
        if agent_uri:
            backends.append(AgentEndpoint(agent_uri))
        if metadata_uri:
            backends.append(EcsApi(metadata_uri))
        return cls(backends, minutes=minutes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, minutes: int = DEFAULT_MINUTES
    ) -> TaskProtection:
        """Build from ``ECS_AGENT_URI`` and ``ECS_CONTAINER_METADATA_URI_V4``."""
        return cls.for_task(
            environ.get("ECS_AGENT_URI"),
            environ.get("ECS_CONTAINER_METADATA_URI_V4"),
            minutes=minutes,
        )

    @property
    def is_active(self) -> bool:
        return bool(self._backends)

    def enable(self) -> ProtectionState | None:
        """Protect the task for ``minutes`` from now; None when nothing could."""
        return self._apply(enabled=True)

    def release(self) -> ProtectionState | None:
        """End the task's protection; None when nothing could."""
        return self._apply(enabled=False)

    def state(self) -> ProtectionState | None:
        """Return the current protection as the first working backend reports it."""
        for backend in self._backends:
            try:
                return backend.get()
            except ProtectionError as error:
                logger.warning("reading protection via %s: %s", backend.name, error)
        return None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold protection for the duration of the ``with`` block, renewing it."""
        if not self._backends:
            yield
            return
        self.enable()
        stop = threading.Event()
        with self._lock:
            self._holding = stop
        renewer = threading.Thread(
            target=self._renew_until,
            args=(stop,),
            name="protection-renewal",
            daemon=True,
        )
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            if self._end_hold(stop):
                self.release()

    def drop(self) -> ProtectionState | None:
        """Stop renewing the current hold and release now; None if none is held."""
        with self._lock:
            stop, self._holding = self._holding, None
        if stop is None:
            return None
        stop.set()
        logger.info("releasing task protection while the work is abandoned")
        return self.release()

    def _end_hold(self, stop: threading.Event) -> bool:
        """Forget the hold of ``stop``; False when :meth:`drop` already released it."""
        with self._lock:
            if self._holding is not stop:
                return False
            self._holding = None
            return True

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.renew_every):
            logger.info("renewing task protection for %s minutes", self.minutes)
            self.enable()

    def _apply(self, *, enabled: bool) -> ProtectionState | None:
        for backend in self._backends:
            try:
                state = backend.set(enabled, self.minutes)
            except ProtectionError as error:
                logger.warning("task protection via %s: %s", backend.name, error)
                continue
            logger.info(
                "task protection %s via %s (until %s)",
                "on" if enabled else "off",
                backend.name,
                state.expiration,
            )
            return state
        if self._backends:
            logger.error(
                "task protection could not be turned %s", "on" if enabled else "off"
            )
        return None
