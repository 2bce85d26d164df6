"""The agent against real RabbitMQ, Redis and Chroma: running tasks, acking only
after the result is stored, never running a recorded task twice, dead-lettering
malformed messages, the built-in runner's connector and memory, protection,
health and SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from harness.local.servers import ChromaServer, RabbitNode, RedisServer, free_port
from services.agent.health_server import start_health_server
from services.agent.http_connector import USER_AGENT, HttpConnector
from services.agent.memory import AgentMemory
from services.agent.runners import (
    RunnerConfigError,
    TaskContext,
    load_runner,
    run_synthetic,
    runners_for,
)
from services.agent.settings import Settings
from services.agent.state import TaskLedger
from services.gateway.store import TaskStore
from services.shared import rabbitmq
from services.shared.ecs_manager import ProtectionState, TaskProtection
from services.shared.tasks import TaskRecord
from tests.services.agent_support import (
    PAGE_TEXT,
    USER,
    AgentStarter,
    AgentThreads,
    Counting,
    SiteServer,
    agent_settings,
    baked_model,
    close_connection,
    message_for,
    publish_raw,
    queue_totals,
    serve_site,
    submit,
    wait_for,
    wait_for_totals,
)


@pytest.fixture
def site() -> Iterator[SiteServer]:
    """The external site the agent fetches from and checks in skip mode."""
    with serve_site() as server:
        yield server


@pytest.fixture
def settings(
    clean_redis: RedisServer,
    clean_rabbitmq: RabbitNode,
    chroma_server: ChromaServer,
    site: SiteServer,
) -> Settings:
    """Agent settings on the test's own servers."""
    return agent_settings(clean_redis, clean_rabbitmq, chroma_server, site)


@pytest.fixture
def start_agent(settings: Settings) -> Iterator[AgentStarter]:
    """Start agents in threads; each is stopped and must end at teardown."""
    threads = AgentThreads(settings)
    yield threads.start
    threads.stop_all()


@pytest.fixture(scope="session")
def model_dir(pytestconfig: pytest.Config) -> Path:
    """The embedding model, baked once per machine."""
    return baked_model(pytestconfig.rootpath)


def test_synthetic_task_runs_and_is_acknowledged(
    settings: Settings, start_agent: AgentStarter, clean_rabbitmq: RabbitNode
) -> None:
    """A task goes queued, running, completed, with its result, and leaves the queue."""
    start_agent()

    task_id = submit(settings, params={"seconds": 1})
    running = wait_for(settings, task_id, "running")
    done = wait_for(settings, task_id)

    assert running.attempts == 1
    assert done.status == "completed"
    assert done.result["worked_seconds"] == 1.0
    assert done.error is None
    assert done.attempts == 1
    assert done.updated_at > done.created_at
    wait_for_totals(clean_rabbitmq, (0, 0))


def test_failing_task_is_recorded_as_failed(
    settings: Settings, start_agent: AgentStarter, clean_rabbitmq: RabbitNode
) -> None:
    """A runner's error fails the task with its message; the message is consumed."""
    start_agent()

    task_id = submit(settings, params={"fail": True})
    done = wait_for(settings, task_id)

    assert done.status == "failed"
    assert "failed on purpose" in (done.error or "")
    assert done.result is None
    wait_for_totals(clean_rabbitmq, (0, 0))
    assert queue_totals(clean_rabbitmq, rabbitmq.DEAD_LETTER_QUEUE) == (0, 0)


def test_acknowledges_only_after_the_result_is_stored(
    settings: Settings,
    start_agent: AgentStarter,
    clean_rabbitmq: RabbitNode,
    clean_redis: RedisServer,
) -> None:
    """With Redis gone the finished task stays unacknowledged until it is stored."""
    runner = Counting()
    start_agent(runners={"synthetic": runner, "agent": runner})
    task_id = submit(settings, params={"seconds": 2})
    wait_for(settings, task_id, "running")

    clean_redis.stop()
    try:
        for attempt in Retrying(stop=stop_after_delay(20), wait=wait_fixed(0.1)):
            with attempt:
                assert runner.calls, "the task did not start"
        wait_for_totals(clean_rabbitmq, (0, 1))
    finally:
        clean_redis.start()

    done = wait_for(settings, task_id)
    assert done.status == "completed"
    wait_for_totals(clean_rabbitmq, (0, 0))
    assert runner.calls == [task_id]


