"""The local ECS scheduler: services get real tasks, as ECS would run them.

The launcher here runs each container as a plain process on the host, so that
the scheduler's own rules are tested apart from network namespaces and the
container catalog.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.local.ecs_scheduler import ContainerState, ServiceScheduler, TaskState
from harness.local.moto_server import MotoServer

REGION = "us-east-1"
CLUSTER = "sched"
SUBNETS: list[str] = []
BLOCK = "import signal; signal.signal(signal.SIGTERM, signal.SIG_DFL); signal.pause()"


class ProcessTask:
    """Every container of a task as one blocking process."""

    def __init__(self, definition: dict[str, Any], address: str) -> None:
        self.address = address
        self.processes = {
            container["name"]: subprocess.Popen([sys.executable, "-c", BLOCK])
            for container in definition["containerDefinitions"]
        }
        self._stop_reason: str | None = None

    def state(self) -> TaskState:
        containers = []
        for name, process in self.processes.items():
            code = process.poll()
            containers.append(
                ContainerState(
                    name=name,
                    status="RUNNING" if code is None else "STOPPED",
                    health="HEALTHY" if code is None else "UNKNOWN",
                    exit_code=code,
                )
            )
        stopped = any(c.status == "STOPPED" for c in containers)
        if stopped:
            for process in self.processes.values():
                if process.poll() is None:
                    process.terminate()
        done = all(process.poll() is not None for process in self.processes.values())
        return TaskState(
            containers=tuple(containers),
            stopped=stopped and done,
            stopped_reason=self._stop_reason or "Essential container in task exited",
        )

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        for process in self.processes.values():
            process.terminate()


class ProcessLauncher:
    """Launches ProcessTasks at made-up loopback addresses."""

    def __init__(self) -> None:
        self.tasks: list[ProcessTask] = []
        self._lock = threading.Lock()

    def launch(self, record: Any, definition: dict[str, Any]) -> ProcessTask:
        with self._lock:
            task = ProcessTask(definition, f"127.0.1.{len(self.tasks) + 1}")
            self.tasks.append(task)
        return task

    def all_ended(self) -> bool:
        return all(
            process.poll() is not None
            for task in self.tasks
            for process in task.processes.values()
        )


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Retry ``check`` until it stops raising AssertionError or time runs out."""
    for attempt in Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def _moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def account(_moto: MotoServer) -> Iterator[tuple[Any, ProcessLauncher]]:
    """An empty account with a running scheduler; yields (ecs client, launcher)."""
    _moto.reset()
    clients = ClientFactory(REGION, endpoint_url=_moto.endpoint_url)
    ecs = clients.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    subnets = clients.client("ec2").describe_subnets()["Subnets"]
    SUBNETS[:] = [subnet["SubnetId"] for subnet in subnets]
    launcher = ProcessLauncher()
    scheduler = ServiceScheduler(
        _moto.account_id,
        REGION,
        launcher,
        elbv2=clients.client("elbv2"),
        definition_of=lambda arn: ecs.describe_task_definition(taskDefinition=arn)[
            "taskDefinition"
        ],
        tick=0.1,
    ).start()
    yield ecs, launcher
    scheduler.stop()
    eventually(lambda: _assert(launcher.all_ended(), "processes left running"))
    assert scheduler.errors == []


def _assert(condition: bool, message: str) -> None:
    assert condition, message


def _register(ecs: Any, family: str = "app", containers: int = 2) -> str:
    definition = ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {"name": f"c{n}", "image": "test/block", "essential": True}
            for n in range(containers)
        ],
    )
    return str(definition["taskDefinition"]["taskDefinitionArn"])


def _service(ecs: Any, desired: int, **extra: Any) -> None:
    ecs.create_service(
        cluster=CLUSTER,
        serviceName="svc",
        taskDefinition="app",
        desiredCount=desired,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": [SUBNETS[0]], "securityGroups": []}
        },
        **extra,
    )


def _describe(ecs: Any) -> dict[str, Any]:
    return dict(ecs.describe_services(cluster=CLUSTER, services=["svc"])["services"][0])


