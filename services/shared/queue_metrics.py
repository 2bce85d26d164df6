"""The one definition of the work queue and the metrics that describe its depth.

The metrics publisher, the autoscaler Lambda and the harness probes all read
these names from here, so the two sides of a CloudWatch metric cannot drift
apart.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_NAME = "agent.mandates"
NAMESPACE = "Euglena/RabbitMQ"
QUEUE_DIMENSION = "QueueName"

QUEUE_DEPTH = "QueueDepth"
MESSAGES_READY = "MessagesReady"
MESSAGES_UNACKNOWLEDGED = "MessagesUnacknowledged"
CONSUMER_COUNT = "ConsumerCount"

METRIC_NAMES = (QUEUE_DEPTH, MESSAGES_READY, MESSAGES_UNACKNOWLEDGED, CONSUMER_COUNT)
UNIT = "Count"
STORAGE_RESOLUTION = 1  # high resolution: one-second granularity


@dataclass(frozen=True)
class MetricIdentity:
    """Where a queue metric lives in CloudWatch: what both sides must agree on."""

    namespace: str = NAMESPACE
    metric_name: str = QUEUE_DEPTH
    queue_name: str = QUEUE_NAME

    @property
    def dimensions(self) -> list[dict[str, str]]:
        return [{"Name": QUEUE_DIMENSION, "Value": self.queue_name}]

    def describe(self) -> str:
        return (
            f"{self.namespace}/{self.metric_name}[{QUEUE_DIMENSION}={self.queue_name}]"
        )


@dataclass(frozen=True)
class QueueDepth:
    """One reading of the queue: ``depth`` counts ready and unacknowledged."""

    ready: int
    unacknowledged: int
    consumers: int

    @property
    def depth(self) -> int:
        return self.ready + self.unacknowledged

    def as_metrics(self) -> dict[str, int]:
        return {
            QUEUE_DEPTH: self.depth,
            MESSAGES_READY: self.ready,
            MESSAGES_UNACKNOWLEDGED: self.unacknowledged,
            CONSUMER_COUNT: self.consumers,
        }
