"""Connectivity checks of the platform's dependencies, each timed and bounded.

Every check opens its own short-lived connection, so it measures whether the
dependency can be reached now, not whether an old connection is still open.
A check never raises: it reports ``ok``, the latency and the error it met.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis

from services.shared import rabbitmq

logger = logging.getLogger(__name__)

CHROMA_HEARTBEAT_PATH = "/api/v2/heartbeat"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one connectivity check."""

    ok: bool
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed(probe: Callable[[], object]) -> CheckResult:
    """Run ``probe`` and report whether it returned, how long it took, and why not."""
    started = time.perf_counter()
    try:
        probe()
    except Exception as error:
        elapsed = (time.perf_counter() - started) * 1000
        return CheckResult(False, round(elapsed, 2), f"{type(error).__name__}: {error}")
    elapsed = (time.perf_counter() - started) * 1000
    return CheckResult(True, round(elapsed, 2))


def check_redis(url: str, *, timeout: float = 2.0) -> CheckResult:
    """Check that Redis at ``url`` answers PING."""

    def probe() -> None:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            if not client.ping():
                raise ConnectionError("PING was not answered with PONG")
        finally:
            client.close()

    return timed(probe)


def check_rabbitmq(url: str, *, timeout: float = 3.0) -> CheckResult:
    """Check that RabbitMQ at ``url`` accepts a connection and opens a channel."""

    def probe() -> None:
        connection = rabbitmq.connect(url, heartbeat=0, timeout=timeout)
        try:
            connection.channel().close()
        finally:
            connection.close()

    return timed(probe)


def check_chroma(url: str, *, timeout: float = 3.0) -> CheckResult:
    """Check that Chroma at ``url`` answers its heartbeat."""
    return check_http(url.rstrip("/") + CHROMA_HEARTBEAT_PATH, timeout=timeout)


def check_http(
    url: str, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> CheckResult:
    """Check that ``url`` answers a GET with a status below 400."""

    def probe() -> None:
        response = httpx.get(
            url, timeout=timeout, headers=dict(headers or {}), follow_redirects=True
        )
        if response.status_code >= 400:
            raise ConnectionError(f"HTTP {response.status_code} from {url}")

    return timed(probe)


def all_ok(results: Mapping[str, CheckResult]) -> bool:
    """Return True when every check in ``results`` succeeded."""
    return all(result.ok for result in results.values())


def run_checks(
    checks: Mapping[str, Callable[[], CheckResult]],
) -> dict[str, CheckResult]:
    """Run ``checks`` side by side, so the slowest bounds the wait, not the sum."""
    with ThreadPoolExecutor(max_workers=max(1, len(checks))) as pool:
        futures = {name: pool.submit(check) for name, check in checks.items()}
        return {name: future.result() for name, future in futures.items()}
