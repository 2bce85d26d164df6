"""The local container supervisor: task definitions run as real processes.

Containers run in a network namespace made for each test, so Redis and RabbitMQ
listen on their standard ports without touching the host's.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.errors import DeployError, NotReadyError
from harness.local.awslogs import CloudWatchLogsSink
from harness.local.catalog import REPO_ROOT, Catalog, ContainerContext, command_image
from harness.local.ecs_scheduler import TaskState
from harness.local.moto_server import MotoServer
from harness.local.supervisor import ESSENTIAL_EXITED, HEALTH_FAILED, TaskRunner

CATALOG = Catalog().with_images({"test/python": command_image(("python",))})
SLEEP = "import time; time.sleep(600)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
STUBBORN += "print('ignoring', flush=True); time.sleep(600)"
LOG_GROUP = "/ecs/euglena-test"


def _python(name: str, code: str, **fields: Any) -> dict[str, Any]:
    command = ["python", "-c", code]
    return {"name": name, "image": "test/python", "command": command, **fields}


def _health(command: str, **timing: float) -> dict[str, Any]:
    defaults = {"interval": 1, "timeout": 5, "retries": 3, "startPeriod": 0}
    return {"command": ["CMD-SHELL", command], **defaults, **timing}


def _logs(prefix: str) -> dict[str, Any]:
    options = {"awslogs-group": LOG_GROUP, "awslogs-stream-prefix": prefix}
    return {"logDriver": "awslogs", "options": options}


def _task(*containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"family": "euglena-test", "containerDefinitions": list(containers)} | extra


def _until(check: Callable[[], bool], timeout: float, what: Callable[[], Any]) -> None:
    """Poll ``check`` until it holds, failing with ``what()`` after ``timeout``."""
    for attempt in Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.1),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            assert check(), f"still not so after {timeout} s: {what()}"


def _container(state: TaskState, name: str) -> Any:
    return next(c for c in state.containers if c.name == name)


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, with loopback up and fast lookups."""
    name = f"euglena-test-{secrets.token_hex(4)}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
        )
        yield name
    finally:
        pids = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            psutil.Process(int(pid)).kill()
        subprocess.run(["ip", "netns", "delete", name], check=True)
        shutil.rmtree(etc, ignore_errors=True)
        assert not pids, f"processes left in namespace {name}: {pids}"


@pytest.fixture
def run_task(netns: str, tmp_path: Path) -> Iterator[Callable[..., TaskRunner]]:
    """Start task definitions in the namespace; every task is stopped at the end."""
    runners: list[TaskRunner] = []

    def start(definition: dict[str, Any], **options: Any) -> TaskRunner:
        options.setdefault("catalog", CATALOG)
        options.setdefault("state_root", tmp_path / "state")
        task_id = secrets.token_hex(8)
        runner = TaskRunner(
            definition, task_id, prefix=["ip", "netns", "exec", netns], **options
        )
        runners.append(runner.start())
        return runner

    yield start
    for runner in runners:
        runner.stop("test over")
    for runner in runners:
        runner.wait(runner.longest_stop + 10)
        assert runner.pids == []


def _in_netns(netns: str, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True
    )
    return done.stdout.strip()


def test_catalog_maps_images_to_local_commands(tmp_path: Path) -> None:
    """Official and platform image references resolve to their local programs."""
    gateway = "123456789012.dkr.ecr.us-east-1.amazonaws.com/euglena-ab12/gateway:1"
    ctx = ContainerContext(name="gateway", image=gateway, environment={})

    launch = Catalog().launch(ctx)

    assert launch.argv == ("python", "-m", "services.gateway")
    assert launch.cwd == REPO_ROOT
    assert launch.env["PYTHONPATH"] == str(REPO_ROOT)
    assert launch.path.split(":")[0] == str(Path(sys.executable).parent)
    for image in ("redis:7.2", "rabbitmq:3.13-management", "chromadb/chroma:1.5.9"):
        Catalog().resolve(image)


def test_unknown_image_is_refused_with_the_known_ones() -> None:
    """An image the catalog cannot run fails the task with the images it knows."""
    definition = _task({"name": "x", "image": "nginx:latest"})

    with pytest.raises(DeployError, match=r"nginx:latest.*chromadb/chroma"):
        TaskRunner(definition, "t1", state_root=Path("/nonexistent"))


