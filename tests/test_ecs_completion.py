"""Task scale-in protection added to moto's ECS, proven through boto3."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import moto
import pytest
from botocore.exceptions import ClientError
from moto.ecs import responses as moto_ecs_responses
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.local import ecs_completion
from harness.local.moto_server import MotoServer

REGION = "us-east-1"
REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


@dataclass
class Ecs:
    """An ECS client with a cluster of the test's own and a network to run in."""

    client: Any
    cluster: str
    network: dict[str, Any]

    def run_tasks(self, count: int, group: str | None = "service:agent") -> list[str]:
        """Start ``count`` tasks in ``group`` (None: standalone); return their ARNs."""
        extra = {"group": group} if group else {}
        tasks = self.client.run_task(
            cluster=self.cluster,
            taskDefinition="agent",
            launchType="FARGATE",
            networkConfiguration=self.network,
            count=count,
            **extra,
        )["tasks"]
        return [task["taskArn"] for task in tasks]

    def protect(self, tasks: list[str], **options: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.update_task_protection(
            cluster=self.cluster, tasks=tasks, protectionEnabled=True, **options
        )
        return answer

    def read(self, tasks: list[str]) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get_task_protection(
            cluster=self.cluster, tasks=tasks
        )
        return answer


@pytest.fixture(scope="module")
def _account() -> Iterator[tuple[Any, dict[str, Any]]]:
    ecs_completion.install()
    with MotoServer() as server:
        clients = ClientFactory(REGION, endpoint_url=server.endpoint_url)
        ecs = clients.client("ecs")
        ecs.register_task_definition(
            family="agent",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            # moto's Fargate run_task needs memory on the container, unlike AWS.
            containerDefinitions=[{"name": "agent", "image": "agent", "memory": 512}],
        )
        yield ecs, _network(clients.client("ec2"))


@pytest.fixture
def ecs(_account: tuple[Any, dict[str, Any]]) -> Iterator[Ecs]:
    client, network = _account
    cluster = f"protection-{uuid.uuid4().hex[:8]}"
    client.create_cluster(clusterName=cluster)
    yield Ecs(client, cluster, network)
    ecs_completion.set_protection_time_scale(1.0)


def _network(ec2: Any) -> dict[str, Any]:
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    return {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}}


def test_enabling_without_duration_protects_for_120_minutes(ecs: Ecs) -> None:
    """Protection without expiresInMinutes lasts the default two hours."""
    [task] = ecs.run_tasks(1)
    before = datetime.now(UTC)

    answer = ecs.protect([task])

    [entry] = answer["protectedTasks"]
    assert entry["taskArn"] == task
    assert entry["protectionEnabled"] is True
    expected = before + timedelta(minutes=120)
    assert abs(entry["expirationDate"] - expected) < timedelta(seconds=5)
    assert answer["failures"] == []


def test_protection_reads_back_and_disables(ecs: Ecs) -> None:
    """GetTaskProtection shows what UpdateTaskProtection set, and its undoing."""
    protected, idle = ecs.run_tasks(2)
    ecs.protect([protected], expiresInMinutes=30)

    states = ecs.read([protected, idle])
    ecs.client.update_task_protection(
        cluster=ecs.cluster, tasks=[protected], protectionEnabled=False
    )
    after = ecs.read([protected])

    enabled = {t["taskArn"]: t["protectionEnabled"] for t in states["protectedTasks"]}
    assert enabled == {protected: True, idle: False}
    [cleared] = after["protectedTasks"]
    assert cleared["protectionEnabled"] is False
    assert "expirationDate" not in cleared


def test_tasks_may_be_named_by_id(ecs: Ecs) -> None:
    """A bare task ID is accepted and answered with the full ARN."""
    [task] = ecs.run_tasks(1)

    answer = ecs.protect([task.split("/")[-1]], expiresInMinutes=5)

    assert [t["taskArn"] for t in answer["protectedTasks"]] == [task]


@pytest.mark.parametrize("minutes", [0, 2881])
def test_duration_outside_1_to_2880_minutes_is_invalid(ecs: Ecs, minutes: int) -> None:
    """expiresInMinutes outside AWS's range is an InvalidParameterException."""
    [task] = ecs.run_tasks(1)

    with pytest.raises(ClientError) as caught:
        ecs.protect([task], expiresInMinutes=minutes)

    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "2880" in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize("minutes", [1, 2880])
