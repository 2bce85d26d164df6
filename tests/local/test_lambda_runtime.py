"""The local Lambda runtime: deployed zips really run, on demand and on schedule."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import moto
import pytest
from moto.awslambda.models import LambdaFunction
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.clients import ClientFactory
from harness.local import lambda_runtime
from harness.local.lambda_runtime import LambdaRuntime, rate_seconds
from harness.local.moto_server import MotoServer

REGION = "us-east-1"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"

ECHO = """
import os
import sys

def handler(event, context):
    print("echo handler saw", event)
    return {
        "path": sys.path,
        "harness_environment": "PYTEST_CURRENT_TEST" in os.environ,
        "event": event,
        "greeting": os.environ["GREETING"],
        "region": os.environ["AWS_REGION"],
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "request_id": context.aws_request_id,
        "stream": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
"""
RAISES = """
def handler(event, context):
    raise ValueError("the handler gave up")
"""
SLEEPS = """
import threading

def handler(event, context):
    threading.Event().wait(30)  # outlives the function's timeout
"""
NEEDS_PIKA = """
import pika

def handler(event, context):
    return pika.__version__
"""
PUTS_METRIC = """
import boto3

def handler(event, context):
    boto3.client("cloudwatch").put_metric_data(
        Namespace="Euglena/Test",
        MetricData=[{"MetricName": event["metric"], "Value": event["value"]}],
    )
    return "stored"
"""


@pytest.fixture(scope="module")
def clients() -> Iterator[ClientFactory]:
    """A moto account whose functions run on a runtime with 1 s per minute."""
    lambda_runtime.install()
    with (
        MotoServer() as server,
        LambdaRuntime(server, region=REGION, schedule_scale=1 / 60) as runtime,
    ):
        factory = ClientFactory(REGION, endpoint_url=server.endpoint_url)
        factory.runtime = runtime  # type: ignore[attr-defined]
        yield factory


@pytest.fixture
def runtime(clients: ClientFactory) -> LambdaRuntime:
    """The module's Lambda runtime."""
    found: LambdaRuntime = clients.runtime  # type: ignore[attr-defined]
    return found


@pytest.fixture
def deploy(
    clients: ClientFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., str]:
    """Deploy handler source as a zip function named after the test."""
    role = _role(clients)
    base = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[:40]

    def make(source: str, suffix: str = "", **options: Any) -> str:
        archive = tmp_path / f"{base}{suffix}.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("app.py", textwrap.dedent(source))
        name = f"{base}{suffix}"
        clients.client("lambda").create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": archive.read_bytes()},
            **options,
        )
        return name

    return make