def test_redis_and_rabbitmq_serve_standard_ports_inside_the_task(
    run_task: Callable[..., TaskRunner], netns: str
) -> None:
    """Redis and RabbitMQ answer on 6379 and 5672/15672 in the task's namespace,
    with the task definition's RabbitMQ user, and not on the host's ports."""
    rabbit_env = [
        {"name": "RABBITMQ_DEFAULT_USER", "value": "euglena"},
        {"name": "RABBITMQ_DEFAULT_PASS", "value": "s3cret"},
    ]
    redis = {
        "name": "redis",
        "image": "redis:7.2",
        "healthCheck": _health("redis-cli ping | grep -q PONG"),
    }
    rabbit = {
        "name": "rabbitmq",
        "image": "rabbitmq:3.13-management",
        "environment": rabbit_env,
        "healthCheck": _health("rabbitmq-diagnostics -q ping", startPeriod=30),
    }
    gated = _python(
        "app",
        SLEEP,
        dependsOn=[
            {"containerName": "redis", "condition": "HEALTHY"},
            {"containerName": "rabbitmq", "condition": "HEALTHY"},
        ],
    )
    healthy_at: dict[str, float] = {}

    def observe(state: TaskState) -> None:
        for c in state.containers:
            if c.health == "HEALTHY":
                healthy_at.setdefault(c.name, time.monotonic())

    runner = run_task(_task(redis, rabbit, gated), observer=observe)
    _until(lambda: runner.started_at("app") is not None, 60, runner.state)

    # ECS's check (``rabbitmq-diagnostics ping``) passes before the listeners are
    # up, on AWS as here; clients of a HEALTHY RabbitMQ still retry.
    whoami = (
        "curl",
        "-sf",
        "-u",
        "euglena:s3cret",
        "http://127.0.0.1:15672/api/whoami",
    )
    _until(lambda: '"name":"euglena"' in _in_netns(netns, *whoami), 30, runner.state)
    assert _in_netns(netns, "redis-cli", "-p", "6379", "ping") == "PONG"
    amqp = "amqp://euglena:s3cret@127.0.0.1:5672/%2F"
    connect = f"import pika; pika.BlockingConnection(pika.URLParameters({amqp!r}))"
    assert _in_netns(netns, sys.executable, "-c", connect + ".close(); print('ok')")
    app_start = runner.started_at("app")
    assert app_start is not None
    assert app_start >= max(healthy_at["redis"], healthy_at["rabbitmq"])
    host_listeners = {
        conn.pid
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in (5672, 6379)
    }
    assert host_listeners.isdisjoint(runner.pids)


def test_depends_on_healthy_holds_a_container_back(
    run_task: Callable[..., TaskRunner], tmp_path: Path
) -> None:
    """A container waits, PENDING, until its dependency's health check passes."""
    flag = tmp_path / "ready"
    db = _python("db", SLEEP, healthCheck=_health(f"test -f {flag}"))
    app = _python(
        "app", SLEEP, dependsOn=[{"containerName": "db", "condition": "HEALTHY"}]
    )
    runner = run_task(_task(db, app))
    _until(lambda: runner.started_at("db") is not None, 10, runner.state)

    with pytest.raises(NotReadyError):
        runner.wait(2.5)  # two failed checks of db, at least, go by
    assert _container(runner.state(), "app").status == "PENDING"
    flag.touch()
    created = time.monotonic()

    _until(
        lambda: _container(runner.state(), "app").status == "RUNNING", 10, runner.state
    )
    assert _container(runner.state(), "db").health == "HEALTHY"
    app_start = runner.started_at("app")
    assert app_start is not None
    assert app_start >= created


def test_failing_health_check_stops_the_task(
    run_task: Callable[..., TaskRunner],
) -> None:
    """After ``retries`` failed checks past the start period an essential container
    is UNHEALTHY and the task stops for failed health checks."""
    seen: list[str] = []
    check = _health("exit 1", retries=2, startPeriod=2)
    definition = _task(_python("web", SLEEP, healthCheck=check))

    runner = run_task(
        definition,
        observer=lambda s: seen.append(_container(s, "web").health),
    )
    state = runner.wait(20)

    assert seen[0] == "UNKNOWN"
    assert _container(state, "web").health == "UNHEALTHY"
    assert state.stopped_reason == HEALTH_FAILED
    started = runner.started_at("web")
    assert started is not None
    # Two checks past a 2 s start period at a 1 s interval: at least 3 s.
    assert time.monotonic() - started >= 3


def test_essential_exit_stops_the_task(run_task: Callable[..., TaskRunner]) -> None:
    """An essential container's exit stops the others and is recorded on the task."""
    main = _python("main", "import time; time.sleep(0.5); raise SystemExit(3)")
    side = _python("side", SLEEP)

    state = run_task(_task(main, side)).wait(20)

    assert _container(state, "main").exit_code == 3
    assert _container(state, "side").status == "STOPPED"
    assert _container(state, "side").exit_code == 128 + 15
    assert state.stopped_reason == ESSENTIAL_EXITED
    assert state.stop_code == "EssentialContainerExited"


def test_non_essential_exit_leaves_the_task_running(
    run_task: Callable[..., TaskRunner],
) -> None:
    """A non-essential container that exits does not stop the task."""
    helper = _python("helper", "print('done')", essential=False)
    runner = run_task(_task(helper, _python("main", SLEEP)))

    _until(
        lambda: _container(runner.state(), "helper").status == "STOPPED",
        10,
        runner.state,
    )

    with pytest.raises(NotReadyError):
        runner.wait(1.0)
    assert _container(runner.state(), "helper").exit_code == 0
    assert _container(runner.state(), "main").status == "RUNNING"


