"""The autoscaler Lambda: its sources of depth, its zip, its cooldown across runs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.local import ecs_completion
from harness.local.moto_server import MotoServer
from harness.local.servers import RabbitNode, free_port
from services.lambda_autoscaling import handler as autoscaler
from services.lambda_autoscaling.package import HANDLER, package_lambda, sources
from services.lambda_autoscaling.settings import Settings
from services.shared import queue_metrics, rabbitmq

REGION = "us-east-1"
# CloudWatch makes a datapoint readable a few seconds after it is put.
INGESTION_TIMEOUT = 30.0
# What the Lambda runtime provides besides the zip: boto3 and what it imports.
LAMBDA_RUNTIME = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "six",
    "urllib3",
)
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


# An account in moto with a cluster and an agent service per test.


@dataclass
class Account:
    """moto's ECS and CloudWatch, with a cluster and service of the test's own."""

    endpoint_url: str
    ecs: Any
    cloudwatch: Any
    network: dict[str, Any]
    cluster: str
    queue: str

    def env(self, management_url: str, **overrides: str) -> dict[str, str]:
        """The Lambda's environment for this account's service."""
        return {
            "ECS_CLUSTER": self.cluster,
            "AGENT_SERVICE": "agent",
            "AWS_REGION": REGION,
            "RABBITMQ_MANAGEMENT_URL": management_url,
            "RABBITMQ_USER": "guest",
            "RABBITMQ_PASSWORD": "guest",
            "METRIC_QUEUE_NAME": self.queue,
            "METRIC_FRESHNESS_SECONDS": "15",
            "SCALE_IN_COOLDOWN_SECONDS": "30",
            **overrides,
        }

    def put_depth(
        self, value: int, at: datetime | None = None, *, wait: bool = True
    ) -> None:
        """Put a datapoint and (unless told not to) wait until it is readable."""
        identity = queue_metrics.MetricIdentity(queue_name=self.queue)
        when = at or datetime.now(UTC)
        self.cloudwatch.put_metric_data(
            Namespace=identity.namespace,
            MetricData=[
                {
                    "MetricName": identity.metric_name,
                    "Dimensions": identity.dimensions,
                    "Timestamp": when,
                    "Value": float(value),
                    "StorageResolution": 1,
                }
            ],
        )
        if not wait:
            return
        for attempt in Retrying(
            stop=stop_after_delay(INGESTION_TIMEOUT),
            wait=wait_fixed(0.2),
            retry=retry_if_exception_type(AssertionError),
            reraise=True,
        ):
            with attempt:
                found = self.cloudwatch.get_metric_statistics(
                    Namespace=identity.namespace,
                    MetricName=identity.metric_name,
                    Dimensions=identity.dimensions,
                    StartTime=when - timedelta(seconds=1),
                    EndTime=when + timedelta(seconds=60),
                    Period=1,
                    Statistics=["Maximum"],
                )["Datapoints"]
                assert found, f"datapoint of {when} not readable yet"

    def desired(self) -> int:
        services = self.ecs.describe_services(cluster=self.cluster, services=["agent"])
        return int(services["services"][0]["desiredCount"])

    def assert_older_than(self, age: timedelta) -> None:
        services = self.ecs.describe_services(cluster=self.cluster, services=["agent"])
        changed = max(d["updatedAt"] for d in services["services"][0]["deployments"])
        assert datetime.now(UTC) - changed > age, f"service changed at {changed}"

    def run_agents(self, count: int) -> list[str]:
        tasks = self.ecs.run_task(
            cluster=self.cluster,
            taskDefinition="agent",
            launchType="FARGATE",
            networkConfiguration=self.network,
            group="service:agent",
            count=count,
        )["tasks"]
        return [task["taskArn"] for task in tasks]


@pytest.fixture(scope="module")
def _moto() -> Iterator[tuple[MotoServer, dict[str, Any]]]:
    ecs_completion.install()
    with MotoServer() as server:
        clients = ClientFactory(REGION, endpoint_url=server.endpoint_url)
        ec2 = clients.client("ec2")
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
        clients.client("ecs").register_task_definition(
            family="agent",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[{"name": "agent", "image": "agent", "memory": 512}],
        )
        network = {"subnets": [subnet], "securityGroups": [group]}
        yield server, {"awsvpcConfiguration": network}


@pytest.fixture
def account(_moto: tuple[MotoServer, dict[str, Any]]) -> Account:
    """A fresh cluster, agent service (desired 1) and queue name in moto."""
    server, network = _moto
    clients = ClientFactory(REGION, endpoint_url=server.endpoint_url)
    ecs = clients.client("ecs")
    cluster = f"scaling-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    ecs.create_service(
        cluster=cluster,
        serviceName="agent",
        taskDefinition="agent",
        desiredCount=1,
        launchType="FARGATE",
    )
    queue = f"{queue_metrics.QUEUE_NAME}.{uuid.uuid4().hex[:6]}"
    cloudwatch = clients.client("cloudwatch")
    return Account(server.endpoint_url, ecs, cloudwatch, network, cluster, queue)


@pytest.fixture
def backlog(
    clean_rabbitmq: RabbitNode, account: Account
) -> Iterator[Callable[[int], None]]:
    """Publish messages to the account's queue on the real broker."""
    connection = rabbitmq.connect(clean_rabbitmq.amqp_url)
    channel = connection.channel()
    channel.queue_declare(account.queue, durable=True)

    def publish(count: int) -> None:
        for _ in range(count):
            channel.basic_publish("", account.queue, b"{}")

    yield publish
    connection.close()


