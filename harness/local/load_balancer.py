"""Application load balancers of a moto account, served for real on loopback.

moto 5.2.5 stores load balancers, target groups, listeners and registered
targets, but checks nothing: ``DescribeTargetHealth`` calls every registered
target ``healthy``. ``LocalLoadBalancers`` completes that for one account and
region:

- every HTTP listener whose default action is ``forward`` gets a real listener
  on a free loopback port (port 80 would clash and need privileges), which
  proxies each request to the target group's targets in turn, adding
  ``X-Forwarded-For``/``-Proto``/``-Port`` as an ALB does; it answers 503 when
  no target can take the request, 502 when the target refuses the connection
  and 504 when it does not answer in time;
- every target of a target group that a listener uses is health checked with
  the group's settings, and goes through ALB's states: ``initial`` until its
  first verdict, ``healthy`` after one passed check (then after
  ``HealthyThresholdCount`` passes in a row once unhealthy), ``unhealthy``
  after ``UnhealthyThresholdCount`` failures in a row, ``draining`` for the
  group's deregistration delay once deregistered, ``unused`` while no
  listener uses its group;
- ``install()`` makes moto's ``DescribeTargetHealth`` report those states.

Registrations are picked up by polling moto's state, so targets come and go
with ECS tasks whoever registers them. As on AWS, a group whose registered
targets are all unhealthy fails open: requests go to all of them.

A local-only ``time_scale`` shortens health-check intervals, timeouts and the
deregistration delay for fast tests; the API keeps reporting what AWS holds.

Note: the moto classes patched here are moto's internals. ``install()`` checks
their signatures and fails loudly when a moto upgrade changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup
from moto.elbv2.models import elbv2_backends as _elbv2_backends
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from harness.errors import DeployError, NotReadyError
from harness.local.moto_server import MotoServer

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
CONNECT_TIMEOUT = 10.0
HOP_BY_HOP = frozenset(
    b"connection keep-alive proxy-authenticate proxy-authorization te trailer"
    b" transfer-encoding upgrade".split()
)
_SET_BY_ALB = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port"))
_STATUS_TEXT = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
_MARKER = "__euglena_completion__"
TargetKey = tuple[str, str, int]  # target group ARN, target id (an IP), port


@dataclass
class TargetHealth:
    """One target's health as the load balancer sees it."""

    state: str
    reason: str | None = None
    description: str | None = None
    passes: int = 0
    failures: int = 0
    draining_until: float = 0.0


_REGISTERING = ("Elb.RegistrationInProgress", "Target registration is in progress")
_CHECKING = ("Elb.InitialHealthChecking", "Initial health checks in progress")
_DRAINING = ("Target.DeregistrationInProgress", "Target deregistration is in progress")
_NOT_IN_USE = (
    "Target.NotInUse",
    "Target group is not configured to receive traffic from the load balancer",
)


class HealthBook:
    """The health of every target of one account and region, shared across threads."""

    def __init__(self, server: MotoServer, region: str) -> None:
        self._server = server
        self.region = region
        self._lock = threading.Lock()
        self._entries: dict[TargetKey, TargetHealth] = {}

    @property
    def account_id(self) -> str:
        return self._server.account_id

    def backend(self) -> ELBv2Backend:
        return _elbv2_backends[self.account_id][self.region]

    def get(self, key: TargetKey) -> TargetHealth | None:
        with self._lock:
            return self._entries.get(key)

    def keys(self) -> set[TargetKey]:
        with self._lock:
            return set(self._entries)

    def put(self, key: TargetKey, health: TargetHealth) -> None:
        with self._lock:
            self._entries[key] = health

    def drop(self, key: TargetKey) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def record(
        self, key: TargetKey, failure: tuple[str, str] | None, group: Any
    ) -> None:
        """Count one health check's outcome and move the target's state on."""
        with self._lock:
            health = self._entries.get(key)
            if health is None or health.state in ("draining", "unused"):
                return
            before = health.state
            _count(health, failure, group)
        if health.state != before:
            logger.info(
                "target %s:%s of %s is %s", key[1], key[2], key[0], health.state
            )

    def routable(self, group_arn: str) -> list[tuple[str, int]]:
        """The targets that may take a request now, in registration order."""
        with self._lock:
            live = [
                (key[1:], health.state)
                for key, health in self._entries.items()
                if key[0] == group_arn and health.state != "draining"
            ]
        healthy = [target for target, state in live if state == "healthy"]
        if healthy or not live:
            return healthy
        if all(state == "unhealthy" for _, state in live):
            return [target for target, _ in live]  # ALB fails open
        return []

    def describe(self, group: Any, target: dict[str, Any], in_use: bool) -> Any:
        """What DescribeTargetHealth says of ``target``, or None to ask moto."""
        registered = group.targets.get(target["Id"])
        default_port = registered["Port"] if registered else group.port
        port = int(target.get("Port", default_port))
        health = self.get((group.arn, target["Id"], port))
        if health is None and registered and int(registered["Port"]) == port:
            reason = _REGISTERING if in_use else _NOT_IN_USE
            health = TargetHealth("initial" if in_use else "unused", *reason)
        if health is None:
            return None
        return FakeHealthStatus(
            target["Id"],
            str(port),
            group.health_check_port,
            health.state,
            health.reason,
            health.description,
        )

    def draining(self, group_arn: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"Id": key[1], "Port": key[2]}
                for key, health in self._entries.items()
                if key[0] == group_arn and health.state == "draining"
            ]


