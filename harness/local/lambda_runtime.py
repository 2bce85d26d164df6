"""Lambda and EventBridge for the local target: deployed zips really run.

moto stores functions and rules but runs nothing without Docker. A
:class:`LambdaRuntime` bound to a :class:`~harness.local.moto_server.MotoServer`
completes both:

- ``invoke`` runs a function's handler from its deployed zip in a fresh
  ``python -I -S`` process whose path holds only the extracted zip and the
  libraries the Lambda Python runtime provides (boto3 and its dependencies), so
  a zip missing a dependency fails here as on AWS. The process gets the
  function's environment, what Lambda sets (region, name, log group, fake
  credentials) and ``AWS_ENDPOINT_URL`` pointing at the moto server; it is
  killed after the function's timeout. START, output, END and REPORT lines go
  to ``/aws/lambda/<name>``.
- Every ENABLED EventBridge rule with a ``rate(...)`` schedule and a Lambda
  target fires on a local clock: ``schedule_scale`` multiplies every period
  (1.0 is AWS's; 1/60 fires ``rate(1 minute)`` every second). As EventBridge
  invokes Lambda asynchronously, an invocation still running when the next one
  is due does not delay it: both run, each in its own process.
- ``install()`` makes moto's own ``Invoke`` action use the runtime registered
  for the account, so ``lambda.invoke`` through boto3 runs the real handler.

As on Lambda, the timeout counts from the handler's call; importing the
handler's module has a budget of its own (``INIT_SECONDS``).

Note: only rules of the default event bus in the runtime's region fire;
``cron(...)`` rules are skipped with a warning; a target's ``Input`` replaces
the scheduled event, but ``InputPath`` and ``InputTransformer`` are ignored.
Layers and container images are not supported, asynchronous invocations are
not retried, and REPORT lines carry no memory use.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import inspect
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from botocore.exceptions import ClientError, EndpointConnectionError
from moto.awslambda.models import LambdaFunction, lambda_backends

from harness.aws.clients import ClientFactory
from harness.errors import DeployError

logger = logging.getLogger(__name__)

RUNTIME_LIBRARIES = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "urllib3",
    "six",
)
INIT_SECONDS = 10.0  # Lambda's budget for importing the handler module
TICK_SECONDS = 0.1
LOG_TAIL_BYTES = 4096
_INVOKE_PARAMETERS = ["self", "body", "request_headers", "response_headers"]
_MARKER = "__euglena_completion__"
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

# Runs in the function's process, which imports nothing from the harness.
_BOOTSTRAP = r"""
import importlib, json, signal, sys, time, traceback

class Failure(Exception):
    def __init__(self, kind, message, trace=()):
        self.document = {"errorMessage": message, "errorType": kind,
                         "stackTrace": list(trace)}

class Context:
    def __init__(self, fields, timeout):
        self.__dict__.update(fields)
        self.identity = self.client_context = None
        self._deadline = time.monotonic() + timeout
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

def load(handler):
    module_name, _, name = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as exc:
        raise Failure("Runtime.ImportModuleError",
                      f"Unable to import module '{module_name}': {exc}")
    if not callable(getattr(module, name, None)):
        raise Failure("Runtime.HandlerNotFound",
                      f"Handler '{name}' missing on module '{module_name}'")
    return getattr(module, name)

def call(request):
    sys.path[:0] = request["path"]
    handler = load(request["handler"])
    # SIGALRM's default action ends the process even inside C code.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, request["timeout"])
    context = Context(request["context"], request["timeout"])
    try:
        result = handler(request["event"], context)
    except Exception as exc:
        trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
        print(f"[ERROR] {type(exc).__name__}: {exc}\nTraceback (most recent call "
              "last):\n" + "".join(trace).rstrip(), file=sys.stderr, flush=True)
        raise Failure(type(exc).__name__, str(exc), trace)
    try:
        return json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise Failure("Runtime.MarshalError", f"Unable to marshal response: {exc}")

with open(sys.argv[1]) as source:
    request = json.load(source)
try:
    answer = {"ok": True, "payload": call(request)}
except Failure as failure:
    answer = {"ok": False, "payload": json.dumps(failure.document)}