def invoke(account: Account, env: dict[str, str], dry_run: bool = False) -> Any:
    """Run the handler's work in this process, against the account."""
    return autoscaler.run(
        Settings.from_env(env),
        cloudwatch=account.cloudwatch,
        ecs=account.ecs,
        dry_run=dry_run,
        now=datetime.now(UTC),
    )


def test_missing_metric_falls_back_to_rabbitmq(
    account: Account, backlog: Callable[[int], None], clean_rabbitmq: RabbitNode
) -> None:
    """With no datapoint at all, the depth comes from RabbitMQ and says why."""
    backlog(7)

    record = invoke(account, account.env(clean_rabbitmq.management_url))

    inputs = record["inputs"]
    assert (inputs["source"], inputs["depth"], inputs["ready"]) == ("rabbitmq", 7, 7)
    assert "no datapoints" in inputs["source_reason"]
    assert record["decision"]["action"] == "scale_up"
    assert account.desired() == 2


def test_stale_metric_falls_back_to_rabbitmq(
    account: Account, backlog: Callable[[int], None], clean_rabbitmq: RabbitNode
) -> None:
    """A datapoint older than METRIC_FRESHNESS_SECONDS is set aside for RabbitMQ."""
    backlog(7)
    account.put_depth(3, at=datetime.now(UTC) - timedelta(seconds=120))

    record = invoke(account, account.env(clean_rabbitmq.management_url))

    inputs = record["inputs"]
    assert (inputs["source"], inputs["depth"]) == ("rabbitmq", 7)
    assert "stale" in inputs["source_reason"]
    assert 110 < inputs["metric_age_seconds"] < 180


def test_fresh_metric_is_used_rather_than_rabbitmq(
    account: Account, backlog: Callable[[int], None], clean_rabbitmq: RabbitNode
) -> None:
    """A fresh datapoint is the depth read, even where the broker says otherwise."""
    backlog(7)
    account.put_depth(12)

    record = invoke(account, account.env(clean_rabbitmq.management_url))

    inputs = record["inputs"]
    assert (inputs["source"], inputs["depth"]) == ("cloudwatch", 12)
    assert inputs["metric_age_seconds"] < 15
    assert record["metric"] == {
        "namespace": queue_metrics.NAMESPACE,
        "metric_name": queue_metrics.QUEUE_DEPTH,
        "dimensions": [{"Name": "QueueName", "Value": account.queue}],
    }
    assert (record["decision"]["desired"], account.desired()) == (3, 3)


