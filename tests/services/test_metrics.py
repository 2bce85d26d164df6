"""The metrics publisher against a real RabbitMQ node and moto's CloudWatch."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.local.moto_server import MotoServer
from harness.local.servers import RabbitNode, free_port
from services.metrics.publisher import MetricsPublisher
from services.metrics.settings import Settings
from services.shared import queue_metrics, rabbitmq
from services.shared.config import SettingsError
from services.shared.rabbit_depth import ManagementEndpoint, read_queue_depth

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def until(check: Callable[[], T], timeout: float = 30.0, every: float = 0.5) -> T:
    """Return ``check()`` once it stops failing its assertions, or re-raise."""
    for attempt in Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(every),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def cloudwatch(moto_server: MotoServer) -> Any:
    moto_server.reset()
    return ClientFactory(REGION, endpoint_url=moto_server.endpoint_url).client(
        "cloudwatch"
    )


def recorded_puts(cloudwatch: Any) -> list[dict[str, Any]]:
    """A list that receives the parameters of every PutMetricData call."""
    calls: list[dict[str, Any]] = []
    cloudwatch.meta.events.register(
        "provide-client-params.monitoring.PutMetricData",
        lambda params, **_: calls.append(params),
    )
    return calls


@pytest.fixture
def work_channel(clean_rabbitmq: RabbitNode) -> Iterator[Any]:
    connection = rabbitmq.connect(clean_rabbitmq.amqp_url)
    channel = connection.channel()
    rabbitmq.declare_work_queue(channel)
    yield channel
    with contextlib.suppress(*rabbitmq.CONNECTION_ERRORS):
        connection.close()


@pytest.fixture
def work_queue(clean_rabbitmq: RabbitNode) -> None:
    connection = rabbitmq.connect(clean_rabbitmq.amqp_url)
    rabbitmq.declare_work_queue(connection.channel())
    connection.close()


def latest(cloudwatch: Any) -> dict[str, float]:
    """The newest published value of each queue metric, by metric name."""
    now = datetime.now(UTC).replace(microsecond=0)
    dimensions = [
        {"Name": queue_metrics.QUEUE_DIMENSION, "Value": queue_metrics.QUEUE_NAME}
    ]
    queries = [
        {
            "Id": f"m{index}",
            "Label": name,
            "MetricStat": {
                "Metric": {
                    "Namespace": queue_metrics.NAMESPACE,
                    "MetricName": name,
                    "Dimensions": dimensions,
                },
                "Period": 1,
                "Stat": "Maximum",
            },
        }
        for index, name in enumerate(queue_metrics.METRIC_NAMES)
    ]
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=queries,
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        ScanBy="TimestampDescending",
    )
    by_id = {f"m{i}": name for i, name in enumerate(queue_metrics.METRIC_NAMES)}
    return {
        by_id[result["Id"]]: result["Values"][0]
        for result in answer["MetricDataResults"]
        if result["Values"]
    }


def timestamps(cloudwatch: Any) -> list[datetime]:
    """When each QueueDepth datapoint of the last five minutes was taken."""
    now = datetime.now(UTC)
    answer = cloudwatch.get_metric_statistics(
        Namespace=queue_metrics.NAMESPACE,
        MetricName=queue_metrics.QUEUE_DEPTH,
        Dimensions=[
            {"Name": queue_metrics.QUEUE_DIMENSION, "Value": queue_metrics.QUEUE_NAME}
        ],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=1,
        Statistics=["SampleCount"],
    )
    return sorted(point["Timestamp"] for point in answer["Datapoints"])


class MetricsProcess:
    """``python -m services.metrics`` in a process of its own."""

    def __init__(self, rabbit: RabbitNode, endpoint_url: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {
            **os.environ,
            "RABBITMQ_MANAGEMENT_URL": rabbit.management_url,
            "RABBITMQ_USER": rabbit.user,
            "RABBITMQ_PASSWORD": rabbit.password,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "PUBLISH_INTERVAL_SECONDS": "1",
            "PORT": str(self.port),
        }
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.metrics"],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def health(self) -> dict[str, Any]:
        assert self.process.poll() is None, f"exited:\n{self.log.read_text()}"
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                assert response.status == 200
                answer: dict[str, Any] = json.load(response)
                return answer
        except OSError as error:
            raise AssertionError(f"/health not answering: {error}") from error

    def health_where(
        self, condition: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        def check() -> dict[str, Any]:
            report = self.health()
            assert condition(report), f"health so far: {report}"
            return report

        return until(check)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_metrics(
    clean_rabbitmq: RabbitNode, tmp_path: Path
) -> Iterator[Callable[[str], MetricsProcess]]:
    started: list[MetricsProcess] = []

    def start(endpoint_url: str) -> MetricsProcess:
        log = tmp_path / f"metrics-{len(started)}.log"
        started.append(MetricsProcess(clean_rabbitmq, endpoint_url, log))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def hold_unacked(channel: Any, count: int) -> None:
    """Keep ``count`` messages delivered to a consumer and unacknowledged."""
    held: list[Any] = []
    channel.basic_qos(prefetch_count=count)
    channel.basic_consume(
        queue_metrics.QUEUE_NAME, lambda _c, method, _p, _b: held.append(method)
    )

    def delivered() -> None:
        channel.connection.process_data_events(time_limit=0.1)
        assert len(held) == count, f"{len(held)} of {count} delivered"

    until(delivered, timeout=10, every=0.05)


def test_published_metrics_equal_the_real_queue(
    work_channel: Any, cloudwatch: Any, moto_server: MotoServer, start_metrics: Any
) -> None:
    """CloudWatch shows the queue's real ready, unacked and consumer counts."""
    for _ in range(7):
        work_channel.basic_publish("", queue_metrics.QUEUE_NAME, b"{}")
    hold_unacked(work_channel, 3)
    expected = {
        queue_metrics.QUEUE_DEPTH: 7.0,
        queue_metrics.MESSAGES_READY: 4.0,
        queue_metrics.MESSAGES_UNACKNOWLEDGED: 3.0,
        queue_metrics.CONSUMER_COUNT: 1.0,
    }

    metrics = start_metrics(moto_server.endpoint_url)

    def published() -> None:
        work_channel.connection.process_data_events(time_limit=0)
        assert latest(cloudwatch) == expected

    until(published)
    report = metrics.health()
    assert report["broker_ok"] is True
    assert report["cloudwatch_ok"] is True
    assert report["depth"] == {name: int(value) for name, value in expected.items()}


