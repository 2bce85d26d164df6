"""CloudWatch's ingestion delay added to moto, proven through boto3."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import moto
import pytest
from moto.cloudwatch.models import CloudWatchBackend
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.errors import DeployError
from harness.local import cloudwatch_completion
from harness.local.moto_server import MotoServer

REGION = "us-east-1"
NAMESPACE = "Euglena/Test"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
DELAY = 1.5


@pytest.fixture(scope="module")
def cloudwatch() -> Iterator[Any]:
    """A CloudWatch client of a fresh moto account with the completion installed."""
    installed_before = cloudwatch_completion.is_installed()
    delay_before = cloudwatch_completion.ingestion_delay()
    cloudwatch_completion.install()
    try:
        with MotoServer() as server:
            yield ClientFactory(REGION, endpoint_url=server.endpoint_url).client(
                "cloudwatch"
            )
    finally:
        # Other tests in this process may rely on moto's instant reads.
        cloudwatch_completion.set_ingestion_delay(delay_before)
        if not installed_before:
            cloudwatch_completion.uninstall()


@pytest.fixture
def delay() -> Iterator[Callable[[float], None]]:
    """Set the ingestion delay for one test; the previous one is restored after."""
    before = cloudwatch_completion.ingestion_delay()
    yield cloudwatch_completion.set_ingestion_delay
    cloudwatch_completion.set_ingestion_delay(before)


def _put(cloudwatch: Any, metric: str, value: float) -> float:
    """Put one value of ``metric`` now; return the monotonic time of the put."""
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "QueueName", "Value": "agent.mandates"}],
                "Value": value,
                "StorageResolution": 1,
            }
        ],
    )
    return time.monotonic()


def _statistics(cloudwatch: Any, metric: str) -> list[float]:
    now = datetime.now(UTC)
    answer = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=metric,
        Dimensions=[{"Name": "QueueName", "Value": "agent.mandates"}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(seconds=60),  # moto truncates EndTime to seconds
        Period=60,
        Statistics=["Maximum"],
    )
    return [point["Maximum"] for point in answer["Datapoints"]]


def _data(cloudwatch: Any, metric: str) -> list[float]:
    now = datetime.now(UTC)
    stat = {
        "Metric": {
            "Namespace": NAMESPACE,
            "MetricName": metric,
            "Dimensions": [{"Name": "QueueName", "Value": "agent.mandates"}],
        },
        "Period": 60,
        "Stat": "Maximum",
    }
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[{"Id": "m1", "MetricStat": stat}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(seconds=60),
    )
    return list(answer["MetricDataResults"][0]["Values"])


def _listed(cloudwatch: Any, metric: str) -> list[str]:
    answer = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName=metric)
    return [found["MetricName"] for found in answer["Metrics"]]


READS: dict[str, Callable[[Any, str], list[Any]]] = {
    "get_metric_statistics": _statistics,
    "get_metric_data": _data,
    "list_metrics": _listed,
}


def _when_visible(read: Callable[[], list[Any]], seconds: float) -> float:
    """Poll ``read`` until it returns something; the monotonic time it first did."""
    for attempt in Retrying(
        stop=stop_after_delay(seconds),
        wait=wait_fixed(0.1),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            assert read(), "the datapoint is still not readable"
    return time.monotonic()


@pytest.mark.parametrize("api", list(READS))
def test_datapoint_is_hidden_until_the_delay_has_passed(
    cloudwatch: Any, delay: Callable[[float], None], api: str
) -> None:
    """A value put is absent from a read at once and present after the delay."""
    read = READS[api]
    metric = f"Depth{uuid.uuid4().hex[:8]}"
    delay(DELAY)

    put_at = _put(cloudwatch, metric, 7.0)
    at_once = read(cloudwatch, metric)
    visible_at = _when_visible(lambda: read(cloudwatch, metric), DELAY + 10)

    assert at_once == []
    assert visible_at - put_at >= DELAY - 0.2
    assert read(cloudwatch, metric) in ([7.0], [metric])


@pytest.mark.parametrize("api", list(READS))
def test_zero_delay_reads_at_once(
    cloudwatch: Any, delay: Callable[[float], None], api: str
) -> None:
    """With the delay set to 0 a value put is readable by the very next call."""
    metric = f"Depth{uuid.uuid4().hex[:8]}"
    delay(0)

    _put(cloudwatch, metric, 3.0)

    assert READS[api](cloudwatch, metric) in ([3.0], [metric])


def test_each_datapoint_waits_from_its_own_put(
    cloudwatch: Any, delay: Callable[[float], None]
) -> None:
    """A value already ingested reads while a newer one of the metric still waits."""
    metric = f"Depth{uuid.uuid4().hex[:8]}"
    delay(DELAY)
    _put(cloudwatch, metric, 1.0)
    _when_visible(lambda: _statistics(cloudwatch, metric), DELAY + 10)

    _put(cloudwatch, metric, 9.0)
    while_waiting = _statistics(cloudwatch, metric)
    _when_visible(lambda: [m for m in _statistics(cloudwatch, metric) if m == 9.0], 10)

    assert while_waiting == [1.0]


def test_negative_delay_is_refused() -> None:
    """A negative delay is a ValueError that says what to use instead."""
    with pytest.raises(ValueError, match="use 0"):
        cloudwatch_completion.set_ingestion_delay(-1)


def test_completion_is_pinned_to_moto(cloudwatch: Any) -> None:
    """moto is the pinned version and install() is idempotent over its methods."""
    pin = re.search(r"^moto(\[\w+\])?==(\S+)$", REQUIREMENTS.read_text(), re.M)
    wrapped = CloudWatchBackend.get_all_metrics

    cloudwatch_completion.install()

    assert pin is not None
    assert moto.__version__ == pin.group(2)
    assert cloudwatch_completion.is_installed()
    assert CloudWatchBackend.get_all_metrics is wrapped


def test_changed_moto_method_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A moto method with another signature than expected stops install()."""
    monkeypatch.setattr(
        cloudwatch_completion, "WRAPPED", {"get_all_metrics": ["self", "extra"]}
    )

    with pytest.raises(DeployError, match=r"requirements\.txt"):
        cloudwatch_completion._check("get_all_metrics", lambda self: [])