def test_unreadable_cloudwatch_falls_back_to_rabbitmq(
    account: Account, backlog: Callable[[int], None], clean_rabbitmq: RabbitNode
) -> None:
    """CloudWatch out of reach sends the autoscaler to RabbitMQ, and it says so."""
    backlog(4)
    unreachable = boto3.client(
        "cloudwatch",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )
    settings = Settings.from_env(account.env(clean_rabbitmq.management_url))

    record = autoscaler.run(
        settings,
        cloudwatch=unreachable,
        ecs=account.ecs,
        dry_run=True,
        now=datetime.now(UTC),
    )

    assert (record["inputs"]["source"], record["inputs"]["depth"]) == ("rabbitmq", 4)
    assert "CloudWatch unreadable" in record["inputs"]["source_reason"]


def test_no_reading_at_all_holds(account: Account) -> None:
    """With neither CloudWatch data nor a broker, the service is left as it is."""
    closed = f"http://127.0.0.1:{free_port()}"

    record = invoke(account, account.env(closed))

    assert record["inputs"]["source"] == "none"
    assert record["decision"]["action"] == "hold"
    assert "no reading of the queue" in record["decision"]["reason"]
    assert record["applied"] is False


def test_dry_run_decides_without_changing_the_service(
    account: Account, clean_rabbitmq: RabbitNode
) -> None:
    """A dry run records a scale-up but leaves the desired count alone."""
    account.put_depth(250)

    record = invoke(account, account.env(clean_rabbitmq.management_url), dry_run=True)

    assert record["decision"]["action"] == "scale_up"
    assert (record["dry_run"], record["applied"]) == (True, False)
    assert account.desired() == 1


def test_busy_agents_are_counted_and_kept(
    account: Account, clean_rabbitmq: RabbitNode
) -> None:
    """Protected tasks of the service count as busy and block a scale-in."""
    account.ecs.update_service(cluster=account.cluster, service="agent", desiredCount=3)
    agents = account.run_agents(3)
    account.ecs.update_task_protection(
        cluster=account.cluster, tasks=agents[:2], protectionEnabled=True
    )
    now = datetime.now(UTC)
    for seconds in range(0, 40, 2):  # an idle queue for longer than the cooldown
        account.put_depth(0, at=now - timedelta(seconds=seconds))
    env = account.env(clean_rabbitmq.management_url, SCALE_IN_COOLDOWN_SECONDS="0")

    first = invoke(account, env)
    second = invoke(account, env)

    assert first["inputs"]["busy"] == 2
    assert (first["decision"]["action"], first["decision"]["desired"]) == (
        "scale_down",
        2,
    )
    assert (second["decision"]["action"], second["decision"]["desired"]) == ("hold", 2)
    assert "busy" in second["decision"]["reason"]


# The zip, run as the Lambda runtime would: a fresh interpreter, the zip and boto3.