class ConnectionKillingLedger(TaskLedger):
    """Stores the outcome, then has the broker drop the agent's connection."""

    node: RabbitNode
    agent_name: str
    killed = False

    def finish(self, record: TaskRecord) -> None:
        super().finish(record)
        if not self.killed:
            self.killed = True
            close_connection(self.node, self.agent_name)


def test_redelivered_recorded_task_is_not_run_again(
    settings: Settings,
    start_agent: AgentStarter,
    clean_rabbitmq: RabbitNode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection lost between store and ack redelivers; the task is not rerun."""
    runner = Counting()
    ledger = ConnectionKillingLedger.from_url(settings.redis_url)
    assert isinstance(ledger, ConnectionKillingLedger)
    ledger.node, ledger.agent_name = clean_rabbitmq, "agent-killed-before-ack"

    with caplog.at_level(logging.INFO, logger="services.agent.worker"):
        start_agent(
            ledger=ledger, runners={"synthetic": runner}, name=ledger.agent_name
        )
        task_id = submit(settings)
        wait_for(settings, task_id)
        wait_for_totals(clean_rabbitmq, (0, 0))

    assert ledger.killed
    assert runner.calls == [task_id]
    assert wait_for(settings, task_id).attempts == 1
    assert any("without running it again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"task_id": 7}', "'task_id' must be a non-empty string"),
        (
            json.dumps(
                {**json.loads(message_for("x").to_json()), "kind": "sh"}
            ).encode(),
            "'kind'",
        ),
    ],
)
def test_malformed_message_is_dead_lettered(
    settings: Settings,
    start_agent: AgentStarter,
    clean_rabbitmq: RabbitNode,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    reason: str,
) -> None:
    """A malformed message goes to the dead letters with its reason; work goes on."""
    start_agent()

    with caplog.at_level(logging.WARNING, logger="services.shared.rabbitmq"):
        publish_raw(settings, body)
        wait_for_totals(clean_rabbitmq, (1, 0), rabbitmq.DEAD_LETTER_QUEUE)
    task_id = submit(settings)

    assert wait_for(settings, task_id).status == "completed"
    assert any(reason in record.getMessage() for record in caplog.records)


def test_task_whose_record_was_lost_is_rebuilt(
    settings: Settings, start_agent: AgentStarter
) -> None:
    """A message whose record Redis lost still runs and gets a full record."""
    start_agent()
    message = message_for("rebuilt")

    publish_raw(settings, message.to_json())
    done = wait_for(settings, message.task_id)

    assert done.status == "completed"
    assert done.user_id == USER
    assert done.created_at == message.submitted_at
    assert TaskStore.from_url(settings.redis_url).list_for_user(USER, limit=5)


def test_builtin_agent_fetches_with_its_user_agent_and_remembers(
    settings: Settings, start_agent: AgentStarter, site: SiteServer, model_dir: Path
) -> None:
    """The built-in runner fetches a site that 403s bare clients, then recalls it."""
    start_agent(memory=AgentMemory(settings.chroma_url, model_dir))
    marker = uuid.uuid4().hex

    first = submit(settings, f"Read {site.url}/page about {marker}", kind="agent")
    first_result = wait_for(settings, first).result
    second = submit(settings, f"What did the page about {marker} say?", kind="agent")
    second_result = wait_for(settings, second).result

    assert httpx.get(f"{site.url}/page").status_code == 403
    (page,) = first_result["fetched"]
    assert page["ok"] is True
    assert PAGE_TEXT in page["excerpt"]
    assert ("/page", USER_AGENT) in site.requests
    assert second_result["fetched"] == []
    assert first in [memory["memory_id"] for memory in second_result["recalled"]]
    assert second_result["memory_error"] is None


def test_http_connector_retries_busy_servers(site: SiteServer) -> None:
    """503 answers are retried until the page comes, within the attempt budget."""
    connector = HttpConnector(timeout=5, attempts=3)

    page = connector.get(f"{site.url}/flaky")

    assert page.status == 200
    assert [path for path, _ in site.requests] == ["/flaky"] * 3
    assert connector.headers["user-agent"] == USER_AGENT


class RecordingBackend:
    """Stands in for the ECS agent's protection endpoint, recording each call."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def set(self, enabled: bool, minutes: int) -> ProtectionState:
        self.calls.append(enabled)
        return ProtectionState(enabled=enabled)

    def get(self) -> ProtectionState:
        return ProtectionState(enabled=bool(self.calls and self.calls[-1]))


def test_each_task_runs_under_protection(
    settings: Settings, start_agent: AgentStarter
) -> None:
    """Protection is enabled while a task runs and released once it is done."""
    backend = RecordingBackend()
    seen: list[bool] = []

    def runner(context: TaskContext) -> str:
        seen.append(backend.get().enabled)
        return "ok"

    start_agent(protection=TaskProtection([backend]), runners={"synthetic": runner})
    task_id = submit(settings)
    wait_for(settings, task_id)

    assert seen == [True]
    assert backend.calls == [True, False]


def test_task_outlasting_the_shutdown_grace_is_requeued_unprotected(
    settings: Settings, clean_rabbitmq: RabbitNode
) -> None:
    """A stop during a task longer than the grace requeues it and drops protection."""
    backend = RecordingBackend()
    started, release = threading.Event(), threading.Event()

    def runner(context: TaskContext) -> str:
        started.set()
        release.wait(60)
        raise RuntimeError("the test let the abandoned run end")

    agents = AgentThreads(replace(settings, shutdown_grace_seconds=0.5))
    agent = agents.start(
        protection=TaskProtection([backend]), runners={"synthetic": runner}
    )
    task_id = submit(settings)
    assert started.wait(30), "the task never started"
    try:
        agent.stop()
        agents.stop_all()
        wait_for_totals(clean_rabbitmq, (1, 0))
        requeued = wait_for(settings, task_id, "queued", deadline=5)
        calls_at_exit = list(backend.calls)
    finally:
        release.set()
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1)):
        with attempt:
            alive = [t.name for t in threading.enumerate() if task_id in t.name]
            assert not alive, f"abandoned run still going: {alive}"

    assert calls_at_exit == [True, False]
    assert backend.calls == [True, False]
    assert requeued.attempts == 1


