"""Where the gateway keeps tasks: the :class:`TaskStorage` interface and its Redis form.

The gateway depends only on :class:`TaskStorage`, so another store (a Supabase
one) can stand behind the same five calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import redis

from services.shared.tasks import TaskRecord, epoch_of, task_key, user_index_key

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StoreUnavailableError(Exception):
    """The store could not be reached; nothing was changed, or it is unknown."""


class TaskStorage(Protocol):
    """What the gateway needs from a task store."""

    def create(self, record: TaskRecord) -> None: ...

    def get(self, task_id: str) -> TaskRecord | None: ...

    def list_for_user(self, user_id: str, *, limit: int) -> list[TaskRecord]: ...

    def discard(self, record: TaskRecord) -> None: ...

    def ping(self) -> None: ...


class TaskStore:
    """Tasks in Redis: a hash per task and a sorted set of task ids per user."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 3.0) -> TaskStore:
        """Return a store on the Redis at ``url``, with bounded socket timeouts."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return cls(client)

    def create(self, record: TaskRecord) -> None:
        """Write ``record`` and index it under its user, atomically."""
        pipeline = self._redis.pipeline(transaction=True)
        fields: dict[Any, Any] = (
            record.to_redis()
        )  # redis-py's mapping type is invariant
        pipeline.hset(task_key(record.task_id), mapping=fields)
        pipeline.zadd(
            user_index_key(record.user_id),
            {record.task_id: epoch_of(record.created_at)},
        )
        self._run(pipeline.execute)

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the task ``task_id``, or None when there is none."""
        fields = self._run(lambda: self._redis.hgetall(task_key(task_id)))
        return TaskRecord.from_redis(cast(dict[str, str], fields)) if fields else None

    def list_for_user(self, user_id: str, *, limit: int) -> list[TaskRecord]:
        """Return up to ``limit`` of the user's tasks, newest first."""
        ids = cast(
            list[str],
            self._run(
                lambda: self._redis.zrevrange(user_index_key(user_id), 0, limit - 1)
            ),
        )
        pipeline = self._redis.pipeline(transaction=False)
        for task_id in ids:
            pipeline.hgetall(task_key(task_id))
        rows = self._run(pipeline.execute) if ids else []
        return [TaskRecord.from_redis(fields) for fields in rows if fields]

    def discard(self, record: TaskRecord) -> None:
        """Remove ``record`` and its index entry, as if it was never created."""
        pipeline = self._redis.pipeline(transaction=True)
        pipeline.delete(task_key(record.task_id))
        pipeline.zrem(user_index_key(record.user_id), record.task_id)
        self._run(pipeline.execute)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless Redis answers."""
        self._run(self._redis.ping)

    def close(self) -> None:
        self._redis.close()

    @staticmethod
    def _run(action: Callable[[], T]) -> T:
        try:
            return action()
        except redis.RedisError as error:
            raise StoreUnavailableError(f"Redis: {error}") from error
