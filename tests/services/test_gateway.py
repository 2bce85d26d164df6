"""The gateway's HTTP API against real Redis and RabbitMQ: submitting, reading,
listing, authentication, input limits, failure paths and health."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import redis
from fastapi.testclient import TestClient
from tenacity import Retrying, stop_after_delay, wait_fixed

from harness.local.servers import RabbitNode, RedisServer, free_port
from services.gateway.app import create_app
from services.gateway.auth import UNAUTHORIZED_DETAIL
from services.gateway.settings import Settings
from services.gateway.store import TaskStore
from services.shared import rabbitmq
from services.shared.queue_metrics import QUEUE_NAME

SECRET = "test-secret-with-enough-bytes-for-hs256"
ALICE = "0b7c5c1e-0000-4000-8000-00000000a11c"
BOB = "0b7c5c1e-0000-4000-8000-000000000b0b"


def token(sub: str | None = ALICE, *, secret: str = SECRET, **claims: Any) -> str:
    """Return a Supabase-style user token; ``claims`` override the defaults."""
    body: dict[str, Any] = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "exp": int(time.time()) + 3600,
        **claims,
    }
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret)


def auth(sub: str = ALICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


def settings_for(redis_url: str, rabbitmq_url: str, **changes: Any) -> Settings:
    return Settings(
        redis_url=redis_url, rabbitmq_url=rabbitmq_url, jwt_secret=SECRET, **changes
    )


def dead_url(scheme: str) -> str:
    credentials = "guest:guest@" if scheme == "amqp" else ""
    return f"{scheme}://{credentials}127.0.0.1:{free_port()}/"


@pytest.fixture
def settings(clean_redis: RedisServer, clean_rabbitmq: RabbitNode) -> Settings:
    """Gateway settings pointing at the clean Redis and RabbitMQ."""
    return settings_for(clean_redis.url, clean_rabbitmq.amqp_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The gateway application, served in process."""
    with TestClient(create_app(settings)) as served:
        yield served


@pytest.fixture
def store(settings: Settings) -> Iterator[redis.Redis]:
    """A direct Redis client, to see what the gateway stored."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def queue(settings: Settings) -> Iterator[Any]:
    """A channel on the work queue, to see what the gateway published."""
    connection = rabbitmq.connect(settings.rabbitmq_url)
    channel = connection.channel()
    rabbitmq.declare_work_queue(channel)
    yield channel
    connection.close()


def submit(client: TestClient, sub: str = ALICE, **body: Any) -> Any:
    return client.post("/tasks", json={"mandate": "do it", **body}, headers=auth(sub))


def test_submitted_task_is_stored_then_queued(
    client: TestClient, store: redis.Redis, queue: Any
) -> None:
    """POST /tasks answers 202 queued, writes the record and publishes the message."""
    response = submit(client, kind="synthetic", params={"seconds": 1})

    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert response.json() == {"task_id": task_id, "status": "queued"}
    record = store.hgetall(f"task:{task_id}")
    assert record["status"] == "queued"
    assert record["user_id"] == ALICE
    assert json.loads(record["params"]) == {"seconds": 1}
    assert record["attempts"] == "0"
    assert store.zrange(f"user:{ALICE}:tasks", 0, -1) == [task_id]
    _, properties, body = queue.basic_get(QUEUE_NAME, auto_ack=True)
    message = json.loads(body)
    assert message["task_id"] == task_id
    assert message["kind"] == "synthetic"
    assert message["submitted_at"] == record["created_at"]
    assert properties.delivery_mode == 2


def test_kind_defaults_to_agent(client: TestClient) -> None:
    """A task without a kind is an agent task."""
    task_id = submit(client).json()["task_id"]

    view = client.get(f"/tasks/{task_id}", headers=auth()).json()

    assert view["kind"] == "agent"
    assert view["status"] == "queued"


def test_owner_reads_the_task(client: TestClient) -> None:
    """GET /tasks/{id} shows the owner status, result, error and timestamps."""
    task_id = submit(client).json()["task_id"]

    response = client.get(f"/tasks/{task_id}", headers=auth())

    assert response.status_code == 200
    view = response.json()
    assert view["task_id"] == task_id
    assert view["result"] is None
    assert view["error"] is None
    assert view["created_at"] == view["updated_at"]
    assert view["created_at"].endswith("+00:00")


def test_another_users_task_is_not_found(client: TestClient) -> None:
    """Bob asking for Alice's task gets the same 404 as for a task that never was."""
    task_id = submit(client, ALICE).json()["task_id"]

    stolen = client.get(f"/tasks/{task_id}", headers=auth(BOB))
    missing = client.get("/tasks/no-such-task", headers=auth(BOB))

    assert stolen.status_code == missing.status_code == 404
    assert "among your tasks" in stolen.json()["detail"]


