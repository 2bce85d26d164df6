"""What the agent's tests share: an external site, agents in threads, task
submission and the polls that wait for a task or a queue to settle."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from harness.local.servers import ChromaServer, RabbitNode, RedisServer
from services.agent.connectivity import REPORT_EVENT
from services.agent.http_connector import HttpConnector
from services.agent.runners import TaskContext, run_synthetic, runners_for
from services.agent.settings import Settings
from services.agent.state import TaskLedger
from services.agent.worker import InterfaceAgent
from services.gateway.app import enqueue
from services.gateway.store import TaskStore
from services.shared import embedding_model, rabbitmq
from services.shared.ecs_manager import TaskProtection
from services.shared.queue_metrics import QUEUE_NAME
from services.shared.tasks import TaskMessage, TaskRecord, utc_now

USER = "user-agent-tests"
PAGE_TEXT = "Euglena gracilis is a freshwater single-celled alga."


class SiteServer(ThreadingHTTPServer):
    """A site that refuses bare clients and has a page that fails twice."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SiteHandler)
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class SiteHandler(BaseHTTPRequestHandler):
    server: SiteServer

    def do_GET(self) -> None:
        agent = self.headers.get("User-Agent", "")
        self.server.requests.append((self.path, agent))
        flaky_calls = sum(1 for path, _ in self.server.requests if path == "/flaky")
        if "EuglenaAgent" not in agent:
            self._send(403, "bots must say who they are")
        elif self.path == "/flaky" and flaky_calls <= 2:
            self._send(503, "busy")
        else:
            self._send(200, f"<html><body><p>{PAGE_TEXT}</p></body></html>")

    def _send(self, status: int, text: str) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@contextmanager
def serve_site() -> Iterator[SiteServer]:
    """Serve the external site from a thread for the duration of the block."""
    server = SiteServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def agent_settings(
    redis_server: RedisServer,
    rabbitmq_node: RabbitNode,
    chroma_server: ChromaServer,
    site: SiteServer,
) -> Settings:
    """Agent settings on the test's own servers, with a short shutdown grace."""
    chroma_server.start()
    return Settings(
        rabbitmq_url=rabbitmq_node.amqp_url,
        redis_url=redis_server.url,
        chroma_url=chroma_server.url,
        external_check_url=f"{site.url}/",
        port=0,
        shutdown_grace_seconds=10,
        store_retry_seconds=60,
    )


def baked_model(root: Path) -> Path:
    """Bake the embedding model once per machine, as the set-up step does."""
    configured = os.environ.get("EMBEDDING_MODEL_DIR")
    target = Path(configured) if configured else root / ".euglena" / "embedding-model"
    try:
        return embedding_model.ensure_baked(target)
    except embedding_model.ModelError as error:
        pytest.fail(f"cannot bake the embedding model into {target}: {error}")


class Counting:
    """A runner that counts its calls and otherwise runs the synthetic workload."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, context: TaskContext) -> Any:
        self.calls.append(context.message.task_id)
        return run_synthetic(context)


AgentStarter = Callable[..., InterfaceAgent]


class AgentThreads:
    """Starts agents in threads; :meth:`stop_all` stops them and checks they end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started: list[tuple[InterfaceAgent, threading.Thread]] = []

    def start(self, **overrides: Any) -> InterfaceAgent:
        """Start an agent, built with ``overrides``, and wait until it consumes."""
        chosen = overrides.pop("settings", self.settings)
        parts: dict[str, Any] = {
            "ledger": TaskLedger.from_url(chosen.redis_url, timeout=1),
            "runners": runners_for(""),
            "protection": TaskProtection([]),
            "http": HttpConnector(timeout=5),
            "name": f"agent-{uuid.uuid4().hex[:8]}",
            **overrides,
        }
        agent = InterfaceAgent(chosen, **parts)
        thread = threading.Thread(target=agent.run_forever, daemon=True)
        thread.start()
        assert agent.consuming.wait(30), "the agent never started consuming"
        self.started.append((agent, thread))
        return agent

    def stop_all(self) -> None:
        for agent, thread in self.started:
            agent.stop()
            thread.join(30)
            assert not thread.is_alive(), f"{agent.name} did not stop"


def submit(settings: Settings, mandate: str = "work", **fields: Any) -> str:
    """Store and queue a task the way the gateway does; return its id."""
    record = TaskRecord(
        task_id=str(uuid.uuid4()),
        user_id=USER,
        kind=fields.pop("kind", "synthetic"),
        mandate=mandate,
        params=fields.pop("params", {}),
    )
    publisher = rabbitmq.Publisher(settings.rabbitmq_url)
    enqueue(record, TaskStore.from_url(settings.redis_url), publisher)
    publisher.close()
    return record.task_id


def publish_raw(settings: Settings, body: bytes) -> None:
    """Publish ``body`` to the work queue as is, with no record in Redis."""
    publisher = rabbitmq.Publisher(settings.rabbitmq_url)
    publisher.publish(body)
    publisher.close()


def message_for(mandate: str, kind: str = "synthetic") -> TaskMessage:
    return TaskMessage(str(uuid.uuid4()), USER, kind, mandate, {}, utc_now())  # type: ignore[arg-type]


def wait_for(
    settings: Settings, task_id: str, *statuses: str, deadline: float = 60
) -> TaskRecord:
    """Poll Redis until the task has one of ``statuses``; fail with the last seen."""
    wanted = statuses or ("completed", "failed")
    store = TaskStore.from_url(settings.redis_url, timeout=1)
    seen: TaskRecord | None = None
    for attempt in Retrying(stop=stop_after_delay(deadline), wait=wait_fixed(0.1)):
        with attempt:
            seen = store.get(task_id)
            status = seen.status if seen is not None else None
            assert status in wanted, f"task {task_id} wanted {wanted}, last seen {seen}"
    assert seen is not None
    return seen


def queue_totals(node: RabbitNode, queue: str = QUEUE_NAME) -> tuple[int, int]:
    """Return (ready, unacknowledged) of ``queue``, without the stats lag."""
    response = httpx.get(
        f"{node.management_url}/api/queues/%2F",
        params={"disable_stats": "true", "enable_queue_totals": "true"},
        auth=(node.user, node.password),
        timeout=10,
    )
    for entry in response.json():
        if entry["name"] == queue:
            return entry["messages_ready"], entry["messages_unacknowledged"]
    return 0, 0


def wait_for_totals(
    node: RabbitNode, expected: tuple[int, int], queue: str = QUEUE_NAME
) -> None:
    seen: tuple[int, int] | None = None
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2)):
        with attempt:
            seen = queue_totals(node, queue)
            assert seen == expected, f"{queue}: wanted {expected}, last seen {seen}"


def close_connection(node: RabbitNode, client_name: str) -> None:
    """Have the broker close the connection that ``client_name`` opened."""
    auth = (node.user, node.password)
    with httpx.Client(base_url=node.management_url, auth=auth, timeout=10) as api:
        for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2)):
            with attempt:
                names = [
                    c["name"]
                    for c in api.get("/api/connections").json()
                    if c["client_properties"].get("connection_name") == client_name
                ]
                assert names, f"no connection of {client_name} listed yet"
        for name in names:
            api.delete(f"/api/connections/{quote(name, safe='')}")


def report_lines(
    caplog: pytest.LogCaptureFixture, task_id: str
) -> list[dict[str, Any]]:
    lines = [
        json.loads(record.getMessage())
        for record in caplog.records
        if REPORT_EVENT in record.getMessage()
    ]
    return [line for line in lines if line["task_id"] == task_id]
