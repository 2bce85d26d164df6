"""RabbitMQ plumbing for every service that touches the work queue.

Connections come from an AMQP URL such as ``amqp://user:pass@host:5672/%2F``
(``RABBITMQ_URL``). The work queue is declared in exactly one place,
:func:`declare_work_queue`: RabbitMQ refuses a redeclaration whose arguments
differ, so every producer and consumer must go through it. Messages a consumer
rejects without requeueing land in the dead-letter queue ``agent.mandates.dead``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.shared.queue_metrics import QUEUE_NAME, QueueDepth

logger = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = f"{QUEUE_NAME}.dead"
DEAD_LETTER_QUEUE = f"{QUEUE_NAME}.dead"
PERSISTENT = pika.DeliveryMode.Persistent

# Errors after which the connection is unusable and a fresh one may succeed.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)

T = TypeVar("T")


class PublishError(Exception):
    """A message could not be confirmed by the broker; nothing was queued."""


def connection_parameters(
    url: str, *, heartbeat: int = 30, timeout: float = 5.0, name: str | None = None
) -> pika.URLParameters:
    """Return connection parameters for ``url`` with bounded timeouts."""
    parameters = pika.URLParameters(url)
    if name:
        parameters.client_properties = {"connection_name": name}
    parameters.heartbeat = heartbeat
    parameters.socket_timeout = timeout
    parameters.stack_timeout = timeout * 2
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    return parameters


def connect(
    url: str, *, heartbeat: int = 30, timeout: float = 5.0, name: str | None = None
) -> Any:
    """Open a blocking connection to the broker at ``url``, named ``name``."""
    parameters = connection_parameters(
        url, heartbeat=heartbeat, timeout=timeout, name=name
    )
    logger.debug("connecting to RabbitMQ at %s:%s", parameters.host, parameters.port)
    return pika.BlockingConnection(parameters)


def declare_work_queue(channel: Any) -> None:
    """Declare the durable work queue and its dead-letter exchange and queue."""
    channel.exchange_declare(
        exchange=DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True
    )
    channel.queue_declare(queue=DEAD_LETTER_QUEUE, durable=True)
    channel.queue_bind(queue=DEAD_LETTER_QUEUE, exchange=DEAD_LETTER_EXCHANGE)
    channel.queue_declare(
        queue=QUEUE_NAME,
        durable=True,
        arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE},
    )


def retrying(attempts: int, max_backoff: float) -> Retrying:
    """Return a policy that retries connection faults with exponential backoff."""
    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=max_backoff),
        retry=retry_if_exception_type(CONNECTION_ERRORS),
        before_sleep=before_sleep_log(logger, logging.WARNING),
        reraise=True,
    )


class Publisher:
    """Publishes persistent messages to the work queue, each confirmed by the broker.

    Thread-safe: calls are serialised, since a pika connection is not. A lost
    connection is reopened with backoff, up to ``attempts`` tries per message.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 3,
        max_backoff: float = 2.0,
        name: str = "euglena-publisher",
    ) -> None:
        self._url = url
        self.name = name
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None

    def publish(self, body: bytes, *, message_id: str | None = None) -> None:
        """Publish ``body`` to the work queue; raise :class:`PublishError` if unsure."""
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=message_id,
        )
        with self._lock:
            try:
                self._with_retry(lambda: self._publish_once(body, properties))
            except pika.exceptions.UnroutableError as error:
                raise PublishError(f"the broker could not route it: {error}") from error
            except pika.exceptions.NackError as error:
                raise PublishError(f"the broker refused it: {error}") from error
            except CONNECTION_ERRORS as error:
                self._drop()
                raise PublishError(
                    f"RabbitMQ unreachable after {self._attempts} attempts: {error!r}"
                ) from error

    def close(self) -> None:
        """Close the connection, if one is open."""
        with self._lock:
            self._drop()

    def _with_retry(self, action: Callable[[], T]) -> T:
        for attempt in retrying(self._attempts, self._max_backoff):
            with attempt:
                try:
                    return action()
                except CONNECTION_ERRORS:
                    self._drop()
                    raise
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _publish_once(self, body: bytes, properties: Any) -> None:
        channel = self._ensure_channel()
        channel.basic_publish(
            exchange="",
            routing_key=QUEUE_NAME,
            body=body,
            properties=properties,
            mandatory=True,
        )

    def _ensure_channel(self) -> Any:
        if self._channel is None or not self._channel.is_open:
            self._drop()
            self._connection = connect(self._url, name=self.name)
            channel = self._connection.channel()
            channel.confirm_delivery()
            declare_work_queue(channel)
            self._channel = channel
        return self._channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except CONNECTION_ERRORS as error:
                logger.debug("closing a broken RabbitMQ connection: %r", error)


@dataclass(frozen=True)
class Delivery:
    """One message taken from the queue, not yet acknowledged."""

    tag: int
    body: bytes
    redelivered: bool
    message_id: str | None


def open_consumer_channel(connection: Any, *, prefetch: int = 1) -> Any:
    """Return a channel on ``connection`` with the work queue declared and QoS set."""
    channel = connection.channel()
    declare_work_queue(channel)
    channel.basic_qos(prefetch_count=prefetch)
    return channel


def next_delivery(channel: Any, *, timeout: float) -> Delivery | None:
    """Wait up to ``timeout`` seconds for the next message of the work queue."""
    for method, properties, body in channel.consume(
        QUEUE_NAME, inactivity_timeout=timeout
    ):
        if method is None:
            return None
        return Delivery(
            tag=method.delivery_tag,
            body=body,
            redelivered=bool(method.redelivered),
            message_id=getattr(properties, "message_id", None),
        )
    return None


def reject_to_dead_letter(channel: Any, delivery: Delivery, reason: str) -> None:
    """Reject ``delivery`` without requeueing, so it lands in the dead-letter queue."""
    logger.warning(
        "dead-lettering message %s: %s", delivery.message_id or delivery.tag, reason
    )
    channel.basic_reject(delivery_tag=delivery.tag, requeue=False)


def passive_depth(
    url: str, queue_name: str = QUEUE_NAME, *, timeout: float = 5.0
) -> QueueDepth:
    """Read the queue's counts over AMQP with a passive declare, in real time.

    Note: AMQP reports ready messages and consumers only. Messages delivered
    and not yet acknowledged are invisible to it, so ``unacknowledged`` is 0
    and ``depth`` undercounts by the messages being worked on. It is the
    fallback for when the management API cannot answer, not a substitute.
    """
    connection = connect(url, heartbeat=0, timeout=timeout, name="euglena-depth")
    try:
        frame = connection.channel().queue_declare(queue_name, passive=True)
    finally:
        if connection.is_open:
            connection.close()
    return QueueDepth(
        ready=int(frame.method.message_count),
        unacknowledged=0,
        consumers=int(frame.method.consumer_count),
    )