def test_list_shows_own_tasks_newest_first(client: TestClient) -> None:
    """GET /tasks lists only the caller's tasks, the newest first."""
    mine = [submit(client, mandate=f"task {n}").json()["task_id"] for n in range(3)]
    submit(client, BOB)

    listed = client.get("/tasks", headers=auth()).json()

    assert [task["task_id"] for task in listed] == list(reversed(mine))


def test_list_honours_its_limit(client: TestClient) -> None:
    """``limit`` bounds the list and is itself bounded."""
    for n in range(3):
        submit(client, mandate=f"task {n}")

    assert len(client.get("/tasks?limit=2", headers=auth()).json()) == 2
    assert client.get("/tasks?limit=0", headers=auth()).status_code == 422


BAD_TOKENS = {
    "expired": token(exp=int(time.time()) - 10),
    "bad signature": token(secret="another-secret-of-sufficient-length-xx"),
    "wrong audience": token(aud="anon"),
    "wrong role": token(role="anon"),
    "no subject": token(sub=None),
    "not a jwt": "not.a.jwt",
    "none algorithm": jwt.encode(
        {"sub": ALICE, "aud": "authenticated", "role": "authenticated"},
        key="",
        algorithm="none",
    ),
}


@pytest.mark.parametrize("reason", sorted(BAD_TOKENS))
def test_bad_token_is_refused_without_detail(client: TestClient, reason: str) -> None:
    """Every invalid token gets the same 401 and challenge, whatever was wrong."""
    headers = {"Authorization": f"Bearer {BAD_TOKENS[reason]}"}

    response = client.get("/tasks", headers=headers)

    assert response.status_code == 401
    assert response.json() == {"detail": UNAUTHORIZED_DETAIL}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer "])
def test_missing_or_malformed_header_is_refused(
    client: TestClient, header: str | None
) -> None:
    """No bearer token at all is a 401 with a Bearer challenge, before any work."""
    headers = {} if header is None else {"Authorization": header}

    response = client.post("/tasks", json={"mandate": "x"}, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {"detail": UNAUTHORIZED_DETAIL}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"mandate": "x", "kind": "shell"}, "'agent' or 'synthetic'"),
        ({"mandate": "x", "params": [1, 2]}, "valid dictionary"),
        ({"mandate": ""}, "at least 1 character"),
        ({"kind": "agent"}, "Field required"),
        ({"mandate": "x", "priority": 1}, "Extra inputs are not permitted"),
        ({"mandate": 5}, "valid string"),
    ],
)
def test_invalid_body_is_422_naming_the_field(
    client: TestClient, body: dict[str, Any], says: str
) -> None:
    """A body that is not a task request gets a 422 that says what is wrong."""
    response = client.post("/tasks", json=body, headers=auth())

    assert response.status_code == 422
    assert says in json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"seconds": -1}, "params.seconds"),
        ({"seconds": "ten"}, "params.seconds"),
        ({"seconds": True}, "params.seconds"),
        ({"seconds": 1e9}, "params.seconds"),
        ({"fail": "yes"}, "params.fail"),
    ],
)
def test_invalid_synthetic_params_are_422(
    client: TestClient, store: redis.Redis, params: dict[str, Any], says: str
) -> None:
    """Synthetic work must have bounded seconds and a boolean fail; nothing is kept."""
    response = submit(client, kind="synthetic", params=params)

    assert response.status_code == 422
    assert says in response.json()["detail"]
    assert store.keys("task:*") == []


