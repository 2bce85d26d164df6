"""The agent's side of the task record in Redis: starting, and recording the outcome."""

from __future__ import annotations

import logging
from typing import Any, cast

import redis

from services.shared.tasks import (
    TaskMessage,
    TaskRecord,
    epoch_of,
    task_key,
    user_index_key,
    utc_now,
)

logger = logging.getLogger(__name__)

REQUEUE_SCRIPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[1])
return 1
"""


class TaskLedger:
    """Reads and writes task records as the agent moves them along."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 3.0) -> TaskLedger:
        """Return a ledger on the Redis at ``url``, with bounded socket timeouts."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return cls(client)

    def load(self, task_id: str) -> TaskRecord | None:
        """Return the stored record of ``task_id``, or None when there is none."""
        fields = self._redis.hgetall(task_key(task_id))
        return TaskRecord.from_redis(cast(dict[str, str], fields)) if fields else None

    def start(self, message: TaskMessage, stored: TaskRecord | None) -> TaskRecord:
        """Mark the task running and count the attempt; rebuild it if it was lost."""
        if stored is None:
            logger.warning("task %s had no record; rebuilding it", message.task_id)
            stored = message.to_record()
            self._write(stored)
        now = utc_now()
        pipeline = self._redis.pipeline(transaction=True)
        pipeline.hincrby(task_key(message.task_id), "attempts", 1)
        pipeline.hset(
            task_key(message.task_id),
            mapping={"status": "running", "updated_at": now, "error": ""},
        )
        attempts = int(pipeline.execute()[0])
        return stored.with_changes(status="running", attempts=attempts, error=None)

    def requeue(self, task_id: str) -> bool:
        """Mark a running task queued again; False when it is not running."""
        # One script, so an outcome stored meanwhile is never overwritten.
        changed = self._redis.eval(REQUEUE_SCRIPT, 1, task_key(task_id), utc_now())
        return bool(changed)

    def finish(self, record: TaskRecord) -> None:
        """Store the final ``record``; once this returns, the outcome is durable."""
        self._write(record)

    def close(self) -> None:
        self._redis.close()

    def _write(self, record: TaskRecord) -> None:
        fields: dict[Any, Any] = record.to_redis()  # redis-py's mapping is invariant
        pipeline = self._redis.pipeline(transaction=True)
        pipeline.hset(task_key(record.task_id), mapping=fields)
        pipeline.zadd(
            user_index_key(record.user_id),
            {record.task_id: epoch_of(record.created_at)},
        )
        pipeline.execute()
