"""Skip mode: a mandate with the skip phrase is not run; its result is a
connectivity report, and each dependency taken away in turn shows as failed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from harness.local.servers import ChromaServer, RabbitNode, RedisServer, free_port
from services.agent.connectivity import skip_report
from services.agent.settings import Settings
from tests.services.agent_support import (
    AgentStarter,
    AgentThreads,
    Counting,
    SiteServer,
    agent_settings,
    message_for,
    publish_raw,
    report_lines,
    serve_site,
    submit,
    wait_for,
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


def test_skip_mode_reports_connectivity_without_running(
    settings: Settings, start_agent: AgentStarter, caplog: pytest.LogCaptureFixture
) -> None:
    """The skip phrase returns a report of every dependency and logs it as JSON."""
    runner = Counting()
    start_agent(runners={"agent": runner, "synthetic": runner})

    with caplog.at_level(logging.INFO, logger="services.agent.connectivity"):
        task_id = submit(settings, "check skipskipskip please", kind="agent")
        done = wait_for(settings, task_id)

    assert runner.calls == []
    assert done.status == "completed"
    report = done.result
    assert report["mode"] == "skip"
    assert report["all_ok"] is True
    assert set(report["connectivity"]) == {"rabbitmq", "redis", "chroma", "external"}
    for check in report["connectivity"].values():
        assert check["ok"] is True
        assert check["error"] is None
        assert check["latency_ms"] >= 0
    (logged,) = report_lines(caplog, task_id)
    assert logged["connectivity"].keys() == report["connectivity"].keys()


def test_skip_mode_reports_redis_taken_away(
    settings: Settings,
    start_agent: AgentStarter,
    clean_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis stopped the report says Redis failed; the result lands after."""
    start_agent()
    message = message_for("skipskipskip", kind="agent")

    clean_redis.stop()
    try:
        with caplog.at_level(logging.INFO, logger="services.agent.connectivity"):
            publish_raw(settings, message.to_json())
            for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1)):
                with attempt:
                    assert report_lines(caplog, message.task_id), "no report yet"
    finally:
        clean_redis.start()

    logged = report_lines(caplog, message.task_id)[0]["connectivity"]
    stored = wait_for(settings, message.task_id).result["connectivity"]
    assert logged == stored
    assert stored["redis"]["ok"] is False
    assert "Connection" in stored["redis"]["error"]
    assert all(stored[name]["ok"] for name in ("rabbitmq", "chroma", "external"))


def test_skip_mode_reports_chroma_taken_away(
    settings: Settings, start_agent: AgentStarter, chroma_server: ChromaServer
) -> None:
    """With Chroma stopped the report says Chroma failed and the rest are fine."""
    start_agent()

    chroma_server.stop()
    try:
        task_id = submit(settings, "skipskipskip", kind="agent")
        report = wait_for(settings, task_id).result
    finally:
        chroma_server.start()

    assert report["all_ok"] is False
    assert report["connectivity"]["chroma"]["ok"] is False
    assert report["connectivity"]["redis"]["ok"] is True


def test_skip_mode_reports_external_site_taken_away(
    settings: Settings, start_agent: AgentStarter
) -> None:
    """An unreachable EXTERNAL_CHECK_URL shows up as a failed external check."""
    unreachable = f"http://127.0.0.1:{free_port()}/"
    changed = dataclasses.replace(settings, external_check_url=unreachable)
    start_agent(settings=changed)

    task_id = submit(changed, "skipskipskip", kind="agent")
    report = wait_for(changed, task_id).result

    assert report["external_url"] == unreachable
    assert report["connectivity"]["external"]["ok"] is False
    assert report["connectivity"]["rabbitmq"]["ok"] is True


def test_skip_report_says_rabbitmq_taken_away(
    settings: Settings, clean_rabbitmq: RabbitNode
) -> None:
    """With the RabbitMQ node stopped the report says RabbitMQ failed."""
    clean_rabbitmq.stop()
    try:
        report = skip_report("offline-check", settings)
    finally:
        clean_rabbitmq.start()

    rabbit = report["connectivity"]["rabbitmq"]
    assert rabbit["ok"] is False
    assert rabbit["error"]
    assert report["connectivity"]["redis"]["ok"] is True