def test_oversized_mandate_is_413(client: TestClient, settings: Settings) -> None:
    """A mandate over the limit is refused with its size and the limit."""
    mandate = "é" * (settings.max_mandate_bytes // 2 + 1)

    response = submit(client, mandate=mandate)

    assert response.status_code == 413
    assert (
        f"the limit is {settings.max_mandate_bytes} bytes" in response.json()["detail"]
    )


def test_oversized_params_are_413(client: TestClient, settings: Settings) -> None:
    """Params over the limit as JSON are refused with the limit."""
    response = submit(client, params={"blob": "x" * settings.max_params_bytes})

    assert response.status_code == 413
    assert "params is" in response.json()["detail"]


def test_oversized_body_is_413_before_parsing(
    client: TestClient, settings: Settings
) -> None:
    """A body declared larger than the body limit is refused outright."""
    body = b'{"mandate": "' + b"x" * settings.max_body_bytes + b'"}'

    response = client.post(
        "/tasks", content=body, headers={**auth(), "Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert f"limit is {settings.max_body_bytes} bytes" in response.json()["detail"]


def test_failed_publish_is_503_and_leaves_no_record(
    clean_redis: RedisServer, store: redis.Redis
) -> None:
    """When RabbitMQ cannot confirm, the stored record is removed and 503 returned."""
    settings = settings_for(clean_redis.url, dead_url("amqp"))
    publisher = rabbitmq.Publisher(settings.rabbitmq_url, attempts=1)

    with TestClient(create_app(settings, publisher=publisher)) as client:
        response = submit(client)

    assert response.status_code == 503
    assert "task queue is unavailable" in response.json()["detail"]
    assert response.headers["Retry-After"]
    assert store.keys("task:*") == []
    assert store.zcard(f"user:{ALICE}:tasks") == 0


def test_unreachable_store_is_503_and_queues_nothing(
    clean_rabbitmq: RabbitNode, queue: Any
) -> None:
    """When Redis is down nothing is published and the caller is told to retry."""
    settings = settings_for(dead_url("redis"), clean_rabbitmq.amqp_url)
    store = TaskStore.from_url(settings.redis_url, timeout=0.5)

    with TestClient(create_app(settings, store=store)) as client:
        submitted = submit(client)
        read = client.get("/tasks/anything", headers=auth())
        listed = client.get("/tasks", headers=auth())

    assert submitted.status_code == read.status_code == listed.status_code == 503
    assert "task store is unavailable" in submitted.json()["detail"]
    assert queue.queue_declare(QUEUE_NAME, passive=True).method.message_count == 0


def test_health_and_ready_report_each_dependency(client: TestClient) -> None:
    """With Redis and RabbitMQ up, /health and /ready are 200 and say ok."""
    live = client.get("/health")
    ready = client.get("/ready")

    assert live.status_code == ready.status_code == 200
    body = live.json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"redis", "rabbitmq"}
    assert all(dep["ok"] for dep in body["dependencies"].values())


def test_lost_dependency_degrades_health_and_fails_ready(
    clean_rabbitmq: RabbitNode,
) -> None:
    """A lost Redis keeps /health at 200 (degraded) and makes /ready 503."""
    settings = settings_for(dead_url("redis"), clean_rabbitmq.amqp_url)

    with TestClient(create_app(settings)) as client:
        live, ready = client.get("/health"), client.get("/ready")

    assert live.status_code == 200
    assert ready.status_code == 503
    redis_status = live.json()["dependencies"]["redis"]
    assert redis_status["ok"] is False
    assert "Connection" in redis_status["error"]
    assert live.json()["dependencies"]["rabbitmq"]["ok"] is True


def test_openapi_documents_models_and_errors(client: TestClient) -> None:
    """The OpenAPI document names the response models and every error answer."""
    spec = client.get("/openapi.json").json()

    post = spec["paths"]["/tasks"]["post"]["responses"]
    get_one = spec["paths"]["/tasks/{task_id}"]["get"]["responses"]
    assert set(post) == {"202", "401", "413", "422", "503"}
    assert set(get_one) >= {"200", "401", "404", "503"}
    assert {
        "TaskRequest",
        "TaskAccepted",
        "TaskView",
        "ErrorBody",
        "HealthReport",
    } <= set(spec["components"]["schemas"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_settings_name_what_is_missing() -> None:
    """Starting without JWT_SECRET fails with the variable's name and the fix."""
    from services.shared.config import SettingsError

    with pytest.raises(SettingsError, match="JWT_SECRET is not set: set it to"):
        Settings.from_env({"REDIS_URL": "redis://x", "RABBITMQ_URL": "amqp://x"})


def test_module_serves_the_api_on_port(
    clean_redis: RedisServer, clean_rabbitmq: RabbitNode
) -> None:
    """``python -m services.gateway`` serves /health on PORT until terminated."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": clean_redis.url,
        "RABBITMQ_URL": clean_rabbitmq.amqp_url,
        "JWT_SECRET": SECRET,
        "PORT": str(port),
    }
    process = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env)
    try:
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2)):
            with attempt:
                assert process.poll() is None, "the gateway exited"
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert response.json()["status"] == "ok"
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
