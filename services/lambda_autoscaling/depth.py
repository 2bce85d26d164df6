"""The queue's depth as CloudWatch holds it, or as RabbitMQ tells it when stale.

One ``GetMetricData`` call reads the depth metric and its ready and
unacknowledged companions per second over the cooldown window. What
CloudWatch really does shapes the query:

- buckets are aligned to the period, so the newest bucket's timestamp is up to
  a period older than its datapoint: a one-second period keeps that error small;
- the newest datapoint may not be readable yet at the window's edge, and
  EndTime is compared in whole seconds: the window ends a minute in the future
  and the metric's age is measured from the newest datapoint present;
- a metric may have no data at all.

A metric older than ``metric_freshness_seconds``, missing, or unreadable sends
the autoscaler to the RabbitMQ management API, and the observation says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.lambda_autoscaling.settings import Settings
from services.shared.queue_metrics import (
    MESSAGES_READY,
    MESSAGES_UNACKNOWLEDGED,
    MetricIdentity,
)
from services.shared.rabbit_depth import QueueDepthError, read_queue_depth

logger = logging.getLogger(__name__)

PERIOD_SECONDS = 1
STALE_LOOKBACK = 10  # freshness periods
FUTURE_MARGIN = timedelta(seconds=60)
_QUERY_IDS = {
    "depth": "depth",
    MESSAGES_READY: "ready",
    MESSAGES_UNACKNOWLEDGED: "unacked",
}


@dataclass(frozen=True)
class Series:
    """Datapoints of one metric, newest first."""

    points: list[tuple[datetime, float]]

    def newest(self) -> tuple[datetime, float] | None:
        return self.points[0] if self.points else None

    def since(self, start: datetime) -> list[tuple[datetime, float]]:
        return [point for point in self.points if point[0] >= start]


@dataclass(frozen=True)
class Observation:
    """What the autoscaler knows of the queue, and from where."""

    depth: int | None
    ready: int | None
    unacked: int | None
    source: str  # "cloudwatch", "rabbitmq" or "none"
    reason: str
    metric_age_seconds: float | None
    window_max_depth: int | None
    history_covers_window: bool


def observe(settings: Settings, cloudwatch: Any, now: datetime) -> Observation:
    """Read the depth from CloudWatch, falling back to RabbitMQ when stale."""
    policy = settings.policy
    # Far enough back to tell a stale metric (and its age) from a missing one.
    lookback = max(
        policy.scale_in_cooldown_seconds,
        STALE_LOOKBACK * policy.metric_freshness_seconds,
    )
    try:
        series = read_series(cloudwatch, settings.identity, now, lookback)
    except (BotoCoreError, ClientError) as error:
        logger.warning("CloudWatch unreadable: %s", error)
        return _fallback(settings, f"CloudWatch unreadable ({error})", None)
    newest = series["depth"].newest()
    age = None if newest is None else max(0.0, (now - newest[0]).total_seconds())
    unusable = _unusable(settings, age, lookback)
    if newest is None or age is None or unusable:
        return _fallback(settings, unusable, age)
    window_max, covers = _history(series["depth"], now, settings)
    return Observation(
        depth=int(newest[1]),
        ready=_newest_int(series[MESSAGES_READY]),
        unacked=_newest_int(series[MESSAGES_UNACKNOWLEDGED]),
        source="cloudwatch",
        reason=f"{settings.identity.describe()} fresh: {age:.0f}s old",
        metric_age_seconds=round(age, 3),
        window_max_depth=window_max,
        history_covers_window=covers,
    )


def _unusable(settings: Settings, age: float | None, lookback: int) -> str:
    """Why the metric cannot be used (missing or stale), or "" when it can."""
    metric = settings.identity.describe()
    freshness = settings.policy.metric_freshness_seconds
    if age is None:
        return f"{metric} has no datapoints in the last {lookback}s"
    if age > freshness:
        return (
            f"{metric} is stale: newest datapoint {age:.0f}s old, over "
            f"METRIC_FRESHNESS_SECONDS={freshness}"
        )
    return ""


def read_series(
    cloudwatch: Any, identity: MetricIdentity, now: datetime, lookback: int
) -> dict[str, Series]:
    """Per-second maxima of the depth, ready and unacked metrics, newest first."""
    whole_second = now.replace(microsecond=0)
    arguments: dict[str, Any] = {
        "MetricDataQueries": _queries(identity),
        "StartTime": whole_second - timedelta(seconds=lookback),
        "EndTime": whole_second + FUTURE_MARGIN,
        "ScanBy": "TimestampDescending",
    }
    points: dict[str, list[tuple[datetime, float]]] = {key: [] for key in _QUERY_IDS}
    by_id = {query_id: key for key, query_id in _QUERY_IDS.items()}
    while True:
        logger.debug("GetMetricData %s since %ss", identity.describe(), lookback)
        page = cloudwatch.get_metric_data(**arguments)
        for result in page.get("MetricDataResults", []):
            key = by_id[result["Id"]]
            points[key].extend(zip(result["Timestamps"], result["Values"], strict=True))
        if not page.get("NextToken"):
            break
        arguments["NextToken"] = page["NextToken"]
    return {key: Series(sorted(p, reverse=True)) for key, p in points.items()}


def _queries(identity: MetricIdentity) -> list[dict[str, Any]]:
    names = {
        "depth": identity.metric_name,
        MESSAGES_READY: MESSAGES_READY,
        MESSAGES_UNACKNOWLEDGED: MESSAGES_UNACKNOWLEDGED,
    }
    return [
        {
            "Id": _QUERY_IDS[key],
            "MetricStat": {
                "Metric": {
                    "Namespace": identity.namespace,
                    "MetricName": name,
                    "Dimensions": identity.dimensions,
                },
                "Period": PERIOD_SECONDS,
                "Stat": "Maximum",
            },
            "ReturnData": True,
        }
        for key, name in names.items()
    ]


def _history(
    series: Series, now: datetime, settings: Settings
) -> tuple[int | None, bool]:
    """The deepest backlog within the cooldown, and whether data spans it."""
    cooldown = settings.policy.scale_in_cooldown_seconds
    if cooldown == 0:
        return None, True
    start = now - timedelta(seconds=cooldown)
    window = series.since(start)
    if not window:
        return None, False
    earliest = min(timestamp for timestamp, _ in window)
    slack = timedelta(seconds=settings.policy.metric_freshness_seconds)
    return int(max(value for _, value in window)), earliest <= start + slack


def _fallback(settings: Settings, why: str, age: float | None) -> Observation:
    identity = settings.identity
    try:
        depth = read_queue_depth(settings.management, identity.queue_name)
    except QueueDepthError as error:
        logger.error("no queue depth from CloudWatch or RabbitMQ: %s; %s", why, error)
        return Observation(
            None, None, None, "none", f"{why}; RabbitMQ: {error}", age, None, False
        )
    logger.warning("queue depth read from RabbitMQ: %s", why)
    return Observation(
        depth=depth.depth,
        ready=depth.ready,
        unacked=depth.unacknowledged,
        source="rabbitmq",
        reason=why,
        metric_age_seconds=None if age is None else round(age, 3),
        window_max_depth=None,
        history_covers_window=False,
    )


def _newest_int(series: Series) -> int | None:
    newest = series.newest()
    return None if newest is None else int(newest[1])
