"""The scaling policy, as a pure function of what one invocation observed.

The backlog asks for ``ceil(backlog / tasks_per_worker)`` workers, clamped to
``[min_workers, max_workers]``. More workers are granted at once. Fewer are
given back one at a time, only once the backlog has stayed low for the whole
cooldown, and never fewer than the agents that are busy (protected).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from services.lambda_autoscaling.settings import Policy

Action = Literal["scale_up", "scale_down", "hold"]


@dataclass(frozen=True)
class Decision:
    """The desired count to set, the action it amounts to, and why."""

    desired: int
    action: Action
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def workers_for(backlog: int, policy: Policy) -> int:
    """How many workers ``backlog`` messages call for, within the limits."""
    wanted = math.ceil(max(backlog, 0) / policy.tasks_per_worker)
    return min(max(wanted, policy.min_workers), policy.max_workers)


def decide(
    *, backlog: int, busy: int, current: int, cooldown_elapsed: bool, policy: Policy
) -> Decision:
    """Decide the agent service's desired count."""
    target = workers_for(backlog, policy)
    need = f"backlog {backlog} needs {target} worker(s)"
    if target > current:
        return Decision(target, "scale_up", f"{need}; {current} desired")
    if target == current:
        return Decision(current, "hold", f"{need}; {current} desired already")
    if max(target, busy) >= current:
        return Decision(
            current, "hold", f"{need}, but {busy} busy agent(s) keep {current}"
        )
    if not cooldown_elapsed:
        return Decision(
            current,
            "hold",
            f"{need}, but the backlog has not stayed low for the "
            f"{policy.scale_in_cooldown_seconds}s cooldown",
        )
    return Decision(
        current - 1, "scale_down", f"{need}; stepping down from {current} by one"
    )