def test_each_tick_is_one_put_metric_data_at_one_second_resolution(
    work_channel: Any, cloudwatch: Any, clean_rabbitmq: RabbitNode
) -> None:
    """A tick sends the four metrics in a single high-resolution call."""
    calls = recorded_puts(cloudwatch)
    endpoint = ManagementEndpoint.from_url(
        clean_rabbitmq.management_url, clean_rabbitmq.user, clean_rabbitmq.password
    )
    publisher = MetricsPublisher(partial(read_queue_depth, endpoint), cloudwatch)

    for _ in range(3):
        publisher.tick()

    assert len(calls) == 3
    for call in calls:
        assert call["Namespace"] == queue_metrics.NAMESPACE
        datums = call["MetricData"]
        assert sorted(d["MetricName"] for d in datums) == sorted(
            queue_metrics.METRIC_NAMES
        )
        assert {d["StorageResolution"] for d in datums} == {1}
        assert all(
            d["Dimensions"]
            == [{"Name": "QueueName", "Value": queue_metrics.QUEUE_NAME}]
            for d in datums
        )


@pytest.mark.usefixtures("work_queue")
def test_broker_outage_is_reported_and_survived(
    cloudwatch: Any,
    moto_server: MotoServer,
    start_metrics: Any,
    clean_rabbitmq: RabbitNode,
) -> None:
    """With the broker down, /health says so; once it is back, publishing resumes."""
    metrics = start_metrics(moto_server.endpoint_url)
    metrics.health_where(lambda r: r["broker_ok"] and r["cloudwatch_ok"])

    clean_rabbitmq.stop()
    try:
        down = metrics.health_where(lambda r: r["broker_ok"] is False)
    finally:
        clean_rabbitmq.start()
    back = metrics.health_where(
        lambda r: r["broker_ok"] and r["last_publish_at"] > down["last_error_at"]
    )

    assert f"{clean_rabbitmq.management_port}" in down["last_error"]
    assert down["status"] == "degraded"
    assert back["status"] == "ok"


def _published(cloudwatch: Any) -> list[datetime]:
    history = timestamps(cloudwatch)
    assert history, "nothing reached CloudWatch"
    return history