def _role(clients: ClientFactory) -> str:
    iam = clients.client("iam")
    try:
        return str(iam.get_role(RoleName="fn")["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        policy = {"Version": "2012-10-17", "Statement": []}
        role = iam.create_role(
            RoleName="fn", AssumeRolePolicyDocument=json.dumps(policy)
        )
        return str(role["Role"]["Arn"])


def _invoke(clients: ClientFactory, name: str, event: Any) -> tuple[Any, str | None]:
    answer = clients.client("lambda").invoke(
        FunctionName=name, Payload=json.dumps(event).encode()
    )
    return json.loads(answer["Payload"].read()), answer.get("FunctionError")


def _eventually(check: Callable[[], Any], seconds: float = 20) -> Any:
    """Retry ``check`` until it stops raising AssertionError, then return its value."""
    for attempt in Retrying(
        stop=stop_after_delay(seconds),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def _streams(clients: ClientFactory, name: str) -> list[str]:
    logs = clients.client("logs")
    try:
        found = logs.describe_log_streams(logGroupName=f"/aws/lambda/{name}")
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [stream["logStreamName"] for stream in found["logStreams"]]


def test_handler_gets_event_environment_and_context(
    runtime: LambdaRuntime, deploy: Callable[..., str]
) -> None:
    """The handler receives the event, its environment variables and a context."""
    name = deploy(ECHO, Environment={"Variables": {"GREETING": "hello"}}, Timeout=5)

    outcome = runtime.invoke(name, {"mandate": 7})

    result = outcome.result
    assert not outcome.failed, outcome.payload
    assert result["event"] == {"mandate": 7}
    assert result["greeting"] == "hello"
    assert result["region"] == REGION
    assert result["function_name"] == name
    assert result["memory"] == "128"
    assert result["request_id"] == outcome.request_id
    assert result["stream"] == outcome.log_stream
    assert 0 < result["remaining_ms"] <= 5000


def test_handler_sees_only_its_zip_and_the_lambda_runtime(
    runtime: LambdaRuntime, deploy: Callable[..., str]
) -> None:
    """The handler's path holds the zip, the runtime's libraries and the stdlib only."""
    name = deploy(ECHO, Environment={"Variables": {"GREETING": "x"}})

    result = runtime.invoke(name, {}).result

    assert not result["harness_environment"]
    assert not [p for p in result["path"] if "site-packages" in p]
    assert result["path"][1].endswith("/runtime")
    assert Path(result["path"][0]).name == "task"


def test_event_invocation_runs_in_the_background(
    clients: ClientFactory, deploy: Callable[..., str]
) -> None:
    """InvocationType Event answers 202 at once and the handler still runs."""
    name = deploy(ECHO, Environment={"Variables": {"GREETING": "x"}})

    answer = clients.client("lambda").invoke(
        FunctionName=name, InvocationType="Event", Payload=b"{}"
    )

    assert answer["StatusCode"] == 202

    def logged() -> None:
        assert _streams(clients, name), "the Event invocation left no log stream"

    _eventually(logged)


def test_boto3_invoke_runs_the_deployed_handler(
    clients: ClientFactory, deploy: Callable[..., str]
) -> None:
    """lambda.invoke through boto3 returns what the real handler returned."""
    name = deploy(ECHO, Environment={"Variables": {"GREETING": "hi"}})

    payload, error = _invoke(clients, name, {"n": 1})

    assert error is None, payload
    assert payload["event"] == {"n": 1}
    assert payload["greeting"] == "hi"


def test_handler_exception_is_reported_as_lambda_does(
    clients: ClientFactory, deploy: Callable[..., str]
) -> None:
    """A raising handler gives FunctionError Unhandled with type, message and trace."""
    name = deploy(RAISES)

    payload, error = _invoke(clients, name, {})

    assert error == "Unhandled"
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "the handler gave up"
    assert any("app.py" in frame for frame in payload["stackTrace"])


def test_handler_is_killed_after_the_function_timeout(
    runtime: LambdaRuntime, deploy: Callable[..., str]
) -> None:
    """A handler running past its 1 s timeout is stopped and reported timed out."""
    name = deploy(SLEEPS, Timeout=1)

    outcome = runtime.invoke(name, {})

    assert outcome.failed
    assert "Task timed out after 1.00 seconds" in outcome.result["errorMessage"]
    assert outcome.duration_ms < 10_000
    assert any("Task timed out after 1.00 seconds" in x for x in outcome.log_lines)


def test_zip_missing_a_dependency_fails_although_the_venv_has_it(
    runtime: LambdaRuntime, deploy: Callable[..., str]
) -> None:
    """A zip importing pika fails to load, though pika is installed for the harness."""
    name = deploy(NEEDS_PIKA)

    outcome = runtime.invoke(name, {})

    assert importlib.util.find_spec("pika") is not None
    assert outcome.failed
    assert outcome.result["errorType"] == "Runtime.ImportModuleError"
    assert "No module named 'pika'" in outcome.result["errorMessage"]


def test_handler_boto3_reaches_the_emulated_account(
    clients: ClientFactory, deploy: Callable[..., str]
) -> None:
    """boto3 inside the handler writes to the moto account the test reads."""
    name = deploy(PUTS_METRIC, Timeout=30)

    payload, error = _invoke(clients, name, {"metric": name, "value": 42.0})

    assert (payload, error) == ("stored", None)
    cloudwatch = clients.client("cloudwatch")

    def stored() -> list[Any]:
        found = cloudwatch.list_metrics(Namespace="Euglena/Test", MetricName=name)
        assert found["Metrics"], "the handler's metric is not in the account"
        return list(found["Metrics"])

    assert _eventually(stored)[0]["MetricName"] == name


def test_invocation_logs_land_in_the_function_log_group(
    clients: ClientFactory, runtime: LambdaRuntime, deploy: Callable[..., str]
) -> None:
    """START, the handler's output, END and REPORT go to /aws/lambda/<name>."""
    name = deploy(ECHO, Environment={"Variables": {"GREETING": "x"}})

    outcome = runtime.invoke(name, {"k": "v"})

    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", outcome.log_stream)
    events = clients.client("logs").get_log_events(
        logGroupName=f"/aws/lambda/{name}", logStreamName=outcome.log_stream
    )["events"]
    messages = [event["message"] for event in events]
    assert messages[0].startswith(f"START RequestId: {outcome.request_id}")
    assert any("echo handler saw {'k': 'v'}" in m for m in messages)
    assert messages[-2] == f"END RequestId: {outcome.request_id}"
    assert messages[-1].startswith(f"REPORT RequestId: {outcome.request_id}\t")


def test_enabled_schedule_fires_and_disabled_one_does_not(
    clients: ClientFactory, deploy: Callable[..., str]
) -> None:
    """rate(1 minute) at 1 s a minute sends two Scheduled Events; DISABLED, none."""
    events = clients.client("events")
    fired = deploy(ECHO, "on", Environment={"Variables": {"GREETING": "tick"}})
    idle = deploy(ECHO, "off", Environment={"Variables": {"GREETING": "tick"}})
    lambdas = clients.client("lambda")
    rules = {f"{fired}-rule": ("ENABLED", fired), f"{idle}-rule": ("DISABLED", idle)}
    for rule, (state, function) in rules.items():
        events.put_rule(Name=rule, ScheduleExpression="rate(1 minute)", State=state)
        arn = lambdas.get_function(FunctionName=function)["Configuration"]
        events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": arn["FunctionArn"]}])

    try:

        def fired_twice() -> None:
            assert len(_streams(clients, fired)) >= 2, _streams(clients, fired)

        _eventually(fired_twice)
    finally:
        for rule in rules:
            events.remove_targets(Rule=rule, Ids=["fn"])
            events.delete_rule(Name=rule)

    first = clients.client("logs").get_log_events(
        logGroupName=f"/aws/lambda/{fired}",
        logStreamName=_streams(clients, fired)[0],
    )["events"]
    assert _streams(clients, idle) == []
    assert any("'detail-type': 'Scheduled Event'" in e["message"] for e in first)


def test_rate_expressions_convert_to_seconds() -> None:
    """rate() in minutes, hours and days becomes seconds; cron is not a rate."""
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("rate(1 day)") == 86400
    assert rate_seconds("cron(0 12 * * ? *)") is None


def test_invoke_completion_is_pinned_to_moto() -> None:
    """moto is the pinned version and its invoke is the one the runtime completes."""
    pin = re.search(r"^moto(\[\w+\])?==(\S+)$", REQUIREMENTS.read_text(), re.M)

    lambda_runtime.install()

    assert pin is not None
    assert moto.__version__ == pin.group(2)
    assert lambda_runtime.is_installed()
    original = lambda_runtime._original_invoke
    assert original is not None
    assert list(inspect.signature(original).parameters) == [
        "self",
        "body",
        "request_headers",
        "response_headers",
    ]
    assert LambdaFunction.invoke is not original


def test_runtime_rejects_a_schedule_scale_that_is_not_positive() -> None:
    """A zero or negative schedule scale is refused with the fix in the message."""
    server = MotoServer()

    with pytest.raises(ValueError, match="1/60"):
        LambdaRuntime(server, schedule_scale=0)
