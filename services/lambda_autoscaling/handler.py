"""The autoscaler Lambda's entry point: ``services.lambda_autoscaling.handler.handler``.

Each invocation observes the queue (CloudWatch, or RabbitMQ when the metric is
stale) and the agent service (counts, last scaling, busy agents), decides with
the pure policy, applies the decision unless the event says
``{"dry_run": true}``, and returns and logs one JSON decision record.

The cooldown is judged from what AWS holds, so separate invocations agree: the
backlog must have stayed low over the whole cooldown window of the metric's
history, and the service must not have changed size within it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from services.lambda_autoscaling import depth, ecs_state, policy
from services.lambda_autoscaling.settings import Settings

logger = logging.getLogger(__name__)
# The Lambda runtime's root logger passes INFO on only when asked; the decision
# record is the one line every invocation must leave in the log.
logger.setLevel(logging.INFO)

# Standard retries back off on throttling and transient errors.
CLIENT_CONFIG = Config(
    connect_timeout=3, read_timeout=10, retries={"max_attempts": 5, "mode": "standard"}
)


@cache
def _settings() -> Settings:
    return Settings.from_env()


@cache
def _client(service: str, region: str) -> Any:
    return boto3.client(service, region_name=region, config=CLIENT_CONFIG)


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    """Decide the agent service's size, apply it unless dry-run, return the record."""
    settings = _settings()
    dry_run = bool((event or {}).get("dry_run", False))
    record = run(
        settings,
        cloudwatch=_client("cloudwatch", settings.region),
        ecs=_client("ecs", settings.region),
        dry_run=dry_run,
        now=datetime.now(UTC),
    )
    logger.info("%s", json.dumps(record, sort_keys=True))
    return record


def run(
    settings: Settings, *, cloudwatch: Any, ecs: Any, dry_run: bool, now: datetime
) -> dict[str, Any]:
    """One invocation's work, with the clients and clock given."""
    observed = depth.observe(settings, cloudwatch, now)
    service = ecs_state.read_service(ecs, settings.cluster, settings.service)
    busy = ecs_state.count_busy(ecs, settings.cluster, settings.service)
    elapsed, cooldown_reason = _cooldown(settings, observed, service, now)
    decision = _decide(settings, observed, service, busy, elapsed)
    applied = _apply(ecs, settings, decision, dry_run)
    return {
        "at": now.isoformat(),
        "dry_run": dry_run,
        "applied": applied,
        "cluster": settings.cluster,
        "service": settings.service,
        "metric": {
            "namespace": settings.identity.namespace,
            "metric_name": settings.identity.metric_name,
            "dimensions": settings.identity.dimensions,
        },
        "inputs": _inputs(observed, service, busy),
        "policy": settings.policy.as_dict(),
        "cooldown": {"elapsed": elapsed, "reason": cooldown_reason},
        "decision": decision.as_dict(),
    }


def _decide(
    settings: Settings,
    observed: depth.Observation,
    service: ecs_state.ServiceState,
    busy: int,
    cooldown_elapsed: bool,
) -> policy.Decision:
    if observed.depth is None:
        reason = f"no reading of the queue: {observed.reason}"
        return policy.Decision(service.desired, "hold", reason)
    return policy.decide(
        backlog=observed.depth,
        busy=busy,
        current=service.desired,
        cooldown_elapsed=cooldown_elapsed,
        policy=settings.policy,
    )


def _cooldown(
    settings: Settings,
    observed: depth.Observation,
    service: ecs_state.ServiceState,
    now: datetime,
) -> tuple[bool, str]:
    """Whether a scale-in may happen now, and why (not)."""
    cooldown = timedelta(seconds=settings.policy.scale_in_cooldown_seconds)
    last = service.last_scaling_at
    if last is not None and now - last < cooldown:
        return (
            False,
            f"the service changed size {(now - last).total_seconds():.0f}s ago",
        )
    if not observed.history_covers_window:
        return False, "the metric's history does not span the cooldown window"
    low = policy.workers_for(observed.window_max_depth or 0, settings.policy)
    if observed.window_max_depth is not None and low >= service.desired:
        return False, (
            f"the backlog reached {observed.window_max_depth} within the cooldown"
        )
    return True, f"backlog low and no scaling for {cooldown.total_seconds():.0f}s"


def _apply(
    ecs: Any, settings: Settings, decision: policy.Decision, dry_run: bool
) -> bool:
    if decision.action == "hold" or dry_run:
        return False
    ecs.update_service(
        cluster=settings.cluster,
        service=settings.service,
        desiredCount=decision.desired,
    )
    logger.info("%s %s to %d", decision.action, settings.service, decision.desired)
    return True


def _inputs(
    observed: depth.Observation, service: ecs_state.ServiceState, busy: int
) -> dict[str, Any]:
    last = service.last_scaling_at
    return {
        "depth": observed.depth,
        "ready": observed.ready,
        "unacked": observed.unacked,
        "source": observed.source,
        "source_reason": observed.reason,
        "metric_age_seconds": observed.metric_age_seconds,
        "window_max_depth": observed.window_max_depth,
        "busy": busy,
        "current_desired": service.desired,
        "running": service.running,
        "pending": service.pending,
        "last_scaling_at": last.isoformat() if last else None,
    }
