"""Each tick: read the queue, then publish what is waiting in one PutMetricData.

A reading that CloudWatch could not take stays queued, with its own timestamp,
and goes out with the next tick's call, so an outage of CloudWatch leaves no
hole in the metric's history once it is back. A broker outage publishes
nothing: no reading is better than an invented one, and the autoscaler treats
a metric that stops as stale. Neither outage stops the loop.

When the management API cannot answer but AMQP can, an optional ``fallback``
reader (an AMQP passive declare) gives the ready and consumer counts, and only
those two metrics are published: AMQP cannot see unacknowledged messages, so
``QueueDepth`` would be a guess. ``/health`` names the source of each reading.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.shared.queue_metrics import (
    CONSUMER_COUNT,
    MESSAGES_READY,
    NAMESPACE,
    QUEUE_NAME,
    STORAGE_RESOLUTION,
    UNIT,
    MetricIdentity,
    QueueDepth,
)
from services.shared.rabbit_depth import QueueDepthError

logger = logging.getLogger(__name__)

# PutMetricData takes at most 1,000 datums per call; a reading makes four.
MAX_DATUMS_PER_CALL = 1000
MAX_PENDING_READINGS = MAX_DATUMS_PER_CALL // 4
# Errors after which the same datums may well be accepted later.
RETRYABLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "InternalFailure"}
)
# What an AMQP passive declare can count exactly.
PARTIAL_METRICS = (MESSAGES_READY, CONSUMER_COUNT)


@dataclass(frozen=True)
class Reading:
    """The queue's depth at one moment."""

    at: datetime
    depth: QueueDepth
    source: str = "management"  # or "amqp": ready and consumers only

    def metrics(self) -> dict[str, int]:
        """The metrics this reading can vouch for, by name."""
        every = self.depth.as_metrics()
        if self.source == "management":
            return every
        return {name: every[name] for name in PARTIAL_METRICS}

    def datums(self) -> list[dict[str, Any]]:
        dimensions = MetricIdentity().dimensions
        return [
            {
                "MetricName": name,
                "Dimensions": dimensions,
                "Timestamp": self.at,
                "Value": float(value),
                "Unit": UNIT,
                "StorageResolution": STORAGE_RESOLUTION,
            }
            for name, value in self.metrics().items()
        ]


@dataclass
class _Status:
    broker_ok: bool | None = None  # None until first tried
    cloudwatch_ok: bool | None = None
    last_reading_at: datetime | None = None
    last_publish_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_metrics: dict[str, int] | None = None
    depth_source: str | None = None


class MetricsPublisher:
    """Reads with ``read_depth`` and publishes with a boto3 CloudWatch client."""

    def __init__(
        self,
        read_depth: Callable[[], QueueDepth],
        cloudwatch: Any,
        *,
        fallback: Callable[[], QueueDepth] | None = None,
    ) -> None:
        self._read_depth = read_depth
        self._fallback = fallback
        self._cloudwatch = cloudwatch
        self._pending: deque[Reading] = deque(maxlen=MAX_PENDING_READINGS)
        self._status = _Status()
        self._lock = threading.Lock()

    def run(self, interval: float, stop: threading.Event) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set."""
        logger.info("publishing %s metrics every %ss", NAMESPACE, interval)
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # a bug in one tick must not end the service
                logger.exception("metrics tick failed")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def tick(self) -> None:
        """Take one reading and publish everything not yet published."""
        reading = self._read()
        if reading is not None:
            if len(self._pending) == self._pending.maxlen:
                logger.warning("dropping the oldest unpublished reading")
            self._pending.append(reading)
        if self._pending:
            self._publish()

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports: last publish, last error, each side's state."""
        with self._lock:
            status = self._status
            return {
                "status": "ok"
                if status.broker_ok and status.cloudwatch_ok
                else "degraded",
                "queue": QUEUE_NAME,
                "broker_ok": status.broker_ok,
                "cloudwatch_ok": status.cloudwatch_ok,
                "last_reading_at": _iso(status.last_reading_at),
                "last_publish_at": _iso(status.last_publish_at),
                "last_error": status.last_error,
                "last_error_at": _iso(status.last_error_at),
                "pending_readings": len(self._pending),
                "depth": status.last_metrics,
                "depth_source": status.depth_source,
            }

    def _read(self) -> Reading | None:
        try:
            depth = self._read_depth()
        except QueueDepthError as error:
            self._failed("broker", error)
            return self._read_fallback()
        with self._lock:
            if self._status.broker_ok is False:
                logger.info("queue depth readable again: %s", depth)
            self._status.broker_ok = True
        return self._record(Reading(at=datetime.now(UTC), depth=depth))

    def _read_fallback(self) -> Reading | None:
        if self._fallback is None:
            return None
        try:
            depth = self._fallback()
        except Exception as error:  # AMQP clients fail in many ways; all mean none
            logger.debug("AMQP fallback unavailable too: %r", error)
            return None
        logger.info("ready and consumer counts read over AMQP: %s", depth)
        return self._record(Reading(datetime.now(UTC), depth, source="amqp"))

    def _record(self, reading: Reading) -> Reading:
        with self._lock:
            self._status.last_reading_at = reading.at
            self._status.last_metrics = reading.metrics()
            self._status.depth_source = reading.source
        return reading

    def _publish(self) -> None:
        batch = list(self._pending)
        datums = [datum for reading in batch for datum in reading.datums()]
        try:
            self._cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=datums)
        except (BotoCoreError, ClientError) as error:
            if not _retryable(error):
                logger.error("CloudWatch refused %d readings; dropped", len(batch))
                self._pending.clear()
            self._failed("cloudwatch", error)
            return
        for _ in batch:
            self._pending.popleft()
        with self._lock:
            if self._status.cloudwatch_ok is False:
                logger.info("published to CloudWatch again")
            self._status.cloudwatch_ok = True
            self._status.last_publish_at = datetime.now(UTC)
        logger.debug("published %d readings (%d datums)", len(batch), len(datums))

    def _failed(self, side: str, error: Exception) -> None:
        with self._lock:
            was_ok = getattr(self._status, f"{side}_ok")
            setattr(self._status, f"{side}_ok", False)
            self._status.last_error = f"{side}: {error}"
            self._status.last_error_at = datetime.now(UTC)
        # One warning when a side goes down, then quieter until it is back.
        log = logger.debug if was_ok is False else logger.warning
        log("%s unavailable, will retry next tick: %s", side, error)


def _retryable(error: Exception) -> bool:
    if not isinstance(error, ClientError):
        return True  # connection errors and timeouts
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    return code in RETRYABLE_CODES or int(status) >= 500


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
