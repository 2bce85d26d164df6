"""The queue-depth reader against a real RabbitMQ node's management API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.local.servers import RabbitNode, free_port
from services.shared import rabbitmq
from services.shared.queue_metrics import QUEUE_NAME, QueueDepth
from services.shared.rabbit_depth import (
    BrokerUnreachableError,
    ManagementEndpoint,
    QueueNotFoundError,
    read_queue_depth,
)


@pytest.fixture
def endpoint(clean_rabbitmq: RabbitNode) -> ManagementEndpoint:
    return ManagementEndpoint.from_url(
        clean_rabbitmq.management_url, clean_rabbitmq.user, clean_rabbitmq.password
    )


@pytest.fixture
def work_channel(clean_rabbitmq: RabbitNode) -> Iterator[Any]:
    connection = rabbitmq.connect(clean_rabbitmq.amqp_url)
    channel = connection.channel()
    rabbitmq.declare_work_queue(channel)
    yield channel
    connection.close()


def hold_unacked(channel: Any, count: int) -> list[Any]:
    """Consume ``count`` messages without acknowledging them; return them."""
    held: list[Any] = []
    channel.basic_qos(prefetch_count=count)
    channel.basic_consume(QUEUE_NAME, lambda _ch, method, _p, _b: held.append(method))
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05)):
        with attempt:
            channel.connection.process_data_events(time_limit=0.1)
            assert len(held) == count, f"{len(held)} of {count} deliveries so far"
    return held


def test_depth_counts_ready_and_unacknowledged_without_stats_lag(
    endpoint: ManagementEndpoint, work_channel: Any
) -> None:
    """Ready and unacknowledged counts are exact right after the broker changes."""
    for _ in range(7):
        work_channel.basic_publish("", QUEUE_NAME, b"{}")
    hold_unacked(work_channel, 3)

    depth = read_queue_depth(endpoint)

    assert (depth.ready, depth.unacknowledged, depth.depth) == (4, 3, 7)


def test_depth_counts_consumers_within_the_stats_interval(
    endpoint: ManagementEndpoint, work_channel: Any
) -> None:
    """A consumer shows in the count once the broker's statistics catch up."""
    work_channel.basic_publish("", QUEUE_NAME, b"{}")
    hold_unacked(work_channel, 1)

    seen: list[QueueDepth] = []
    for attempt in Retrying(
        stop=stop_after_delay(20),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            seen.append(read_queue_depth(endpoint))
            assert seen[-1].consumers == 1, f"last reading {seen[-1]}"
    assert seen[-1] == QueueDepth(ready=0, unacknowledged=1, consumers=1)


def test_missing_queue_is_named_with_the_broker(endpoint: ManagementEndpoint) -> None:
    """Reading a queue that does not exist names the queue, host and port."""
    with pytest.raises(QueueNotFoundError) as caught:
        read_queue_depth(endpoint)

    message = str(caught.value)
    assert QUEUE_NAME in message
    assert f"{endpoint.host}:{endpoint.port}" in message


def test_wrong_credentials_report_http_401(clean_rabbitmq: RabbitNode) -> None:
    """Rejected credentials give the HTTP status and say which settings to fix."""
    wrong = ManagementEndpoint.from_url(clean_rabbitmq.management_url, "guest", "no")

    with pytest.raises(BrokerUnreachableError) as caught:
        read_queue_depth(wrong)

    assert caught.value.status == 401
    assert "RABBITMQ_PASSWORD" in str(caught.value)


def test_unreachable_broker_names_host_and_port() -> None:
    """A closed port gives an error naming the address, with no HTTP status."""
    port = free_port()
    closed = ManagementEndpoint.from_url(f"http://127.0.0.1:{port}", "u", "p")

    with pytest.raises(BrokerUnreachableError) as caught:
        read_queue_depth(closed, timeout=2)

    assert caught.value.status is None
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_credentials_may_come_from_the_url() -> None:
    """Credentials inside the URL are used and kept out of the base URL."""
    endpoint = ManagementEndpoint.from_url("http://ada:s%40cret@rabbit:15672/")

    assert (endpoint.user, endpoint.password) == ("ada", "s@cret")
    assert endpoint.base_url == "http://rabbit:15672"
    assert (endpoint.host, endpoint.port) == ("rabbit", 15672)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://rabbit:15672", "RABBITMQ_USER"),
        ("amqp://u:p@rabbit:5672", "is not an http"),
        ("rabbit:15672", "is not an http"),
    ],
)
def test_bad_endpoints_say_what_to_set(url: str, expected: str) -> None:
    """A URL without credentials or of the wrong kind is refused with the fix."""
    with pytest.raises(ValueError, match=expected):
        ManagementEndpoint.from_url(url)
