"""Task scale-in protection from inside a task: enabled around work, renewed at
half-life, released at the end, with the ECS API as fallback, against a small
HTTP server that speaks the ECS agent's and the task metadata's endpoints."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from tenacity import Retrying, stop_after_delay, wait_fixed

from services.shared.ecs_manager import (
    AgentEndpoint,
    EcsApi,
    ProtectionError,
    TaskProtection,
)

TASK_ARN = "arn:aws:ecs:eu-west-1:123456789012:task/euglena/0123456789abcdef"
CLUSTER = "arn:aws:ecs:eu-west-1:123456789012:cluster/euglena"


class EcsAgentServer(ThreadingHTTPServer):
    """Speaks ``task-protection/v1/state`` and ``/task`` as Fargate does."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EcsAgentHandler)
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.enabled = False
        self.answer_with: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def puts(self) -> list[dict[str, Any] | None]:
        return [body for method, body in self.calls if method == "PUT"]


class EcsAgentHandler(BaseHTTPRequestHandler):
    server: EcsAgentServer

    def do_GET(self) -> None:
        if self.path == "/task":
            self._send({"Cluster": CLUSTER, "TaskARN": TASK_ARN})
            return
        if self.path != "/task-protection/v1/state":
            self._send({"error": {"Code": "NotFound", "Message": self.path}}, 404)
            return
        self.server.calls.append(("GET", None))
        self._send(self._state())

    def do_PUT(self) -> None:
        if self.path != "/task-protection/v1/state":
            self._send({"error": {"Code": "NotFound", "Message": self.path}}, 404)
            return
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.server.calls.append(("PUT", body))
        if self.server.answer_with:
            failure = {"Arn": TASK_ARN, "Reason": "TASK_NOT_VALID", "Detail": None}
            self._send({self.server.answer_with: failure}, 400)
            return
        self.server.enabled = body["ProtectionEnabled"]
        self._send(self._state())

    def _state(self) -> dict[str, Any]:
        expiry = "2030-01-01T01:00:00Z" if self.server.enabled else None
        return {
            "protection": {
                "ExpirationDate": expiry,
                "ProtectionEnabled": self.server.enabled,
                "TaskArn": TASK_ARN,
            }
        }

    def _send(self, body: dict[str, Any], status: int = 200) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def ecs_agent() -> Iterator[EcsAgentServer]:
    """A running stand-in for the ECS agent and the task metadata endpoint."""
    server = EcsAgentServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_protection_is_held_around_work(ecs_agent: EcsAgentServer) -> None:
    """Protection is enabled for N minutes when work starts and released after."""
    protection = TaskProtection.for_task(ecs_agent.url, None, minutes=45)

    with protection.held():
        during = protection.state()

    assert during is not None
    assert during.enabled
    assert during.task_arn == TASK_ARN
    assert ecs_agent.puts == [
        {"ProtectionEnabled": True, "ExpiresInMinutes": 45},
        {"ProtectionEnabled": False},
    ]
    assert ecs_agent.enabled is False


def test_protection_is_renewed_while_work_goes_on(ecs_agent: EcsAgentServer) -> None:
    """Long work renews protection every ``renew_every`` seconds until it ends."""
    protection = TaskProtection([AgentEndpoint(ecs_agent.url)], renew_every=0.1)

    with protection.held():
        for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05)):
            with attempt:
                assert len(ecs_agent.puts) >= 3, f"calls so far: {ecs_agent.calls}"

    enables = [body for body in ecs_agent.puts if body and body["ProtectionEnabled"]]
    assert len(enables) >= 3
    assert ecs_agent.puts[-1] == {"ProtectionEnabled": False}


def test_renewal_defaults_to_half_the_lifetime() -> None:
    """Without an explicit period, protection is renewed at its half-life."""
    protection = TaskProtection([], minutes=60)

    assert protection.renew_every == 1800


def test_protection_is_released_when_work_fails(ecs_agent: EcsAgentServer) -> None:
    """An exception in the work still releases protection, and propagates."""
    protection = TaskProtection.for_task(ecs_agent.url, None)

    with pytest.raises(RuntimeError, match="boom"), protection.held():
        raise RuntimeError("boom")

    assert ecs_agent.puts[-1] == {"ProtectionEnabled": False}
    assert ecs_agent.enabled is False


def test_dropped_hold_is_released_at_once_and_not_renewed(
    ecs_agent: EcsAgentServer,
) -> None:
    """Dropping a hold releases it while the work goes on, and nothing renews it."""
    protection = TaskProtection([AgentEndpoint(ecs_agent.url)], renew_every=0.05)

    with protection.held():
        dropped = protection.drop()
        for attempt in Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.05)):
            with attempt:
                renewers = [
                    t for t in threading.enumerate() if t.name == "protection-renewal"
                ]
                assert not renewers, f"renewal still running: {renewers}"
        puts_after_drop = len(ecs_agent.puts)

    assert dropped is not None
    assert dropped.enabled is False
    assert ecs_agent.puts[-1] == {"ProtectionEnabled": False}
    assert len(ecs_agent.puts) == puts_after_drop
    assert ecs_agent.enabled is False
    assert protection.drop() is None


@pytest.mark.parametrize("key", ["failure", "error"])
def test_agent_refusal_is_an_error(ecs_agent: EcsAgentServer, key: str) -> None:
    """A ``failure`` or ``error`` answer of the ECS agent raises with its reason."""
    ecs_agent.answer_with = key

    with pytest.raises(ProtectionError, match=f"answered {key}.*TASK_NOT_VALID"):
        AgentEndpoint(ecs_agent.url).set(True, 10)


def test_ecs_api_is_the_fallback(ecs_agent: EcsAgentServer) -> None:
    """When the agent endpoint fails, UpdateTaskProtection is called for this task."""
    ecs_agent.answer_with = "failure"
    client = boto3.client(
        "ecs",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    expected = {"cluster": CLUSTER, "tasks": [TASK_ARN], "protectionEnabled": True}
    answer = {"protectedTasks": [{"taskArn": TASK_ARN, "protectionEnabled": True}]}
    protection = TaskProtection(
        [AgentEndpoint(ecs_agent.url), EcsApi(ecs_agent.url, client=client)],
        minutes=30,
    )

    with Stubber(client) as stub:
        stub.add_response(
            "update_task_protection",
            answer,
            {**expected, "expiresInMinutes": 30},
        )
        state = protection.enable()
        stub.assert_no_pending_responses()

    assert state is not None
    assert state.enabled
    assert state.task_arn == TASK_ARN


def test_everything_failing_does_not_stop_the_work(ecs_agent: EcsAgentServer) -> None:
    """If no backend can protect the task, the work runs anyway, unprotected."""
    ecs_agent.answer_with = "error"
    protection = TaskProtection.for_task(ecs_agent.url, None)
    ran = []

    with protection.held():
        ran.append(True)

    assert ran == [True]
    assert protection.enable() is None


def test_without_ecs_protection_is_a_logged_no_op(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside ECS nothing is called and one log line says protection is off."""
    with caplog.at_level(logging.INFO, logger="services.shared.ecs_manager"):
        protection = TaskProtection.from_env({})
        with protection.held():
            pass

    assert not protection.is_active
    assert protection.state() is None
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["no ECS agent in this environment: task protection is off"]


def test_minutes_outside_ecs_bounds_are_refused() -> None:
    """ECS accepts 1 to 2880 minutes; anything else is refused up front."""
    with pytest.raises(ValueError, match="outside ECS's 1 to 2880"):
        TaskProtection([], minutes=2881)
