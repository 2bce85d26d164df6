"""Schemathesis fuzzes the gateway's OpenAPI document against the live service.

The gateway runs under a real uvicorn server on 127.0.0.1 (its lifespan, body
limit middleware and HTTP parsing included) with real Redis and RabbitMQ behind
it, and schemathesis generates requests, valid and invalid, for every operation.

Schemathesis 4.32.5's pytest plugin does not fit pytest 9.2: its lazy schemas
(``schemathesis.pytest.from_fixture``) rename the test node through
``Function._nodeid``, which pytest 9.2 no longer has (AttributeError), and the
items of an eager ``schema.parametrize()`` all get the same node id, since
pytest 9.2 builds it from the test's original name, so under xdist (``make
test`` runs ``-n``) only one operation of the schema ran. So the tests here are
plain pytest tests parametrized by operation (unique ids), each running a
Hypothesis test over the operation's ``as_strategy()``, the documented way to
use schemathesis in non-schemathesis tests. The schema is ``from_dict`` of
``app.openapi()``, of an app whose dependencies are never contacted; one test
proves the served ``/openapi.json`` is that same document.

Hypothesis's example database is off (``database=None``) and its home (where it
also caches constants found in local modules) is the test's ``tmp_path``, so no
``.hypothesis`` folder is written into the repository.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tenacity import Retrying, stop_after_delay, wait_fixed

from harness.local.servers import RabbitNode, RedisServer, free_port
from services.gateway.app import create_app
from services.gateway.auth import UNAUTHORIZED_DETAIL
from tests.services.test_gateway import ALICE, BAD_TOKENS, settings_for, token

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
REFUSED_HEADERS = {
    "no header": None,
    "empty bearer": "Bearer ",
    "basic scheme": "Basic dXNlcjpwYXNz",
    **{reason: f"Bearer {bad}" for reason, bad in BAD_TOKENS.items()},
}
# Port 9 (discard) on loopback: building the app only reads these, never dials them.
UNUSED = settings_for("redis://127.0.0.1:9/0", "amqp://guest:guest@127.0.0.1:9/%2F")
DOCUMENT = create_app(UNUSED).openapi()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
PROTECTED = sorted(
    label for label, op in OPERATIONS.items() if op.definition.raw.get("security")
)


def generated_cases(operation: APIOperation) -> st.SearchStrategy[Case]:
    """Return cases for ``operation``: valid ones and, where it has inputs, invalid."""
    valid = operation.as_strategy(GenerationMode.POSITIVE)
    has_inputs = bool(operation.definition.raw.get("parameters")) or bool(
        operation.definition.raw.get("requestBody")
    )
    if not has_inputs:
        return valid
    return st.one_of(valid, operation.as_strategy(GenerationMode.NEGATIVE))


def fuzz(operation: APIOperation, check: Callable[[Case], None], examples: int) -> None:
    """Run ``check`` on up to ``examples`` generated cases of ``operation``."""

    @hypothesis.settings(FUZZ_SETTINGS, max_examples=examples)
    @hypothesis.given(case=generated_cases(operation))
    def run(case: Case) -> None:
        check(case)

    run()


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"gateway-fuzz-{port}")
    thread.start()
    try:
        for attempt in Retrying(
            stop=stop_after_delay(20), wait=wait_fixed(0.05), reraise=True
        ):
            with attempt:
                assert thread.is_alive(), f"uvicorn exited before serving on {port}"
                assert server.started, f"uvicorn is not serving on {port} yet"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive(), f"uvicorn on {port} did not stop"


@pytest.fixture(autouse=True)
def hypothesis_home(tmp_path: Path) -> Iterator[Path]:
    """Keep Hypothesis's files (its constants cache) out of the repository."""
    home = tmp_path / "hypothesis"
    set_hypothesis_home_dir(home)
    yield home
    set_hypothesis_home_dir(None)


