"""The autoscaler's settings, read once per Lambda container from its environment.

Required: ``ECS_CLUSTER``, ``AGENT_SERVICE``, ``RABBITMQ_MANAGEMENT_URL`` (the
management API without credentials) with ``RABBITMQ_USER`` and
``RABBITMQ_PASSWORD``, and ``AWS_REGION``. ``METRIC_NAMESPACE``,
``METRIC_NAME`` and ``METRIC_QUEUE_NAME`` default to ``queue_metrics``; the
deploy writes them out so that a wrong value shows in the function's
configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from services.shared import config
from services.shared.queue_metrics import (
    NAMESPACE,
    QUEUE_DEPTH,
    QUEUE_NAME,
    MetricIdentity,
)
from services.shared.rabbit_depth import ManagementEndpoint

# Beyond three hours CloudWatch keeps high-resolution data only per minute, so
# the per-second history the cooldown is judged from would be gone.
MAX_COOLDOWN_SECONDS = 3 * 60 * 60


@dataclass(frozen=True)
class Policy:
    """How many workers a backlog needs, and how slowly to give them back."""

    tasks_per_worker: int = 5
    min_workers: int = 1
    max_workers: int = 5
    scale_in_cooldown_seconds: int = 300
    metric_freshness_seconds: int = 60

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    """Everything one invocation needs besides the event."""

    cluster: str
    service: str
    region: str
    management: ManagementEndpoint
    identity: MetricIdentity
    policy: Policy

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = config.environment(environ)
        return cls(
            cluster=config.required(env, "ECS_CLUSTER", "set the ECS cluster name"),
            service=config.required(
                env, "AGENT_SERVICE", "set the agent service's name"
            ),
            region=config.optional(env, "AWS_REGION")
            or config.required(env, "AWS_DEFAULT_REGION", "set AWS_REGION"),
            management=_management(env),
            identity=MetricIdentity(
                namespace=config.optional(env, "METRIC_NAMESPACE", NAMESPACE),
                metric_name=config.optional(env, "METRIC_NAME", QUEUE_DEPTH),
                queue_name=config.optional(env, "METRIC_QUEUE_NAME", QUEUE_NAME),
            ),
            policy=_policy(env),
        )


def _management(env: Mapping[str, str]) -> ManagementEndpoint:
    url = config.required(
        env,
        "RABBITMQ_MANAGEMENT_URL",
        "set the management API's URL, e.g. http://rabbitmq:15672; the "
        "autoscaler reads the queue there when the metric is stale",
    )
    try:
        return ManagementEndpoint.from_url(
            url,
            config.optional(env, "RABBITMQ_USER") or None,
            config.optional(env, "RABBITMQ_PASSWORD") or None,
        )
    except ValueError as error:
        raise config.SettingsError(str(error)) from None


def _policy(env: Mapping[str, str]) -> Policy:
    policy = Policy(
        tasks_per_worker=config.integer(env, "TASKS_PER_WORKER", 5, minimum=1),
        min_workers=config.integer(env, "MIN_WORKERS", 1, minimum=0),
        max_workers=config.integer(env, "MAX_WORKERS", 5, minimum=1),
        scale_in_cooldown_seconds=config.integer(
            env, "SCALE_IN_COOLDOWN_SECONDS", 300, minimum=0
        ),
        metric_freshness_seconds=config.integer(
            env, "METRIC_FRESHNESS_SECONDS", 60, minimum=1
        ),
    )
    if policy.max_workers < policy.min_workers:
        raise config.SettingsError(
            f"MAX_WORKERS={policy.max_workers} is below MIN_WORKERS="
            f"{policy.min_workers}: raise MAX_WORKERS or lower MIN_WORKERS"
        )
    if policy.scale_in_cooldown_seconds > MAX_COOLDOWN_SECONDS:
        raise config.SettingsError(
            f"SCALE_IN_COOLDOWN_SECONDS={policy.scale_in_cooldown_seconds} is over "
            f"{MAX_COOLDOWN_SECONDS}, beyond CloudWatch's per-second history: "
            "lower it"
        )
    return policy
