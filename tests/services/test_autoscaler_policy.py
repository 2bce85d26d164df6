"""The autoscaler's policy, as a pure function, and the settings that feed it."""

from __future__ import annotations

import itertools

import pytest

from services.lambda_autoscaling.policy import decide, workers_for
from services.lambda_autoscaling.settings import Policy, Settings
from services.shared import queue_metrics
from services.shared.config import SettingsError

REGION = "us-east-1"
POLICY = Policy(tasks_per_worker=5, min_workers=1, max_workers=5)

POLICY_TABLE = [
    # backlog, busy, current, cooldown elapsed -> desired, action
    (0, 0, 1, True, 1, "hold"),
    (0, 0, 3, True, 2, "scale_down"),
    (0, 0, 3, False, 3, "hold"),
    (0, 3, 3, True, 3, "hold"),
    (0, 2, 3, True, 2, "scale_down"),
    (0, 0, 0, False, 1, "scale_up"),
    (1, 0, 5, True, 4, "scale_down"),
    (5, 0, 1, False, 1, "hold"),
    (5, 0, 2, True, 1, "scale_down"),
    (6, 0, 1, False, 2, "scale_up"),
    (6, 0, 3, True, 2, "scale_down"),
    (6, 2, 2, True, 2, "hold"),
    (17, 0, 1, False, 4, "scale_up"),
    (17, 5, 1, False, 4, "scale_up"),
    (17, 0, 5, True, 4, "scale_down"),
    (17, 5, 5, True, 5, "hold"),
    (17, 0, 4, False, 4, "hold"),
    (250, 0, 1, False, 5, "scale_up"),
    (250, 0, 5, True, 5, "hold"),
    (250, 2, 3, False, 5, "scale_up"),
    (250, 0, 7, True, 6, "scale_down"),
]


@pytest.mark.parametrize(
    ("backlog", "busy", "current", "elapsed", "desired", "action"), POLICY_TABLE
)
def test_policy_table(
    backlog: int, busy: int, current: int, elapsed: bool, desired: int, action: str
) -> None:
    """Each row of the table gets its desired count and action."""
    decision = decide(
        backlog=backlog,
        busy=busy,
        current=current,
        cooldown_elapsed=elapsed,
        policy=POLICY,
    )

    assert (decision.desired, decision.action) == (desired, action), decision.reason


@pytest.mark.parametrize("backlog", [0, 1, 5, 6, 17, 250])
def test_policy_rules_hold_for_every_combination(backlog: int) -> None:
    """Up at once to the target, down one step after the cooldown, never below busy."""
    for busy, current, elapsed in itertools.product(range(7), range(7), (True, False)):
        decision = decide(
            backlog=backlog,
            busy=busy,
            current=current,
            cooldown_elapsed=elapsed,
            policy=POLICY,
        )
        target = workers_for(backlog, POLICY)
        case = f"backlog={backlog} busy={busy} current={current} elapsed={elapsed}"
        if target > current:
            assert (decision.action, decision.desired) == ("scale_up", target), case
        elif decision.action == "scale_down":
            assert elapsed, case
            assert decision.desired == current - 1 >= max(target, busy), case
        else:
            assert (decision.action, decision.desired) == ("hold", current), case
            assert not elapsed or target == current or busy >= current, case


def test_backlog_maps_to_workers_within_the_limits() -> None:
    """ceil(backlog / tasks per worker), clamped to [MIN_WORKERS, MAX_WORKERS]."""
    counts = [workers_for(b, POLICY) for b in (0, 1, 5, 6, 17, 250)]

    assert counts == [1, 1, 1, 2, 4, 5]


def test_settings_refuse_limits_that_cannot_hold() -> None:
    """MAX_WORKERS below MIN_WORKERS, or a missing cluster, is refused with the fix."""
    env = {
        "ECS_CLUSTER": "c",
        "AGENT_SERVICE": "agent",
        "AWS_REGION": REGION,
        "RABBITMQ_MANAGEMENT_URL": "http://u:p@rabbit:15672",
    }

    with pytest.raises(SettingsError, match="MAX_WORKERS=2 is below MIN_WORKERS=3"):
        Settings.from_env({**env, "MIN_WORKERS": "3", "MAX_WORKERS": "2"})
    with pytest.raises(SettingsError, match="ECS_CLUSTER"):
        Settings.from_env({**env, "ECS_CLUSTER": ""})
    with pytest.raises(SettingsError, match="SCALE_IN_COOLDOWN_SECONDS"):
        Settings.from_env({**env, "SCALE_IN_COOLDOWN_SECONDS": "99999"})
    identity = Settings.from_env(env).identity
    assert identity == queue_metrics.MetricIdentity()