@pytest.fixture
def gateway_url(clean_redis: RedisServer, clean_rabbitmq: RabbitNode) -> Iterator[str]:
    """The gateway on real Redis and RabbitMQ, served over HTTP on loopback."""
    settings = settings_for(clean_redis.url, clean_rabbitmq.amqp_url)
    with serving(create_app(settings)) as url:
        yield url


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_honours_its_schema(label: str, gateway_url: str) -> None:
    """A signed-in user's generated requests get only documented, valid answers."""
    headers = {"Authorization": f"Bearer {token(ALICE)}"}

    def call(case: Case) -> None:
        case.call_and_validate(base_url=gateway_url, headers=headers, checks=CHECKS)

    fuzz(OPERATIONS[label], call, examples=40)


@pytest.mark.parametrize("label", PROTECTED)
def test_protected_operations_refuse_bad_credentials(
    label: str, gateway_url: str
) -> None:
    """Without a valid token a protected operation answers the documented 401."""

    def call(case: Case) -> None:
        kept = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        for header in REFUSED_HEADERS.values():
            case.headers = kept if header is None else {**kept, "Authorization": header}
            response = case.call(base_url=gateway_url)
            case.validate_response(response, checks=CHECKS)
            assert response.status_code == 401, f"with {header!r}"
            assert response.json() == {"detail": UNAUTHORIZED_DETAIL}
            assert response.headers["www-authenticate"][0].startswith("Bearer")

    fuzz(OPERATIONS[label], call, examples=15)


def test_own_tasks_are_read_as_documented(gateway_url: str) -> None:
    """A submitted task, read alone and in the list, matches the documented TaskView."""
    headers = {"Authorization": f"Bearer {token(ALICE)}"}
    submit = SCHEMA["/tasks"]["POST"].Case(body={"mandate": "fuzz", "kind": "agent"})
    task_id = submit.call_and_validate(
        base_url=gateway_url, headers=headers, checks=CHECKS
    ).json()["task_id"]

    one = SCHEMA["/tasks/{task_id}"]["GET"].Case(path_parameters={"task_id": task_id})
    listed = SCHEMA["/tasks"]["GET"].Case(query={"limit": 5})
    read = one.call_and_validate(base_url=gateway_url, headers=headers, checks=CHECKS)
    rows = listed.call_and_validate(
        base_url=gateway_url, headers=headers, checks=CHECKS
    )

    assert read.status_code == rows.status_code == 200
    assert read.json()["task_id"] == task_id
    assert [row["task_id"] for row in rows.json()] == [task_id]


@pytest.mark.parametrize("body", [b'{"mandate": "\xff"}', b"(\xff", b"\x00"])
def test_unparsable_body_is_a_documented_422(gateway_url: str, body: bytes) -> None:
    """A task body that is not JSON in UTF-8 gets the documented 422, not a 400."""
    response = httpx.post(
        f"{gateway_url}/tasks",
        content=body,
        headers={
            "Authorization": f"Bearer {token(ALICE)}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )

    submit = SCHEMA["/tasks"]["POST"].Case(body={"mandate": "x"})
    submit.validate_response(response, checks=CHECKS)
    assert response.status_code == 422


def test_unparsable_body_without_token_is_401(gateway_url: str) -> None:
    """A stranger's unparsable body is refused for the token, before it is read."""
    response = httpx.post(
        f"{gateway_url}/tasks",
        content=b"(\xff",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 401
    assert response.json() == {"detail": UNAUTHORIZED_DETAIL}


def test_fuzzed_document_is_the_served_one(gateway_url: str) -> None:
    """The document fuzzed here is exactly what the gateway serves."""
    served = httpx.get(f"{gateway_url}/openapi.json", timeout=10)

    assert served.status_code == 200
    assert served.json() == DOCUMENT


def test_protected_operations_are_the_task_routes() -> None:
    """The document marks exactly the task routes as needing a bearer token."""
    tasks = ["GET /tasks", "GET /tasks/{task_id}", "POST /tasks"]

    assert tasks == PROTECTED
    assert sorted(OPERATIONS) == sorted([*tasks, "GET /health", "GET /ready"])