def _count(health: TargetHealth, failure: tuple[str, str] | None, group: Any) -> None:
    if failure is None:
        health.passes, health.failures = health.passes + 1, 0
        back = health.state == "unhealthy"
        if not back or health.passes >= int(group.healthy_threshold_count):
            health.state, health.reason, health.description = "healthy", None, None
        return
    health.passes, health.failures = 0, health.failures + 1
    if health.state == "unhealthy" or health.failures >= int(
        group.unhealthy_threshold_count
    ):
        health.state, (health.reason, health.description) = "unhealthy", failure
    elif health.state == "initial":
        health.reason, health.description = _CHECKING


# moto's DescribeTargetHealth, completed ------------------------------------

_books: list[HealthBook] = []
_ORIGINAL = ELBv2Backend.describe_target_health
_EXPECTED_PARAMETERS: list[tuple[Callable[..., Any], list[str]]] = [
    (_ORIGINAL, ["self", "target_group_arn", "targets"]),
    (FakeTargetGroup.health_for, ["self", "target", "ec2_backend"]),
    (
        FakeHealthStatus.__init__,
        [
            "self",
            "instance_id",
            "port",
            "health_port",
            "status",
            "reason",
            "description",
        ],
    ),
]


def install() -> None:
    """Make moto's DescribeTargetHealth tell the states this module measures."""
    if getattr(ELBv2Backend.describe_target_health, _MARKER, False):
        return
    for function, expected in _EXPECTED_PARAMETERS:
        if list(inspect.signature(function).parameters) != expected:
            raise DeployError(
                f"moto changed {function.__qualname__}, which "
                "harness/local/load_balancer.py completes: adapt the completion "
                "to it, or keep moto at the version requirements.txt pins",
                resource=function.__module__,
            )
    setattr(_describe_target_health, _MARKER, True)
    ELBv2Backend.describe_target_health = _describe_target_health  # type: ignore[method-assign, assignment]


def _describe_target_health(
    backend: ELBv2Backend, target_group_arn: str, targets: list[dict[str, Any]]
) -> list[Any]:
    book = next(
        (
            b
            for b in list(_books)
            if (b.account_id, b.region) == (backend.account_id, backend.region_name)
        ),
        None,
    )
    group = backend.target_groups.get(target_group_arn)
    if book is None or group is None:
        return _ORIGINAL(backend, target_group_arn, targets)
    in_use = target_group_arn in groups_in_use(backend)
    wanted = targets or list(group.targets.values()) + book.draining(group.arn)
    return [
        book.describe(group, target, in_use)
        or group.health_for(target, backend.ec2_backend)
        for target in wanted
    ]


def groups_in_use(backend: ELBv2Backend) -> set[str]:
    """The ARNs of the target groups that some listener rule forwards to."""
    used: set[str] = set()
    for balancer in list(backend.load_balancers.values()):
        for listener in list(balancer.listeners.values()):
            for rule in list(listener.rules.values()):
                for action in rule.actions:
                    used.update(arn for arn, _ in _forward_groups(action.data))
    return used


