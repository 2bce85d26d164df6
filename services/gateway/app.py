"""The gateway's HTTP API: submit tasks, follow them, and report health.

A task is written to the store first and then published with a broker
confirm; when the publish fails the record is removed again, so the store never
holds a "queued" task that no queue carries.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
)
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.auth import TokenVerifier, User
from services.gateway.models import (
    SYNTHETIC_MAX_SECONDS,
    HealthReport,
    TaskAccepted,
    TaskRequest,
    TaskView,
    error_responses,
)
from services.gateway.settings import Settings
from services.gateway.store import StoreUnavailableError, TaskStorage, TaskStore
from services.shared import health
from services.shared.rabbitmq import Publisher, PublishError
from services.shared.tasks import TaskRecord

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"
bearer_scheme = HTTPBearer(auto_error=False, description="Supabase user JWT")


def current_user(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User:
    """Return the caller its bearer token proves, or answer 401."""
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.user_for(request.headers.get("authorization"))


Caller = Annotated[User, Depends(current_user)]


class AuthenticatedRoute(APIRoute):
    """A route that answers 401 to a caller without a valid token, body unread."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            # FastAPI parses the body before it runs dependencies, so without this
            # a stranger's malformed body would learn a 422 instead of the 401.
            # The Caller dependency checks the token again (cheap) for the user.
            current_user(request, None)
            return await handler(request)

        return authenticated


def unavailable(what: str, consequence: str = "") -> HTTPException:
    """Return the 503 for a dependency that is down; the client should retry."""
    return HTTPException(
        status_code=503,
        detail=f"{what} is unavailable;{consequence} retry later.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def check_limits(request: TaskRequest, settings: Settings) -> None:
    """Refuse a task whose mandate or params are too large or malformed."""
    mandate_bytes = len(request.mandate.encode())
    if mandate_bytes > settings.max_mandate_bytes:
        raise HTTPException(
            413,
            f"mandate is {mandate_bytes} bytes of UTF-8; the limit is "
            f"{settings.max_mandate_bytes} bytes. Shorten it.",
        )
    params_bytes = len(json.dumps(request.params))
    if params_bytes > settings.max_params_bytes:
        raise HTTPException(
            413,
            f"params is {params_bytes} bytes as JSON; the limit is "
            f"{settings.max_params_bytes} bytes. Send fewer or smaller values.",
        )
    if request.kind == "synthetic":
        check_synthetic_params(request.params)


def check_synthetic_params(params: dict[str, Any]) -> None:
    """Refuse synthetic params unless ``seconds`` is bounded and ``fail`` a bool."""
    seconds = params.get("seconds", 0)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= SYNTHETIC_MAX_SECONDS
    ):
        raise HTTPException(
            422,
            f"params.seconds must be a number from 0 to {SYNTHETIC_MAX_SECONDS:g}, "
            f"got {seconds!r}.",
        )
    if not isinstance(params.get("fail", False), bool):
        raise HTTPException(
            422, f"params.fail must be true or false, not {params['fail']!r}."
        )


def body_limit(max_bytes: int) -> Callable[..., Awaitable[Response]]:
    """Return middleware answering 413 to a body declared over ``max_bytes``."""

    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > max_bytes:
            return JSONResponse(
                status_code=413,
                content={
                    "detail": f"the body is {declared} bytes; the limit is "
                    f"{max_bytes} bytes. Send a smaller task."
                },
            )
        return await call_next(request)

    return middleware


async def unparsable_body(request: Request, error: Exception) -> Response:
    """Answer 422, as for any malformed JSON, to a body FastAPI could not parse."""
    if not isinstance(error, StarletteHTTPException):
        raise error
    # The gateway raises no 400 itself: FastAPI's only one is a body that is not
    # UTF-8 (or not JSON at all), which the API documents as an invalid request.
    if error.status_code != 400:
        return await http_exception_handler(request, error)
    return JSONResponse(
        status_code=422,
        content={
            "detail": "the body could not be parsed; send the task as a JSON "
            "object in UTF-8."
        },
    )


def create_app(
    settings: Settings,
    *,
    store: TaskStorage | None = None,
    publisher: Publisher | None = None,
) -> FastAPI:
    """Build the gateway application on ``store`` and ``publisher`` (made if None)."""
    tasks = store if store is not None else TaskStore.from_url(settings.redis_url)
    queue = publisher or Publisher(
        settings.rabbitmq_url, attempts=settings.publish_attempts
    )
    verifier = TokenVerifier(settings.jwt_secret)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        queue.close()

    app = FastAPI(
        title="Euglena gateway",
        version="0.1.0",
        summary="Submit mandates to Euglena's agents and follow their tasks.",
        lifespan=lifespan,
    )
    app.middleware("http")(body_limit(settings.max_body_bytes))
    app.add_exception_handler(StarletteHTTPException, unparsable_body)

    app.state.verifier = verifier
    add_task_routes(app, settings, tasks, queue)
    add_health_routes(app, settings)
    return app