def test_cloudwatch_outage_is_caught_up(work_channel: Any, start_metrics: Any) -> None:
    """Readings taken while CloudWatch is unreachable are published once it is back."""
    port = free_port()
    work_channel.basic_publish("", queue_metrics.QUEUE_NAME, b"{}")
    metrics = start_metrics(f"http://127.0.0.1:{port}")

    down = metrics.health_where(
        lambda r: r["cloudwatch_ok"] is False and r["pending_readings"] >= 2
    )
    with MotoServer(port=port) as returned:
        returned.reset()
        came_back = datetime.now(UTC)
        back = metrics.health_where(
            lambda r: r["cloudwatch_ok"] and r["pending_readings"] == 0
        )
        client = ClientFactory(REGION, endpoint_url=returned.endpoint_url)
        history = until(lambda: _published(client.client("cloudwatch")))

    assert down["broker_ok"] is True
    assert back["depth"][queue_metrics.QUEUE_DEPTH] == 1
    assert history[0] < came_back - timedelta(seconds=1), (
        f"no reading from the outage: earliest {history[0]}, back at {came_back}"
    )


def test_amqp_fallback_publishes_only_what_it_can_count(
    work_channel: Any, cloudwatch: Any, clean_rabbitmq: RabbitNode
) -> None:
    """With the management API gone, ready and consumer counts come over AMQP."""
    calls = recorded_puts(cloudwatch)
    for _ in range(5):
        work_channel.basic_publish("", queue_metrics.QUEUE_NAME, b"{}")
    hold_unacked(work_channel, 2)
    gone = ManagementEndpoint.from_url(f"http://127.0.0.1:{free_port()}", "u", "p")
    publisher = MetricsPublisher(
        partial(read_queue_depth, gone),
        cloudwatch,
        fallback=partial(rabbitmq.passive_depth, clean_rabbitmq.amqp_url),
    )

    publisher.tick()

    (call,) = calls
    assert {d["MetricName"]: d["Value"] for d in call["MetricData"]} == {
        queue_metrics.MESSAGES_READY: 3.0,
        queue_metrics.CONSUMER_COUNT: 1.0,
    }
    report = publisher.health()
    assert (report["broker_ok"], report["depth_source"]) == (False, "amqp")
    assert report["depth"] == {
        queue_metrics.MESSAGES_READY: 3,
        queue_metrics.CONSUMER_COUNT: 1,
    }
    assert str(gone.port) in report["last_error"]


def test_without_fallback_a_broker_outage_publishes_nothing(
    cloudwatch: Any,
) -> None:
    """No management API and no AMQP fallback: no reading, no datum, no crash."""
    calls = recorded_puts(cloudwatch)
    gone = ManagementEndpoint.from_url(f"http://127.0.0.1:{free_port()}", "u", "p")
    dead_amqp = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    publisher = MetricsPublisher(
        partial(read_queue_depth, gone),
        cloudwatch,
        fallback=partial(rabbitmq.passive_depth, dead_amqp, timeout=1),
    )

    publisher.tick()

    assert calls == []
    report = publisher.health()
    assert (report["broker_ok"], report["depth"], report["pending_readings"]) == (
        False,
        None,
        0,
    )


def test_settings_say_which_variable_to_fix() -> None:
    """Missing or malformed settings are refused with the variable's name."""
    base = {
        "RABBITMQ_MANAGEMENT_URL": "http://rabbit:15672",
        "RABBITMQ_USER": "u",
        "RABBITMQ_PASSWORD": "p",
        "AWS_REGION": REGION,
    }

    with pytest.raises(SettingsError, match="RABBITMQ_MANAGEMENT_URL"):
        Settings.from_env({})
    with pytest.raises(SettingsError, match="PUBLISH_INTERVAL_SECONDS"):
        Settings.from_env({**base, "PUBLISH_INTERVAL_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="RABBITMQ_USER"):
        Settings.from_env({**base, "RABBITMQ_USER": ""})
    settings = Settings.from_env(base)
    assert (settings.publish_interval_seconds, settings.port) == (5.0, 8082)
    assert settings.amqp_url == ""
    with_amqp = Settings.from_env({**base, "RABBITMQ_URL": "amqp://u:secret@r/"})
    assert with_amqp.amqp_url == "amqp://u:secret@r/"
    assert "secret" not in repr(with_amqp)
