"""The work queue's one declaration, the confirming publisher and the consumer
helpers, against a real RabbitMQ node."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pika
import pika.exceptions
import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from harness.local.servers import RabbitNode, free_port
from services.shared import rabbitmq
from services.shared.queue_metrics import QUEUE_NAME


@pytest.fixture
def channel(clean_rabbitmq: RabbitNode) -> Iterator[Any]:
    """A channel on the clean node, with the work queue declared."""
    connection = rabbitmq.connect(clean_rabbitmq.amqp_url)
    opened = connection.channel()
    rabbitmq.declare_work_queue(opened)
    yield opened
    connection.close()


def _get(channel: Any, queue: str, deadline: float = 5.0) -> tuple[Any, Any, bytes]:
    last: tuple[Any, Any, Any] = (None, None, None)
    for attempt in Retrying(stop=stop_after_delay(deadline), wait=wait_fixed(0.1)):
        with attempt:
            last = channel.basic_get(queue, auto_ack=True)
            assert last[0] is not None, f"no message on {queue} yet"
    return last


def test_declaring_twice_is_accepted(channel: Any) -> None:
    """Every declarer shares one declaration, so a second one changes nothing."""
    rabbitmq.declare_work_queue(channel)

    depth = channel.queue_declare(QUEUE_NAME, passive=True).method.message_count

    assert depth == 0


def test_a_different_declaration_is_refused(channel: Any) -> None:
    """RabbitMQ refuses a redeclaration without the dead-letter argument."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare(QUEUE_NAME, durable=True)

    assert refused.value.reply_code == 406


def test_published_message_is_persistent_and_named(
    clean_rabbitmq: RabbitNode, channel: Any
) -> None:
    """The publisher sends persistent JSON messages with their task id."""
    publisher = rabbitmq.Publisher(clean_rabbitmq.amqp_url)

    publisher.publish(b'{"task_id": "t-1"}', message_id="t-1")
    publisher.close()

    _, properties, body = _get(channel, QUEUE_NAME)
    assert json.loads(body) == {"task_id": "t-1"}
    assert properties.delivery_mode == 2
    assert properties.message_id == "t-1"
    assert properties.content_type == "application/json"


def test_publisher_reconnects_after_losing_its_connection(
    clean_rabbitmq: RabbitNode, channel: Any
) -> None:
    """A connection closed by the broker is reopened for the next message."""
    publisher = rabbitmq.Publisher(clean_rabbitmq.amqp_url, name="doomed")
    publisher.publish(b"{}", message_id="first")
    _close_connections(clean_rabbitmq, "doomed")

    publisher.publish(b"{}", message_id="second")
    publisher.close()

    ids = {_get(channel, QUEUE_NAME)[1].message_id for _ in range(2)}
    assert ids == {"first", "second"}


def test_publisher_redeclares_a_deleted_queue(
    clean_rabbitmq: RabbitNode, channel: Any
) -> None:
    """An unroutable publish (queue deleted) is retried on a fresh declaration."""
    publisher = rabbitmq.Publisher(clean_rabbitmq.amqp_url)
    publisher.publish(b"{}", message_id="before")
    clean_rabbitmq.delete_queues()

    publisher.publish(b"{}", message_id="after")
    publisher.close()

    assert _get(channel, QUEUE_NAME)[1].message_id == "after"


def test_publisher_fails_clearly_when_the_broker_is_unreachable() -> None:
    """With nothing listening, publish raises PublishError after its attempts."""
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    publisher = rabbitmq.Publisher(url, attempts=2, max_backoff=0.1)
    started = time.monotonic()

    with pytest.raises(rabbitmq.PublishError, match="unreachable after 2 attempts"):
        publisher.publish(b"{}")

    assert time.monotonic() - started < 10


def test_rejected_message_lands_in_the_dead_letter_queue(channel: Any) -> None:
    """A consumer's reject without requeue moves the message to the dead letters."""
    channel.basic_publish("", QUEUE_NAME, b"not json")
    consumer = rabbitmq.open_consumer_channel(channel.connection, prefetch=1)
    delivery = rabbitmq.next_delivery(consumer, timeout=5)
    assert delivery is not None

    rabbitmq.reject_to_dead_letter(consumer, delivery, "not JSON")

    _, _, body = _get(channel, rabbitmq.DEAD_LETTER_QUEUE)
    assert body == b"not json"


def test_next_delivery_returns_none_when_idle(channel: Any) -> None:
    """Waiting on an empty queue ends after the timeout with no delivery."""
    consumer = rabbitmq.open_consumer_channel(channel.connection, prefetch=1)

    delivery = rabbitmq.next_delivery(consumer, timeout=0.3)

    assert delivery is None


def _close_connections(node: RabbitNode, client_name: str) -> None:
    """Close the connections named ``client_name`` through the management API."""
    auth = (node.user, node.password)
    with httpx.Client(base_url=node.management_url, auth=auth, timeout=10) as api:
        for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.5)):
            with attempt:
                listed = api.get("/api/connections").json()
                names = [
                    c["name"]
                    for c in listed
                    if c.get("client_properties", {}).get("connection_name")
                    == client_name
                ]
                assert names, f"no connection named {client_name} listed: {listed}"
        for name in names:
            api.delete(f"/api/connections/{quote(name, safe='')}").raise_for_status()
