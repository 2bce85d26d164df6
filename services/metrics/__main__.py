"""Run the metrics publisher until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from functools import partial
from types import FrameType

import boto3
from botocore.config import Config

from services.metrics.health import HealthServer
from services.metrics.publisher import MetricsPublisher
from services.metrics.settings import Settings
from services.shared.config import SettingsError
from services.shared.queue_metrics import QUEUE_NAME
from services.shared.rabbit_depth import read_queue_depth
from services.shared.rabbitmq import passive_depth

logger = logging.getLogger("services.metrics")

# Short timeouts and few retries: a tick must not outlast the publish interval
# by much while CloudWatch is unreachable; the next tick tries again anyway.
CLOUDWATCH_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 2, "mode": "standard"},
)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # pika narrates every connection step at INFO; its warnings are enough.
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        logger.error("cannot start: %s", error)
        return 2
    serve(settings)
    return 0


def serve(settings: Settings) -> None:
    """Publish and serve /health until a stop signal arrives."""
    cloudwatch = boto3.client(
        "cloudwatch", region_name=settings.region, config=CLOUDWATCH_CONFIG
    )
    read = partial(read_queue_depth, settings.management, QUEUE_NAME)
    fallback = None
    if settings.amqp_url:
        fallback = partial(passive_depth, settings.amqp_url, QUEUE_NAME)
    else:
        logger.info("RABBITMQ_URL is not set: no AMQP fallback for the depth")
    publisher = MetricsPublisher(read, cloudwatch, fallback=fallback)
    # All interfaces: the port is the container's, reached by its health check.
    health = HealthServer("0.0.0.0", settings.port, publisher.health).start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    publisher.run(settings.publish_interval_seconds, stop)
    health.stop()


if __name__ == "__main__":
    sys.exit(main())