def _tasks(ecs: Any, status: str = "RUNNING") -> list[dict[str, Any]]:
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName="svc", desiredStatus=status)[
        "taskArns"
    ]
    if not arns:
        return []
    return list(ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"])


def _steady(ecs: Any, running: int) -> dict[str, Any]:
    service = _describe(ecs)
    tasks = [t for t in _tasks(ecs) if t["lastStatus"] == "RUNNING"]
    assert (service["runningCount"], service["pendingCount"]) == (running, 0), service
    assert len(tasks) == running, tasks
    return service


def test_service_gets_its_desired_tasks(account: tuple[Any, ProcessLauncher]) -> None:
    """A service of two runs two tasks, each with a record per container."""
    ecs, launcher = account
    _register(ecs)

    _service(ecs, 2)

    service = eventually(lambda: _steady(ecs, 2))
    task = _tasks(ecs)[0]
    assert {c["name"] for c in task["containers"]} == {"c0", "c1"}
    assert {c["lastStatus"] for c in task["containers"]} == {"RUNNING"}
    address = task["attachments"][0]["details"][-1]["value"]
    assert address in {t.address for t in launcher.tasks}
    assert service["deployments"][0]["rolloutState"] == "COMPLETED"
    assert service["events"][0]["message"].endswith("has reached a steady state.")


def test_task_whose_process_dies_is_replaced(
    account: tuple[Any, ProcessLauncher],
) -> None:
    """An essential container's exit stops its task, and the service starts another."""
    ecs, launcher = account
    _register(ecs)
    _service(ecs, 1)
    eventually(lambda: _steady(ecs, 1))

    launcher.tasks[0].processes["c0"].kill()

    eventually(lambda: _assert(len(launcher.tasks) == 2, "no replacement started"))
    stopped = eventually(lambda: _stopped_one(ecs))
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert stopped["containers"][0]["exitCode"] == -9
    eventually(lambda: _steady(ecs, 1))


def _stopped_one(ecs: Any) -> dict[str, Any]:
    stopped = _tasks(ecs, "STOPPED")
    assert stopped, "no stopped task"
    assert stopped[0]["lastStatus"] == "STOPPED", stopped
    return stopped[0]


def test_stop_task_stops_the_processes(account: tuple[Any, ProcessLauncher]) -> None:
    """stop_task ends the task's processes and records who stopped it."""
    ecs, launcher = account
    _register(ecs, containers=1)
    _service(ecs, 1)
    eventually(lambda: _steady(ecs, 1))
    arn = _tasks(ecs)[0]["taskArn"]

    ecs.stop_task(cluster=CLUSTER, task=arn, reason="operator")

    stopped = eventually(lambda: _stopped_one(ecs))
    assert stopped["stoppedReason"] == "operator"
    assert stopped["stopCode"] == "UserInitiated"
    assert launcher.tasks[0].processes["c0"].poll() is not None


def test_new_revision_rolls_out_within_the_limits(
    account: tuple[Any, ProcessLauncher],
) -> None:
    """With maximumPercent 100 the old task stops before the new one starts."""
    ecs, _ = account
    _register(ecs, containers=1)
    _service(
        ecs,
        1,
        deploymentConfiguration={"minimumHealthyPercent": 0, "maximumPercent": 100},
    )
    eventually(lambda: _steady(ecs, 1))
    second = _register(ecs, containers=1)

    ecs.update_service(cluster=CLUSTER, service="svc", taskDefinition=second)

    def rolled() -> None:
        service = _steady(ecs, 1)
        assert [d["taskDefinition"] for d in service["deployments"]] == [second]
        assert _tasks(ecs)[0]["taskDefinitionArn"] == second

    eventually(rolled)


def test_scale_in_spares_protected_tasks(account: tuple[Any, ProcessLauncher]) -> None:
    """Scale-in stops unprotected tasks only and waits for the protected ones."""
    ecs, _ = account
    _register(ecs, containers=1)
    _service(ecs, 3)
    eventually(lambda: _steady(ecs, 3))
    protected = [t["taskArn"] for t in _tasks(ecs)[:2]]
    ecs.update_task_protection(cluster=CLUSTER, tasks=protected, protectionEnabled=True)

    ecs.update_service(cluster=CLUSTER, service="svc", desiredCount=1)

    eventually(lambda: _assert(_running_arns(ecs) == set(protected), "not spared"))
    events = [e["message"] for e in _describe(ecs)["events"]]
    assert any("unable to scale in" in message for message in events)
    ecs.update_task_protection(
        cluster=CLUSTER, tasks=protected, protectionEnabled=False
    )
    eventually(lambda: _steady(ecs, 1))


def _running_arns(ecs: Any) -> set[str]:
    return {t["taskArn"] for t in _tasks(ecs) if t["lastStatus"] == "RUNNING"}


def test_deleted_service_stops_its_tasks(
    account: tuple[Any, ProcessLauncher],
) -> None:
    """A service deleted with force has its tasks stopped and their processes ended."""
    ecs, launcher = account
    _register(ecs, containers=1)
    _service(ecs, 2)
    eventually(lambda: _steady(ecs, 2))

    ecs.delete_service(cluster=CLUSTER, service="svc", force=True)

    eventually(lambda: _assert(launcher.all_ended(), "tasks still running"))
    assert len(_tasks(ecs, "STOPPED")) == 2