def _forward_groups(action: dict[str, Any]) -> list[tuple[str, int]]:
    if action.get("Type") != "forward":
        return []
    if "TargetGroupArn" in action:
        return [(action["TargetGroupArn"], 1)]
    groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
    return [(g["TargetGroupArn"], int(g.get("Weight", 1))) for g in groups]


# The listeners --------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """An HTTP listener of moto's and the target groups it forwards to."""

    load_balancer_arn: str
    name: str
    dns_name: str
    listener_arn: str
    port: int
    groups: tuple[tuple[str, int], ...]
    idle_timeout: float


@dataclass(frozen=True)
class LocalListener:
    """Where a load balancer's listener really answers on this machine."""

    load_balancer_arn: str
    name: str
    dns_name: str
    listener_arn: str
    port: int
    url: str


@dataclass
class _Served:
    route: Route
    server: uvicorn.Server
    task: asyncio.Task[None]
    sock: socket.socket
    turns: dict[str, Iterator[int]] = field(default_factory=dict)

    @property
    def local_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port


def _routes(backend: ELBv2Backend) -> dict[str, Route]:
    routes = {}
    for balancer in list(backend.load_balancers.values()):
        idle = float(balancer.attrs.get("idle_timeout.timeout_seconds") or 60)
        for listener in list(balancer.listeners.values()):
            groups = [
                g for a in listener.default_actions for g in _forward_groups(a.data)
            ]
            if listener.protocol != "HTTP" or not groups:
                continue
            routes[listener.arn] = Route(
                balancer.arn,
                balancer.name,
                balancer.dns_name,
                listener.arn,
                int(listener.port),
                tuple(groups),
                idle,
            )
    return routes


def _config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,
        lifespan="off",
        access_log=False,
        # The target's own Server and Date headers pass through untouched.
        server_header=False,
        date_header=False,
        # The client is whoever connected, whatever X-Forwarded-For says.
        proxy_headers=False,
        timeout_graceful_shutdown=2,
    )


def _relay(answer: httpx.Response) -> Response:
    """The target's answer, streamed back without hop-by-hop headers."""
    response = StreamingResponse(
        answer.aiter_raw(),
        status_code=answer.status_code,
        background=BackgroundTask(answer.aclose),
    )
    response.raw_headers = [
        (k, v) for k, v in answer.headers.raw if k.lower() not in HOP_BY_HOP
    ]
    return response


def _alb_error(status: int) -> Response:
    title = f"{status} {_STATUS_TEXT[status]}"
    body = (
        f"<html><head><title>{title}</title></head><body>"
        f"<center><h1>{title}</h1></center></body></html>\r\n"
    )
    return HTMLResponse(body, status_code=status, headers={"Server": "awselb/2.0"})


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