def add_task_routes(
    app: FastAPI,
    settings: Settings,
    tasks: TaskStorage,
    queue: Publisher,
) -> None:
    """Add the routes that read tasks, then ``POST /tasks``, all authenticated."""
    router = APIRouter(route_class=AuthenticatedRoute)
    add_read_routes(router, tasks)

    @router.post(
        "/tasks",
        status_code=202,
        response_model=TaskAccepted,
        responses=error_responses(401, 413, 422, 503),
        summary="Submit a mandate",
    )
    def submit_task(body: TaskRequest, user: Caller) -> TaskAccepted:
        check_limits(body, settings)
        record = TaskRecord(
            task_id=str(uuid.uuid4()),
            user_id=user.user_id,
            kind=body.kind,
            mandate=body.mandate,
            params=body.params,
        )
        enqueue(record, tasks, queue)
        return TaskAccepted(task_id=record.task_id)

    app.include_router(router)


def add_read_routes(router: APIRouter, tasks: TaskStorage) -> None:
    """Add ``GET /tasks/{task_id}`` and ``GET /tasks`` to ``router``."""

    @router.get(
        "/tasks/{task_id}",
        response_model=TaskView,
        responses=error_responses(401, 404, 503),
        summary="Follow one of the caller's tasks",
    )
    def get_task(task_id: str, user: Caller) -> TaskView:
        try:
            record = tasks.get(task_id)
        except StoreUnavailableError:
            raise unavailable("the task store") from None
        if record is None or record.user_id != user.user_id:
            raise HTTPException(404, f"no task {task_id!r} among your tasks.")
        return TaskView.of(record)

    @router.get(
        "/tasks",
        response_model=list[TaskView],
        responses=error_responses(401, 422, 503),
        summary="List the caller's tasks, newest first",
    )
    def list_tasks(
        user: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> list[TaskView]:
        try:
            records = tasks.list_for_user(user.user_id, limit=limit)
        except StoreUnavailableError:
            raise unavailable("the task store") from None
        return [TaskView.of(record) for record in records]


def enqueue(record: TaskRecord, tasks: TaskStorage, queue: Publisher) -> None:
    """Store ``record``, then publish it; undo the store when the publish fails."""
    try:
        tasks.create(record)
    except StoreUnavailableError:
        logger.exception("could not store task %s", record.task_id)
        raise unavailable("the task store", " nothing was queued;") from None
    try:
        queue.publish(record.to_message().to_json(), message_id=record.task_id)
    except PublishError:
        logger.exception("could not queue task %s; removing its record", record.task_id)
        discard_quietly(record, tasks)
        raise unavailable("the task queue", " nothing was queued;") from None
    logger.info(
        "queued task %s (%s) for user %s", record.task_id, record.kind, record.user_id
    )


def discard_quietly(record: TaskRecord, tasks: TaskStorage) -> None:
    """Remove a record that was never queued; log, do not raise, if that fails."""
    try:
        tasks.discard(record)
    except StoreUnavailableError:
        logger.exception(
            "task %s stays in the store, but was never queued", record.task_id
        )


def health_report(settings: Settings) -> HealthReport:
    """Check Redis and RabbitMQ side by side and report each."""
    results = health.run_checks(
        {
            "redis": lambda: health.check_redis(settings.redis_url),
            "rabbitmq": lambda: health.check_rabbitmq(settings.rabbitmq_url),
        }
    )
    return HealthReport.model_validate(
        {
            "status": "ok" if health.all_ok(results) else "degraded",
            "dependencies": {name: r.as_dict() for name, r in results.items()},
        }
    )


def add_health_routes(app: FastAPI, settings: Settings) -> None:
    """Add ``GET /health`` (liveness) and ``GET /ready`` (all dependencies up)."""

    @app.get("/health", response_model=HealthReport, summary="Liveness")
    def liveness() -> HealthReport:
        return health_report(settings)

    @app.get(
        "/ready",
        response_model=HealthReport,
        responses={
            503: {"model": HealthReport, "description": "A dependency is down."}
        },
        summary="Readiness: 200 only when every dependency is up",
    )
    def readiness(response: Response) -> HealthReport:
        current = health_report(settings)
        if current.status != "ok":
            response.status_code = 503
        return current