def test_agent_runner_is_loaded_by_name() -> None:
    """AGENT_RUNNER=module:callable replaces the built-in runner of agent tasks."""
    runners = runners_for("services.agent.runners:run_synthetic")

    assert runners["agent"] is run_synthetic
    assert load_runner("json:dumps") is json.dumps


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("json", "must look like"),
        ("no_such_module:x", "cannot be loaded"),
        ("json:__name__", "is not callable"),
    ],
)
def test_bad_agent_runner_is_refused(spec: str, says: str) -> None:
    """A wrong AGENT_RUNNER is refused with what is wrong with it."""
    with pytest.raises(RunnerConfigError, match=says):
        load_runner(spec)


def test_health_server_reports_dependencies(settings: Settings) -> None:
    """/health answers 200 with RabbitMQ, Redis and Chroma; other paths are 404."""
    server = start_health_server(settings, host="127.0.0.1")
    try:
        health = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10)
        other = httpx.get(f"http://127.0.0.1:{server.port}/", timeout=10)
    finally:
        server.shutdown()
        server.server_close()

    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert set(health.json()["dependencies"]) == {"rabbitmq", "redis", "chroma"}
    assert other.status_code == 404


def test_sigterm_finishes_the_current_task_and_exits_zero(settings: Settings) -> None:
    """``python -m services.agent`` serves health; SIGTERM finishes, then exits 0."""
    port = free_port()
    env = {
        **os.environ,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "REDIS_URL": settings.redis_url,
        "CHROMA_URL": settings.chroma_url,
        "PORT": str(port),
    }
    env.pop("EMBEDDING_MODEL_DIR", None)
    agent = subprocess.Popen([sys.executable, "-m", "services.agent"], env=env)
    try:
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2)):
            with attempt:
                assert agent.poll() is None, "the agent exited"
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        task_id = submit(settings, params={"seconds": 2})
        wait_for(settings, task_id, "running")

        agent.send_signal(signal.SIGTERM)

        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert health.json()["status"] == "ok"
    assert wait_for(settings, task_id, deadline=1).status == "completed"