class LocalLoadBalancers:
    """Serves and health checks every ALB of one moto account and region."""

    def __init__(
        self,
        server: MotoServer,
        region: str,
        *,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.book = HealthBook(server, region)
        self._scale = time_scale
        self._host = host
        self._poll = poll_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"alb-{region}", daemon=True
        )
        self._served: dict[str, _Served] = {}
        self._checkers: dict[TargetKey, asyncio.Task[None]] = {}
        self._reconciling = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._proxy = httpx.AsyncClient(trust_env=False, verify=False)
        self._checks = httpx.AsyncClient(
            trust_env=False,
            verify=False,
            # ALB closes the connection after every health check.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def start(self) -> LocalLoadBalancers:
        install()
        where = (self.book.account_id, self.book.region)
        if any((b.account_id, b.region) == where for b in _books):
            raise DeployError(
                "this account's load balancers are served already: stop the "
                "other LocalLoadBalancers first",
                resource=self.book.account_id,
                region=self.book.region,
            )
        _books.append(self.book)
        self._thread.start()
        try:
            self._poller = self._call(self._start_polling())
            self.sync()
        except BaseException:
            self.stop()
            raise
        logger.info("load balancers of account %s are served", self.book.account_id)
        return self

    def stop(self) -> None:
        """Close every listener and stop checking; moto answers as before."""
        with contextlib.suppress(ValueError):
            _books.remove(self.book)
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
        logger.info("load balancers of account %s stopped", self.book.account_id)

    def sync(self) -> None:
        """Pick up moto's current load balancers and targets right now."""
        self._call(self._reconcile())

    def listeners(self) -> list[LocalListener]:
        """Every listener served, after picking up moto's current state."""
        self.sync()
        return [
            LocalListener(
                s.route.load_balancer_arn,
                s.route.name,
                s.route.dns_name,
                s.route.listener_arn,
                s.route.port,
                f"http://{self._host}:{s.local_port}",
            )
            for s in list(self._served.values())
        ]

    def url_for(self, load_balancer: str, port: int | None = None) -> str:
        """The local URL of a load balancer's listener (by ARN, DNS name or name)."""
        found = [
            listener
            for listener in self.listeners()
            if load_balancer
            in (listener.load_balancer_arn, listener.dns_name, listener.name)
            and port in (None, listener.port)
        ]
        if not found:
            raise NotReadyError(
                f"no HTTP listener{f' on port {port}' if port else ''} forwards "
                f"to a target group on load balancer {load_balancer}: create one "
                "with create_listener(DefaultActions=[{'Type': 'forward', ...}])",
                resource=load_balancer,
                region=self.book.region,
            )
        return min(found, key=lambda listener: listener.port).url

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start_polling(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self._reconcile()
            except Exception:
                logger.exception("reading moto's load balancers failed; retrying")
            await asyncio.sleep(self._poll)

    async def _reconcile(self) -> None:
        async with self._reconciling:
            backend = self.book.backend()
            await self._sync_listeners(_routes(backend))
            self._sync_targets(backend, groups_in_use(backend))

    async def _sync_listeners(self, routes: dict[str, Route]) -> None:
        for arn in set(self._served) - set(routes):
            await self._close(self._served.pop(arn))
        for arn, route in routes.items():
            if arn in self._served:
                self._served[arn].route = route
            else:
                self._served[arn] = self._open(route)

    def _open(self, route: Route) -> _Served:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        # Listening before uvicorn starts queues early clients instead of
        # refusing them.
        sock.listen(128)
        server = uvicorn.Server(_config(_ListenerApp(self, route.listener_arn)))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        served = _Served(route, server, task, sock)
        logger.info(
            "load balancer %s listener %s answers on http://%s:%s",
            route.name,
            route.port,
            self._host,
            served.local_port,
        )
        return served

    async def _close(self, served: _Served) -> None:
        served.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(served.task, timeout=5)
        served.sock.close()
        logger.info("listener %s closed", served.route.listener_arn)

    def _sync_targets(self, backend: ELBv2Backend, in_use: set[str]) -> None:
        registered: dict[TargetKey, Any] = {
            (arn, t["Id"], int(t["Port"])): group
            for arn, group in list(backend.target_groups.items())
            for t in list(group.targets.values())
        }
        for key, group in registered.items():
            self._admit(key, group, key[0] in in_use)
        now = time.monotonic()
        for key in self.book.keys() - set(registered):
            self._retire(key, backend.target_groups.get(key[0]), now)

    def _admit(self, key: TargetKey, group: Any, used: bool) -> None:
        health = self.book.get(key)
        state = health.state if health else None
        if used and state in (None, "draining", "unused"):
            self.book.put(key, TargetHealth("initial", *_REGISTERING))
        if not used and state != "unused":
            self.book.put(key, TargetHealth("unused", *_NOT_IN_USE))
        checker = self._checkers.get(key)
        if used and checker is None:
            self._checkers[key] = asyncio.create_task(self._check_forever(key))
        elif not used and checker is not None:
            self._checkers.pop(key).cancel()

    def _retire(self, key: TargetKey, group: Any, now: float) -> None:
        checker = self._checkers.pop(key, None)
        if checker is not None:
            checker.cancel()
        health = self.book.get(key)
        if group is None or health is None or health.state == "unused":
            self.book.drop(key)
        elif health.state != "draining":
            delay = float(
                group.attributes.get("deregistration_delay.timeout_seconds", 300)
            )
            until = now + delay * self._scale
            self.book.put(
                key, TargetHealth("draining", *_DRAINING, draining_until=until)
            )
        elif now >= health.draining_until:
            self.book.drop(key)

    async def _check_forever(self, key: TargetKey) -> None:
        while True:
            group = self.book.backend().target_groups.get(key[0])
            if group is None:
                return
            try:
                self.book.record(key, await self._probe(group, key), group)
            except Exception:
                logger.exception("health check of %s:%s failed", key[1], key[2])
            interval = float(group.health_check_interval_seconds)
            await asyncio.sleep(interval * self._scale)

    async def _probe(self, group: Any, key: TargetKey) -> tuple[str, str] | None:
        """None when the target passes one health check, else (reason, description)."""
        port = group.health_check_port
        port = key[2] if port in (None, "traffic-port") else int(port)
        scheme = (group.health_check_protocol or "HTTP").lower()
        url = f"{scheme}://{key[1]}:{port}{group.health_check_path or '/'}"
        timeout = float(group.health_check_timeout_seconds) * self._scale
        try:
            response = await self._checks.get(
                url, timeout=timeout, headers={"User-Agent": "ELB-HealthChecker/2.0"}
            )
        except httpx.TimeoutException:
            return ("Target.Timeout", "Request timed out")
        except httpx.HTTPError:
            return ("Target.FailedHealthChecks", "Health checks failed")
        if _matches(response.status_code, group.matcher.get("HttpCode", "200")):
            return None
        codes = f"[{response.status_code}]"
        detail = f"Health checks failed with these codes: {codes}"
        return ("Target.ResponseCodeMismatch", detail)

    def _pick(self, served: _Served) -> tuple[str, int] | None:
        arns, weights = zip(*served.route.groups, strict=True)
        group_arn = random.choices(arns, weights)[0] if len(arns) > 1 else arns[0]
        targets = self.book.routable(group_arn)
        if not targets:
            return None
        turn = served.turns.setdefault(group_arn, itertools.count())
        return targets[next(turn) % len(targets)]

    async def forward(self, listener_arn: str, request: Request) -> Response:
        """Proxy one request to the next target, as the ALB's listener does."""
        served = self._served.get(listener_arn)
        target = self._pick(served) if served else None
        if served is None or target is None:
            return _alb_error(503)
        query = request.scope.get("query_string", b"").decode("latin-1")
        path = request.scope.get("raw_path") or request.url.path.encode()
        url = f"http://{target[0]}:{target[1]}{path.decode('latin-1')}"
        outgoing = self._proxy.build_request(
            request.method,
            url + (f"?{query}" if query else ""),
            headers=_forwarded_headers(request, served.local_port),
            content=await request.body(),
            timeout=httpx.Timeout(served.route.idle_timeout, connect=CONNECT_TIMEOUT),
        )
        try:
            answer = await self._proxy.send(outgoing, stream=True)
        except httpx.TimeoutException:
            return _alb_error(504)
        except httpx.HTTPError:
            return _alb_error(502)
        return _relay(answer)

    async def _shutdown(self) -> None:
        for task in [self._poller, *self._checkers.values()]:
            if task is not None:
                task.cancel()
        self._checkers.clear()
        for served in list(self._served.values()):
            await self._close(served)
        self._served.clear()
        await self._proxy.aclose()
        await self._checks.aclose()

    def __enter__(self) -> LocalLoadBalancers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ListenerApp:
    """The ASGI application behind one served listener."""

    def __init__(self, owner: LocalLoadBalancers, listener_arn: str) -> None:
        self._owner = owner
        self._listener_arn = listener_arn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._owner.forward(self._listener_arn, request)
        await response(scope, receive, send)


def _forwarded_headers(request: Request, port: int) -> list[tuple[bytes, bytes]]:
    client = request.client.host if request.client else ""
    earlier = request.headers.get("x-forwarded-for")
    headers = [
        (k, v)
        for k, v in request.headers.raw
        if k.lower() not in HOP_BY_HOP and k.lower() not in _SET_BY_ALB
    ]
    return [
        *headers,
        (b"x-forwarded-for", (f"{earlier}, {client}" if earlier else client).encode()),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-port", str(port).encode()),
        (b"x-amzn-trace-id", _trace_id().encode()),
    ]


def _matches(code: int, matcher: str) -> bool:
    """Whether ``code`` is one of ``matcher``'s, e.g. ``200,202`` or ``200-399``."""
    for part in matcher.split(","):
        low, _, high = part.strip().partition("-")
        if int(low) <= code <= int(high or low):
            return True
    return False
