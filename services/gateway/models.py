"""The gateway's request and response bodies, as its OpenAPI document shows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.shared.tasks import TaskRecord

SYNTHETIC_MAX_SECONDS = 3600.0


class TaskRequest(BaseModel):
    """A mandate for an agent."""

    model_config = ConfigDict(extra="forbid")

    mandate: str = Field(
        min_length=1,
        description="What the agent should do, in words (at most 16 KiB of UTF-8).",
        examples=["Summarise https://example.org"],
    )
    kind: Literal["agent", "synthetic"] = Field(
        default="agent",
        description="`agent` runs the agent; `synthetic` is the built-in workload.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Options of the run, a JSON object. For `synthetic`: `seconds` of work "
            f"(0 to {SYNTHETIC_MAX_SECONDS:g}) and `fail` (true to fail on purpose)."
        ),
        examples=[{"seconds": 2, "fail": False}],
    )


class TaskAccepted(BaseModel):
    """The answer to a submitted task: it is queued."""

    task_id: str
    status: Literal["queued"] = "queued"


class TaskView(BaseModel):
    """A task as its owner sees it."""

    task_id: str
    kind: Literal["agent", "synthetic"]
    status: Literal["queued", "running", "completed", "failed"]
    result: Any = Field(default=None, description="The run's result, once completed.")
    error: str | None = Field(default=None, description="Why the run failed.")
    created_at: str = Field(description="ISO-8601 UTC.")
    updated_at: str = Field(description="ISO-8601 UTC.")
    attempts: int = Field(description="How many times an agent started the task.")

    @classmethod
    def of(cls, record: TaskRecord) -> TaskView:
        return cls(
            task_id=record.task_id,
            kind=record.kind,
            status=record.status,
            result=record.result,
            error=record.error,
            created_at=record.created_at,
            updated_at=record.updated_at,
            attempts=record.attempts,
        )


class ErrorBody(BaseModel):
    """What every error answer carries: a message that says what to change."""

    detail: Any = Field(description="The reason, or the list of invalid fields.")


class DependencyStatus(BaseModel):
    """One dependency's connectivity, as last measured."""

    ok: bool
    latency_ms: float
    error: str | None = None


class HealthReport(BaseModel):
    """The gateway's view of its dependencies."""

    status: Literal["ok", "degraded"]
    dependencies: dict[str, DependencyStatus]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI entries documenting the given error status codes."""
    descriptions = {
        401: "Missing, malformed, expired or otherwise invalid bearer token.",
        404: "No such task among the caller's tasks.",
        413: "The body, the mandate or the params exceed their size limit.",
        422: "The body is not a valid task request; the detail says which field.",
        503: "A dependency is unavailable; nothing was changed. Retry later.",
    }
    return {
        code: {"model": ErrorBody, "description": descriptions[code]} for code in codes
    }