def test_stop_kills_what_ignores_sigterm_after_its_stop_timeout(
    run_task: Callable[..., TaskRunner],
) -> None:
    """A stop sends SIGTERM, then SIGKILL after stopTimeout, and leaves no process."""
    stubborn = _python("stubborn", STUBBORN, stopTimeout=2)
    runner = run_task(_task(stubborn, _python("polite", SLEEP)))
    _until(lambda: "ignoring" in runner.output("stubborn"), 10, runner.state)
    pids = runner.pids

    began = time.monotonic()
    runner.stop("stopped by the test")
    state = runner.wait(15)

    assert 2 <= time.monotonic() - began < 8
    assert _container(state, "stubborn").exit_code == 128 + 9
    assert _container(state, "polite").exit_code == 128 + 15
    assert state.stopped_reason == "stopped by the test"
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


def test_output_reaches_the_log_sink(run_task: Callable[..., TaskRunner]) -> None:
    """Each output line goes to the awslogs group and the stream ECS would name."""
    lines: list[tuple[str, str, str]] = []
    code = "import sys, time; print('one'); print('two', file=sys.stderr); "
    talker = _python("talker", code + "time.sleep(600)", logConfiguration=_logs("web"))

    runner = run_task(_task(talker), log_sink=lambda *line: lines.append(line))
    _until(lambda: len(lines) >= 2, 10, lambda: lines)

    stream = f"web/talker/{runner.task_id}"
    assert sorted(lines) == [(LOG_GROUP, stream, "one"), (LOG_GROUP, stream, "two")]


def test_output_reaches_cloudwatch_logs(run_task: Callable[..., TaskRunner]) -> None:
    """The CloudWatch sink creates the task's stream and puts the lines there."""
    code = "import time; print('hello cloudwatch', flush=True); time.sleep(600)"
    talker = _python("talker", code, logConfiguration=_logs("web"))
    with MotoServer() as server:
        logs = ClientFactory("us-east-1", endpoint_url=server.endpoint_url).client(
            "logs"
        )
        logs.create_log_group(logGroupName=LOG_GROUP)
        with CloudWatchLogsSink(logs, flush_seconds=0.2) as sink:
            runner = run_task(_task(talker), log_sink=sink)
            stream = f"web/talker/{runner.task_id}"

            def messages() -> list[str]:
                try:
                    got = logs.get_log_events(
                        logGroupName=LOG_GROUP, logStreamName=stream
                    )
                except logs.exceptions.ResourceNotFoundException:
                    return []
                return [event["message"] for event in got["events"]]

            _until(lambda: messages() == ["hello cloudwatch"], 10, messages)


def test_efs_volume_keeps_redis_data_across_tasks(
    run_task: Callable[..., TaskRunner], netns: str, tmp_path: Path
) -> None:
    """A Redis on an EFS volume finds its data again in the next task."""
    efs = {"fileSystemId": "fs-0123", "rootDirectory": "/redis-data"}
    redis = {
        "name": "redis",
        "image": "redis:7.2",
        "command": ["redis-server", "--appendonly", "yes"],
        "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}],
        "healthCheck": _health("redis-cli ping | grep -q PONG"),
    }
    definition = _task(redis, volumes=[{"name": "data", "efsVolumeConfiguration": efs}])

    def healthy(runner: TaskRunner) -> None:
        check = lambda: _container(runner.state(), "redis").health == "HEALTHY"  # noqa: E731
        _until(check, 15, runner.state)

    first = run_task(definition)
    healthy(first)
    assert _in_netns(netns, "redis-cli", "set", "mandate", "kept") == "OK"
    first.stop("replaced")
    first.wait(first.longest_stop)
    second = run_task(definition)
    healthy(second)

    assert _in_netns(netns, "redis-cli", "get", "mandate") == "kept"
    assert (tmp_path / "state" / "efs" / "fs-0123" / "redis-data").is_dir()


def test_chroma_serves_its_heartbeat_inside_the_task(
    run_task: Callable[..., TaskRunner], netns: str
) -> None:
    """Chroma passes its task-definition health check and serves on port 8000."""
    check = _health("bash -c ':> /dev/tcp/127.0.0.1/8000'")
    chroma = {"name": "chroma", "image": "chromadb/chroma:1.5.9", "healthCheck": check}

    runner = run_task(_task(chroma))
    _until(
        lambda: _container(runner.state(), "chroma").health == "HEALTHY",
        30,
        runner.state,
    )

    heartbeat = ("curl", "-sf", "http://127.0.0.1:8000/api/v2/heartbeat")
    assert "nanosecond" in _in_netns(netns, *heartbeat)
