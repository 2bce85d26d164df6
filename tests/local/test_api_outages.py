"""AWS API outages on demand: the emulated service answers 503, then recovers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.local.moto_server import MotoServer

REGION = "us-east-1"


@pytest.fixture
def server() -> Iterator[MotoServer]:
    """A moto server with no outage in force."""
    with MotoServer() as started:
        yield started


def _client(server: MotoServer, service: str) -> Any:
    """A client that does not retry, so each refusal is seen at once."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return session.client(
        service,
        endpoint_url=server.endpoint_url,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _put(cloudwatch: Any) -> None:
    cloudwatch.put_metric_data(
        Namespace="Test", MetricData=[{"MetricName": "m", "Value": 1.0}]
    )


def test_failed_service_answers_503_until_the_outage_ends(server: MotoServer) -> None:
    """CloudWatch refuses every call during its outage and accepts them after."""
    cloudwatch = _client(server, "cloudwatch")

    server.outages.fail("monitoring", seconds=1.5)

    with pytest.raises(ClientError) as refused:
        _put(cloudwatch)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    for attempt in Retrying(
        stop=stop_after_delay(10),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(ClientError),
        reraise=True,
    ):
        with attempt:
            _put(cloudwatch)


def test_outage_of_one_operation_spares_the_others(server: MotoServer) -> None:
    """Failing ECS ListClusters leaves CreateCluster and other services answering."""
    ecs = _client(server, "ecs")
    server.outages.fail("ecs", seconds=30, operation="ListClusters")

    ecs.create_cluster(clusterName="up")
    _put(_client(server, "cloudwatch"))

    with pytest.raises(ClientError):
        ecs.list_clusters()


def test_query_protocol_operation_is_matched(server: MotoServer) -> None:
    """An EC2 call, whose operation travels in the form body, is matched by name."""
    ec2 = _client(server, "ec2")
    server.outages.fail("ec2", seconds=30, operation="DescribeVpcs")

    assert ec2.describe_availability_zones()["AvailabilityZones"]
    with pytest.raises(ClientError):
        ec2.describe_vpcs()