@pytest.fixture(scope="module")
def lambda_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_lambda(tmp_path_factory.mktemp("lambda"))


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only boto3 and its dependencies, as links."""
    runtime = tmp_path_factory.mktemp("runtime")
    for name in LAMBDA_RUNTIME:
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} is not installed"
        origin = Path(str(spec.origin))
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    return runtime


RUNNER = """
import json, sys, sysconfig
zip_path, runtime, event = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = [zip_path, runtime]
from services.lambda_autoscaling.handler import handler
record = handler(event, None)
paths = sysconfig.get_paths()
allowed = (zip_path, runtime, paths["stdlib"], paths["platstdlib"])
outside = sorted(
    m.__file__ for m in list(sys.modules.values())
    if getattr(m, "__file__", None) and not m.__file__.startswith(allowed)
)
services = sorted(
    m.__file__ for name, m in list(sys.modules.items())
    if name.startswith("services") and getattr(m, "__file__", None)
)
print(json.dumps({"record": record, "outside": outside, "services": services}))
"""


def invoke_zip(
    zip_path: Path, runtime: Path, env: dict[str, str], endpoint_url: str
) -> dict[str, Any]:
    """Run the zip's handler in a fresh ``python -I -S`` process; return its output."""
    environment = {
        **env,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", RUNNER, str(zip_path), str(runtime), "{}"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"handler failed:\n{done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_zip_is_reproducible_and_holds_only_its_modules(
    lambda_zip: Path, tmp_path: Path
) -> None:
    """Two builds are byte-identical and hold the handler's package and imports."""
    again = package_lambda(tmp_path / "again.zip")

    names = zipfile.ZipFile(lambda_zip).namelist()
    assert hashlib.sha256(lambda_zip.read_bytes()).digest() == (
        hashlib.sha256(again.read_bytes()).digest()
    )
    assert names == sources()
    assert "services/lambda_autoscaling/handler.py" in names
    assert "services/shared/rabbit_depth.py" in names
    assert not [name for name in names if "__pycache__" in name]
    assert HANDLER == "services.lambda_autoscaling.handler.handler"


def test_zip_imports_nothing_outside_itself(
    lambda_zip: Path, lambda_runtime: Path, account: Account
) -> None:
    """The zip's handler runs on the zip, boto3 and the standard library alone."""
    account.put_depth(0)
    env = account.env(f"http://127.0.0.1:{free_port()}")

    answer = invoke_zip(lambda_zip, lambda_runtime, env, account.endpoint_url)

    assert answer["outside"] == []
    assert answer["services"]
    assert all(path.startswith(str(lambda_zip)) for path in answer["services"])
    assert answer["record"]["inputs"]["source"] == "cloudwatch"


def test_cooldown_is_judged_across_separate_invocations(
    lambda_zip: Path, lambda_runtime: Path, account: Account
) -> None:
    """Scale up at once, hold while the backlog is recent, then step down by one."""
    # Long enough to outlast CloudWatch's ingestion waits between the calls.
    env = account.env(f"http://127.0.0.1:{free_port()}", SCALE_IN_COOLDOWN_SECONDS="15")
    # Past the service's creation, only the metric's history can hold a scale-in.
    until(lambda: account.assert_older_than(timedelta(seconds=15)), timeout=30)
    now = datetime.now(UTC)
    for seconds in range(0, 12, 2):
        account.put_depth(17, at=now - timedelta(seconds=seconds), wait=seconds == 0)

    def run() -> dict[str, Any]:
        answer = invoke_zip(lambda_zip, lambda_runtime, env, account.endpoint_url)
        record: dict[str, Any] = answer["record"]
        return record

    up = run()
    account.put_depth(0)
    held = run()

    def stepped_down() -> dict[str, Any]:
        account.put_depth(0)
        record = run()
        assert record["decision"]["action"] == "scale_down", record["cooldown"]
        return record

    down = until(stepped_down, timeout=60, every=1)
    assert (up["decision"]["action"], up["decision"]["desired"]) == ("scale_up", 4)
    assert up["inputs"]["source"] == "cloudwatch"
    assert held["decision"]["action"] == "hold"
    assert "17" in held["cooldown"]["reason"]
    assert down["decision"]["desired"] == 3
    assert account.desired() == 3


def run_module(
    env: dict[str, str], *arguments: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m services.lambda_autoscaling`` with ``env`` and no AWS profile."""
    environment = {
        **os.environ,
        **env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.lambda_autoscaling", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_module_decides_once_from_the_environment(account: Account) -> None:
    """``python -m services.lambda_autoscaling`` prints one decision record."""
    account.put_depth(12)
    env = {
        **account.env(f"http://127.0.0.1:{free_port()}"),
        "AWS_ENDPOINT_URL": account.endpoint_url,
    }

    done = run_module(env, "--dry-run")

    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["inputs"]["source"] == "cloudwatch"
    assert (record["decision"]["action"], record["decision"]["desired"]) == (
        "scale_up",
        3,
    )
    assert (record["dry_run"], account.desired()) == (True, 1)


def test_module_names_a_missing_setting() -> None:
    """Without ECS_CLUSTER the module exits 2 and names the variable."""
    done = run_module({"ECS_CLUSTER": "", "AWS_REGION": REGION})

    assert done.returncode == 2
    assert "ECS_CLUSTER is not set" in done.stderr
    assert done.stdout == ""