signal.setitimer(signal.ITIMER_REAL, 0)
with open(sys.argv[2], "w") as sink:
    json.dump(answer, sink)
"""


class AccountEndpoint(Protocol):
    """What the runtime needs of a moto server: where it listens, as whom."""

    endpoint_url: str
    account_id: str


@dataclass(frozen=True)
class FunctionSpec:
    """What running one version of a function needs, copied from moto's record."""

    name: str
    arn: str
    version: str
    region: str
    handler: str
    timeout: float
    memory_mb: int
    environment: dict[str, str]
    code: bytes = field(repr=False)

    @classmethod
    def of(cls, function: LambdaFunction) -> FunctionSpec:
        """The spec of a moto ``LambdaFunction``."""
        if function.package_type != "Zip" or not function.handler:
            raise DeployError(
                f"function {function.function_name} is not a zip with a handler; "
                "the local target runs zip functions only: deploy it as a zip",
                resource=function.function_arn,
                region=function.region,
            )
        return cls(
            name=function.function_name,
            arn=function.function_arn,
            version=str(function.version),
            region=function.region,
            handler=function.handler,
            timeout=float(function.timeout),
            memory_mb=int(function.memory_size),
            environment=dict(function.environment_vars or {}),
            code=function.code_bytes,
        )


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation, as Lambda reports it."""

    request_id: str
    payload: str  # JSON text: the handler's result, or Lambda's error document
    failed: bool
    log_stream: str
    log_events: tuple[tuple[int, str], ...]  # (milliseconds since epoch, line)
    duration_ms: float

    @property
    def log_lines(self) -> list[str]:
        """The lines the invocation logged, START to REPORT."""
        return [line for _, line in self.log_events]

    @property
    def result(self) -> Any:
        """The decoded payload."""
        return json.loads(self.payload)


class LambdaRuntime:
    """Runs the functions and the EventBridge schedules of one moto account."""

    def __init__(
        self,
        server: AccountEndpoint,
        *,
        region: str = "us-east-1",
        schedule_scale: float = 1.0,
        run_id: str | None = None,
    ) -> None:
        if not schedule_scale > 0:
            raise ValueError(
                f"schedule_scale must be a positive number, got {schedule_scale!r}: "
                "use 1.0 for AWS's rates, or e.g. 1/60 for a second per minute"
            )
        self.server = server
        self.region = region
        self.schedule_scale = schedule_scale
        self.run_id = run_id or secrets.token_hex(4)
        self._factory: ClientFactory | None = None
        self._root: Path | None = None
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._scheduler: threading.Thread | None = None

    def start(self) -> Self:
        """Prepare the runtime's files, answer moto's Invoke, fire schedules."""
        self._root = Path(tempfile.mkdtemp(prefix=f"euglena-lambda-{self.run_id}-"))
        _link_runtime_libraries(self._root / "runtime")
        (self._root / "bootstrap.py").write_text(_BOOTSTRAP)
        _register(self)
        self._stopped.clear()
        self._scheduler = threading.Thread(
            target=self._schedule, name=f"eventbridge-{self.run_id}", daemon=True
        )
        self._scheduler.start()
        logger.info("local Lambda runtime %s started", self.run_id)
        return self

    def stop(self) -> None:
        """Stop firing, end running handlers and remove the runtime's files."""
        self._stopped.set()
        _unregister(self)
        if self._scheduler is not None:
            self._scheduler.join()
        with self._lock:
            processes, threads = list(self._processes), list(self._threads)
        for process in processes:
            _kill_group(process)
        for thread in threads:
            thread.join()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        logger.info("local Lambda runtime %s stopped", self.run_id)

    def invoke(
        self, function: str, event: Any = None, *, qualifier: str | None = None
    ) -> Invocation:
        """Run ``function`` (name or ARN) for ``event`` and wait for its result."""
        backend = lambda_backends[self.server.account_id][self.region]
        spec = FunctionSpec.of(backend.get_function(function, qualifier))
        return self.run(spec, {} if event is None else event)

    def submit(self, spec: FunctionSpec, event: Any) -> None:
        """Run ``spec`` for ``event`` in the background, as an Event invocation."""
        if self._stopped.is_set():
            logger.warning("runtime stopped; %s is not invoked", spec.name)
            return

        def run() -> None:
            try:
                outcome = self.run(spec, event)
                logger.debug("async %s ended, failed=%s", spec.name, outcome.failed)
            except Exception:
                logger.exception("asynchronous invocation of %s failed", spec.name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"lambda-{spec.name}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def run(self, spec: FunctionSpec, event: Any) -> Invocation:
        """Run ``spec``'s handler for ``event`` in a fresh process."""
        if self._root is None or self._stopped.is_set():
            raise DeployError(
                "the local Lambda runtime is not running: call start() first",
                resource=spec.arn,
                region=spec.region,
            )
        request_id = str(uuid.uuid4())
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[{spec.version}]{secrets.token_hex(16)}"
        work = Path(tempfile.mkdtemp(prefix="call-", dir=self._root))
        try:
            invocation = self._execute(spec, event, request_id, stream, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._send_logs(spec, stream, invocation.log_events)
        return invocation

    def _execute(
        self, spec: FunctionSpec, event: Any, request_id: str, stream: str, work: Path
    ) -> Invocation:
        task_root = self._prepare(spec, event, request_id, stream, work)
        lines = [_stamp(f"START RequestId: {request_id} Version: {spec.version}")]
        started = time.monotonic()

        returncode = self._spawn(spec, stream, work, task_root, lines)

        duration_ms = (time.monotonic() - started) * 1000
        payload, failed = _outcome(work / "result.json", returncode, spec, request_id)
        if returncode == -signal.SIGALRM or returncode is None:
            message = f"{request_id} Task timed out after {spec.timeout:.2f} seconds"
            lines.append(_stamp(f"{_now_iso()} {message}"))
        lines.append(_stamp(f"END RequestId: {request_id}"))
        lines.append(_stamp(_report(request_id, duration_ms, spec.memory_mb)))
        logger.debug("%s ran in %.0f ms, failed=%s", spec.name, duration_ms, failed)
        return Invocation(
            request_id, payload, failed, stream, tuple(lines), duration_ms
        )

    def _prepare(
        self, spec: FunctionSpec, event: Any, request_id: str, stream: str, work: Path
    ) -> Path:
        """Extract the zip and write the bootstrap's request; return the task root."""
        assert self._root is not None
        task_root = work / "task"
        with zipfile.ZipFile(io.BytesIO(spec.code)) as archive:
            archive.extractall(task_root)
        context = {
            "function_name": spec.name,
            "function_version": spec.version,
            "invoked_function_arn": spec.arn,
            "memory_limit_in_mb": str(spec.memory_mb),
            "aws_request_id": request_id,
            "log_group_name": f"/aws/lambda/{spec.name}",
            "log_stream_name": stream,
        }
        request = {
            "path": [str(task_root), str(self._root / "runtime")],
            "handler": spec.handler,
            "timeout": spec.timeout,
            "event": event,
            "context": context,
        }
        (work / "request.json").write_text(json.dumps(request))
        return task_root

    def _spawn(
        self,
        spec: FunctionSpec,
        stream: str,
        work: Path,
        task_root: Path,
        lines: list[tuple[int, str]],
    ) -> int | None:
        """Run the bootstrap; its return code, or None when it had to be killed."""
        assert self._root is not None
        # -S as well as -I: the venv's site-packages would otherwise be importable.
        command = [sys.executable, "-I", "-S", "-u", str(self._root / "bootstrap.py")]
        command += [str(work / "request.json"), str(work / "result.json")]
        process = subprocess.Popen(
            command,
            cwd=task_root,
            env=self._environment(spec, stream, task_root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so the handler's own children die with it
        )
        with self._lock:
            self._processes.add(process)
        reader = threading.Thread(target=_read_lines, args=(process, lines))
        reader.start()
        try:
            returncode: int | None = process.wait(INIT_SECONDS + spec.timeout + 1)
        except subprocess.TimeoutExpired:
            returncode = None
        _kill_group(process)
        reader.join()
        with self._lock:
            self._processes.discard(process)
        return returncode

    def _environment(
        self, spec: FunctionSpec, stream: str, task_root: Path
    ) -> dict[str, str]:
        # Like Lambda, the function sees its own variables and Lambda's only.
        return {
            **spec.environment,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(task_root),
            "_HANDLER": spec.handler,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_ENDPOINT_URL": self.server.endpoint_url,
        }

    def _send_logs(
        self, spec: FunctionSpec, stream: str, lines: tuple[tuple[int, str], ...]
    ) -> None:
        client = self._clients().client("logs")
        group = f"/aws/lambda/{spec.name}"
        events = [{"timestamp": t, "message": line} for t, line in lines if line]
        try:
            with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
                client.create_log_group(logGroupName=group)
            client.create_log_stream(logGroupName=group, logStreamName=stream)
            client.put_log_events(
                logGroupName=group, logStreamName=stream, logEvents=events
            )
        except (ClientError, EndpointConnectionError) as exc:
            logger.warning("dropped the logs of %s in %s: %s", spec.name, stream, exc)

    def _clients(self) -> ClientFactory:
        # The server's address is known only once it is started.
        if self._factory is None:
            self._factory = ClientFactory(
                self.region, endpoint_url=self.server.endpoint_url
            )
        return self._factory

    def _schedule(self) -> None:
        schedule = _Schedule(self)
        while not self._stopped.wait(TICK_SECONDS):
            try:
                schedule.tick(time.monotonic())
            except Exception:
                logger.exception("reading EventBridge schedules failed; retrying")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Schedule:
    """When each scheduled rule of the account is next due, and firing it."""

    def __init__(self, runtime: LambdaRuntime) -> None:
        self._runtime = runtime
        self._events = runtime._clients().client("events")
        self._due: dict[tuple[str, str], float] = {}
        self._unsupported: set[str] = set()

    def tick(self, now: float) -> None:
        """Fire every rule now due; start the clock of rules seen for the first time."""
        live = set()
        for rule in self._events.list_rules()["Rules"]:
            period = self._period(rule)
            if period is None:
                continue
            key = (rule["Arn"], rule["ScheduleExpression"])
            live.add(key)
            due = self._due.setdefault(key, now + period)
            if now >= due:
                # EventBridge does not catch up on missed periods.
                self._due[key] = max(due + period, now)
                self._fire(rule)
        for key in set(self._due) - live:
            del self._due[key]

    def _period(self, rule: dict[str, Any]) -> float | None:
        expression = rule.get("ScheduleExpression")
        if rule.get("State") != "ENABLED" or not expression:
            return None
        seconds = rate_seconds(expression)
        if seconds is None:
            if expression not in self._unsupported:
                self._unsupported.add(expression)
                logger.warning("rule %s: %s never fires here", rule["Name"], expression)
            return None
        return seconds * self._runtime.schedule_scale

    def _fire(self, rule: dict[str, Any]) -> None:
        targets = self._events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        backend = lambda_backends[self._runtime.server.account_id][self._runtime.region]
        for target in [t for t in targets if ":lambda:" in t["Arn"]]:
            try:
                spec = FunctionSpec.of(backend.get_function(target["Arn"]))
            except Exception as exc:
                logger.warning(
                    "rule %s: cannot invoke %s: %s", rule["Name"], target["Arn"], exc
                )
                continue
            event = _scheduled_event(rule, spec.region)
            if "Input" in target:
                event = json.loads(target["Input"])
            logger.debug("rule %s fires %s", rule["Name"], spec.name)
            self._runtime.submit(spec, event)


def rate_seconds(expression: str) -> int | None:
    """The period of a ``rate(...)`` schedule in seconds, or None for other kinds."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def _scheduled_event(rule: dict[str, Any], region: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": secrets.token_hex(16),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": rule["Arn"].split(":")[4],
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule["Arn"]],
        "detail": {},
    }


def _outcome(
    result: Path, returncode: int | None, spec: FunctionSpec, request_id: str
) -> tuple[str, bool]:
    """The payload and whether it is an error, from what the process left."""
    if result.exists():
        answer = json.loads(result.read_text())
        return answer["payload"], not answer["ok"]
    if returncode == -signal.SIGALRM or returncode is None:
        kind = "Sandbox.Timedout"
        message = f"Task timed out after {spec.timeout:.2f} seconds"
    else:
        kind = "Runtime.ExitError"
        message = f"Runtime exited with error: exit status {returncode}"
    error = {
        "errorType": kind,
        "errorMessage": f"RequestId: {request_id} Error: {message}",
    }
    return json.dumps(error), True


def _read_lines(process: subprocess.Popen[bytes], lines: list[tuple[int, str]]) -> None:
    assert process.stdout is not None
    for raw in process.stdout:
        lines.append(_stamp(raw.decode(errors="replace").rstrip("\n")))


def _stamp(line: str) -> tuple[int, str]:
    return int(time.time() * 1000), line


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _report(request_id: str, duration_ms: float, memory_mb: int) -> str:
    return (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {memory_mb} MB"
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _link_runtime_libraries(directory: Path) -> None:
    """Link the libraries the Lambda Python runtime provides into ``directory``."""
    directory.mkdir()
    for name in RUNTIME_LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise DeployError(
                f"{name} is not installed, but the Lambda runtime provides it: "
                "install requirements.txt into the harness's venv"
            )
        origin = Path(spec.origin)
        source = origin.parent if spec.submodule_search_locations else origin
        (directory / source.name).symlink_to(source)


_runtimes: list[LambdaRuntime] = []
_registry_lock = threading.Lock()
_original_invoke: Callable[..., Any] | None = None


def _register(runtime: LambdaRuntime) -> None:
    with _registry_lock:
        _runtimes.append(runtime)


def _unregister(runtime: LambdaRuntime) -> None:
    with _registry_lock, contextlib.suppress(ValueError):
        _runtimes.remove(runtime)


def _runtime_for(account_id: str) -> LambdaRuntime | None:
    with _registry_lock:
        found = [r for r in _runtimes if r.server.account_id == account_id]
    return found[-1] if found else None


def install() -> None:
    """Make moto's Lambda Invoke run handlers; calling it again changes nothing."""
    global _original_invoke
    current = LambdaFunction.invoke
    if getattr(current, _MARKER, False):
        return
    parameters = list(inspect.signature(current).parameters)
    if parameters != _INVOKE_PARAMETERS:
        raise DeployError(
            f"moto's LambdaFunction.invoke now takes {parameters}, not "
            f"{_INVOKE_PARAMETERS}: adapt harness/local/lambda_runtime.py to it, or "
            "keep moto at the version requirements.txt pins",
            resource="moto.awslambda.models.LambdaFunction.invoke",
        )
    _original_invoke = current
    setattr(_invoke, _MARKER, True)
    LambdaFunction.invoke = _invoke  # type: ignore[method-assign]
    logger.debug("moto Lambda Invoke now runs handlers")


def is_installed() -> bool:
    """Whether ``install()`` has completed moto's Lambda in this process."""
    return bool(getattr(LambdaFunction.invoke, _MARKER, False))


def _invoke(
    self: LambdaFunction, body: Any, request_headers: Any, response_headers: Any
) -> str | bytes:
    runtime = _runtime_for(self.account_id)
    if runtime is None:
        assert _original_invoke is not None
        logger.warning("no local Lambda runtime for account %s", self.account_id)
        return _original_invoke(self, body, request_headers, response_headers)  # type: ignore[no-any-return]
    event = json.loads(body) if body else {}
    kind = request_headers.get("x-amz-invocation-type", "RequestResponse")
    response_headers["x-amz-executed-version"] = str(self.version)
    if kind == "DryRun":
        return b""
    if kind == "Event":
        runtime.submit(FunctionSpec.of(self), event)
        return b""
    invocation = runtime.run(FunctionSpec.of(self), event)
    if invocation.failed:
        response_headers["x-amz-function-error"] = "Unhandled"
    tail = "\n".join(invocation.log_lines).encode()[-LOG_TAIL_BYTES:]
    response_headers["x-amz-log-result"] = base64.b64encode(tail).decode()
    return invocation.payload.encode()