def test_duration_bounds_are_accepted(ecs: Ecs, minutes: int) -> None:
    """Both ends of the 1-2,880 minute range are accepted."""
    [task] = ecs.run_tasks(1)

    [entry] = ecs.protect([task], expiresInMinutes=minutes)["protectedTasks"]

    remaining = entry["expirationDate"] - datetime.now(UTC)
    assert timedelta(minutes=minutes) - remaining < timedelta(seconds=5)


def test_standalone_task_is_not_valid(ecs: Ecs) -> None:
    """A task outside any service fails with TASK_NOT_VALID, the others succeed."""
    [service_task] = ecs.run_tasks(1)
    [standalone] = ecs.run_tasks(1, group=None)

    answer = ecs.protect([service_task, standalone])

    assert [t["taskArn"] for t in answer["protectedTasks"]] == [service_task]
    [failure] = answer["failures"]
    assert (failure["arn"], failure["reason"]) == (standalone, "TASK_NOT_VALID")
    assert failure["detail"]


def test_unknown_task_is_missing(ecs: Ecs) -> None:
    """A task that does not exist is a MISSING failure carrying the name given."""
    unknown = f"arn:aws:ecs:{REGION}:123456789012:task/{ecs.cluster}/0123abcd"

    answer = ecs.read([unknown])

    assert answer["protectedTasks"] == []
    assert [(f["arn"], f["reason"]) for f in answer["failures"]] == [
        (unknown, "MISSING")
    ]


def test_more_than_ten_tasks_per_update_is_invalid(ecs: Ecs) -> None:
    """UpdateTaskProtection takes at most ten tasks in one call."""
    tasks = ecs.run_tasks(11)

    ecs.protect(tasks[:10])
    with pytest.raises(ClientError) as caught:
        ecs.protect(tasks)

    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"


def test_unknown_cluster_is_reported(ecs: Ecs) -> None:
    """A cluster that does not exist is ClusterNotFoundException, as in moto's ECS."""
    with pytest.raises(ClientError) as caught:
        ecs.client.get_task_protection(cluster="nowhere", tasks=["abc"])

    assert caught.value.response["Error"]["Code"] == "ClusterNotFoundException"


def test_expired_protection_reads_as_disabled(ecs: Ecs) -> None:
    """Once its time is up, protection reads as off, with the time scale applied."""
    [task] = ecs.run_tasks(1)
    ecs_completion.set_protection_time_scale(1 / 60)  # a minute lasts a second
    ecs.protect([task], expiresInMinutes=1)

    for attempt in Retrying(
        stop=stop_after_delay(10),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            [entry] = ecs.read([task])["protectedTasks"]
            assert entry["protectionEnabled"] is False, f"still {entry}"


def test_time_scale_must_be_positive() -> None:
    """A zero or negative time scale is refused with the values that work."""
    with pytest.raises(ValueError, match="1/60"):
        ecs_completion.set_protection_time_scale(0)


def test_install_is_idempotent() -> None:
    """Installing twice leaves one working completion."""
    ecs_completion.install()
    ecs_completion.install()

    assert ecs_completion.is_installed()


def test_moto_is_the_pinned_version() -> None:
    """The completion patches moto's internals, so moto must be the pinned one."""
    pin = re.search(r"^moto(\[[^]]*\])?==(\S+)$", REQUIREMENTS.read_text(), re.M)

    assert pin is not None, "requirements.txt must pin moto exactly"
    assert moto.__version__ == pin.group(2), (
        f"moto {moto.__version__} is installed but {pin.group(2)} is pinned: "
        "install the pin, or re-check harness/local/ecs_completion.py against "
        "the new moto and move the pin"
    )


def test_moto_does_not_implement_task_protection_itself() -> None:
    """When moto gains these actions, this fails so the completion can be dropped."""
    source = Path(moto_ecs_responses.__file__).read_text()

    for action in ecs_completion.ACTIONS:
        assert f"def {action}(" not in source, (
            f"moto {moto.__version__} implements {action}: compare it with "
            "harness/local/ecs_completion.py and remove the completion"
        )


def test_reading_without_tasks_lists_every_service_task(ecs: Ecs) -> None:
    """GetTaskProtection without tasks answers for each service task, no others."""
    service_tasks = ecs.run_tasks(2)
    ecs.run_tasks(1, group=None)

    answer = ecs.client.get_task_protection(cluster=ecs.cluster)

    listed = sorted(t["taskArn"] for t in answer["protectedTasks"])
    assert listed == sorted(service_tasks)
    assert answer["failures"] == []
