"""The task record and the queue message: what gateway and agent both speak.

A task lives in Redis as the hash ``task:{task_id}`` with the fields of
:class:`TaskRecord`, indexed per user in the sorted set ``user:{user_id}:tasks``
scored by its creation time. The queue carries a :class:`TaskMessage` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

Kind = Literal["agent", "synthetic"]
Status = Literal["queued", "running", "completed", "failed"]

KINDS: Final = ("agent", "synthetic")
STATUSES: Final = ("queued", "running", "completed", "failed")
FINISHED: Final = frozenset({"completed", "failed"})


def utc_now() -> str:
    """Return the current time as ISO-8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat()


def epoch_of(timestamp: str) -> float:
    """Return the POSIX time of an ISO-8601 timestamp written by :func:`utc_now`."""
    return datetime.fromisoformat(timestamp).timestamp()


def task_key(task_id: str) -> str:
    """Return the Redis key of a task's hash."""
    return f"task:{task_id}"


def user_index_key(user_id: str) -> str:
    """Return the Redis key of a user's sorted set of task ids."""
    return f"user:{user_id}:tasks"


class MalformedMessageError(ValueError):
    """A queue message that no agent can run; the reason says what is wrong."""


@dataclass(frozen=True)
class TaskRecord:
    """One task as stored: what was asked, by whom, and how it went."""

    task_id: str
    user_id: str
    kind: Kind
    mandate: str
    params: dict[str, Any] = field(default_factory=dict)
    status: Status = "queued"
    result: Any = None
    error: str | None = None
    created_at: str = field(default_factory=utc_now)
    updated_at: str = ""
    attempts: int = 0

    def __post_init__(self) -> None:
        if not self.updated_at:
            object.__setattr__(self, "updated_at", self.created_at)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def with_changes(self, **changes: Any) -> TaskRecord:
        """Return a copy with ``changes`` applied and ``updated_at`` set to now."""
        return replace(self, updated_at=utc_now(), **changes)

    def to_redis(self) -> dict[str, str]:
        """Return the hash fields, every value a string as Redis stores them."""
        return {
            "task_id": self.task_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "mandate": self.mandate,
            "params": json.dumps(self.params),
            "status": self.status,
            "result": "" if self.result is None else json.dumps(self.result),
            "error": self.error or "",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "attempts": str(self.attempts),
        }

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> TaskRecord:
        """Build a record from a hash read back from Redis (decoded strings)."""
        return cls(
            task_id=fields["task_id"],
            user_id=fields["user_id"],
            kind=cast(Kind, fields.get("kind", "agent")),
            mandate=fields.get("mandate", ""),
            params=json.loads(fields.get("params") or "{}"),
            status=cast(Status, fields.get("status", "queued")),
            result=json.loads(fields["result"]) if fields.get("result") else None,
            error=fields.get("error") or None,
            created_at=fields["created_at"],
            updated_at=fields.get("updated_at") or fields["created_at"],
            attempts=int(fields.get("attempts") or 0),
        )

    def to_message(self) -> TaskMessage:
        """Return the queue message that asks an agent to run this task."""
        return TaskMessage(
            task_id=self.task_id,
            user_id=self.user_id,
            kind=self.kind,
            mandate=self.mandate,
            params=self.params,
            submitted_at=self.created_at,
        )


@dataclass(frozen=True)
class TaskMessage:
    """The body of a message on the work queue."""

    task_id: str
    user_id: str
    kind: Kind
    mandate: str
    params: dict[str, Any]
    submitted_at: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "task_id": self.task_id,
                "user_id": self.user_id,
                "kind": self.kind,
                "mandate": self.mandate,
                "params": self.params,
                "submitted_at": self.submitted_at,
            }
        ).encode()

    @classmethod
    def parse(cls, body: bytes) -> TaskMessage:
        """Parse a message body, raising :class:`MalformedMessageError` with why."""
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MalformedMessageError(f"body is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise MalformedMessageError(
                f"body is a JSON {type(data).__name__}, expected an object"
            )
        for name in ("task_id", "user_id", "mandate", "submitted_at"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise MalformedMessageError(
                    f"field {name!r} must be a non-empty string"
                )
        if data.get("kind") not in KINDS:
            raise MalformedMessageError(
                f"field 'kind' is {data.get('kind')!r}, expected one of {KINDS}"
            )
        if not isinstance(data.get("params", {}), dict):
            raise MalformedMessageError("field 'params' must be an object")
        return cls(
            task_id=data["task_id"],
            user_id=data["user_id"],
            kind=data["kind"],
            mandate=data["mandate"],
            params=data.get("params", {}),
            submitted_at=data["submitted_at"],
        )

    def to_record(self) -> TaskRecord:
        """Rebuild the queued record from the message (when the store lost it)."""
        return TaskRecord(
            task_id=self.task_id,
            user_id=self.user_id,
            kind=self.kind,
            mandate=self.mandate,
            params=self.params,
            created_at=self.submitted_at,
        )
