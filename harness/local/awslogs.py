"""The ``awslogs`` driver of the local target: container output to CloudWatch Logs.

:class:`CloudWatchLogsSink` is a log sink for
:class:`~harness.local.supervisor.TaskRunner`: it takes (group, stream, line),
stamps each line with the time it was read, and sends the lines in batches with
``put_log_events``, creating the stream on first use as the ECS agent does.

Note: as without ``awslogs-create-group``, the log group must exist; lines for a
missing group are dropped with a warning, where ECS would not start the task.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from types import TracebackType
from typing import Any, Self

from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
# put_log_events takes at most 10,000 events and 1 MB; stay well inside both.
_BATCH_EVENTS = 1000
_BATCH_BYTES = 512 * 1024


class CloudWatchLogsSink:
    """Sends container output lines to CloudWatch Logs in the background."""

    def __init__(self, logs: Any, *, flush_seconds: float = FLUSH_SECONDS) -> None:
        self._logs = logs
        self._flush_seconds = flush_seconds
        self._pending: list[tuple[str, str, int, str]] = []
        self._streams: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="awslogs", daemon=True)
        self._thread.start()

    def __call__(self, group: str, stream: str, line: str) -> None:
        # CloudWatch refuses empty messages; an empty line carries nothing.
        if not line:
            return
        with self._lock:
            self._pending.append((group, stream, int(time.time() * 1000), line))

    def flush(self) -> None:
        """Send every line taken so far."""
        with self._send_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            by_stream: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
            for group, stream, stamp, line in pending:
                by_stream[group, stream].append({"timestamp": stamp, "message": line})
            for (group, stream), events in by_stream.items():
                self._send(group, stream, events)

    def close(self) -> None:
        """Send what is left and stop the background sender."""
        self._closed.set()
        self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._closed.wait(self._flush_seconds):
            try:
                self.flush()
            except Exception:
                logger.exception("sending container logs failed")

    def _send(self, group: str, stream: str, events: list[dict[str, Any]]) -> None:
        try:
            self._ensure_stream(group, stream)
            for batch in _batches(events):
                self._logs.put_log_events(
                    logGroupName=group, logStreamName=stream, logEvents=batch
                )
        except ClientError as exc:
            logger.warning(
                "dropped %s log lines for %s/%s: %s", len(events), group, stream, exc
            )

    def _ensure_stream(self, group: str, stream: str) -> None:
        if (group, stream) in self._streams:
            return
        exists = self._logs.exceptions.ResourceAlreadyExistsException
        with contextlib.suppress(exists):
            self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
        self._streams.add((group, stream))
        logger.debug("log stream %s/%s ready", group, stream)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split events, oldest first, into batches put_log_events accepts."""
    events = sorted(events, key=lambda event: int(event["timestamp"]))
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for event in events:
        cost = len(event["message"].encode()) + 26
        if len(batches[-1]) >= _BATCH_EVENTS or size + cost > _BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(event)
        size += cost
    return [batch for batch in batches if batch]
