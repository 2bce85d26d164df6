"""AWS API outages on demand: an emulated service answers 503 for a while.

A request is matched by the service it is signed for (``monitoring`` for
CloudWatch, ``ecs``, ``logs`` ...) and, optionally, its operation, read from
``X-Amz-Target``, the RPC path, or the query protocol's ``Action``. botocore
treats 503 as a transient fault, retries it, then raises, as it would during
a real outage.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_SIGNED_FOR = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


@dataclass(frozen=True)
class Outage:
    """One service, or one operation of it, down until a monotonic time."""

    service: str
    operation: str | None
    until: float

    def matches(self, service: str, operation: str | None) -> bool:
        return self.service == service and self.operation in (None, operation)


class Outages:
    """The outages in force, and the WSGI wrapper that enacts them."""

    def __init__(self) -> None:
        self._outages: list[Outage] = []
        self._lock = threading.Lock()

    def fail(self, service: str, seconds: float, operation: str | None = None) -> None:
        """Make ``service`` (or one operation of it) answer 503 for ``seconds``."""
        outage = Outage(service, operation, time.monotonic() + seconds)
        with self._lock:
            self._outages.append(outage)
        logger.warning(
            "AWS outage: %s %s down for %.0fs", service, operation or "(all)", seconds
        )

    def clear(self) -> None:
        with self._lock:
            self._outages.clear()

    def _down(self, service: str, operation: str | None) -> bool:
        now = time.monotonic()
        with self._lock:
            self._outages = [o for o in self._outages if o.until > now]
            return any(o.matches(service, operation) for o in self._outages)

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """``app``, answering 503 to what an outage in force covers."""

        def serve(environ: dict[str, Any], start: Callable[..., Any]) -> Any:
            if self._outages:
                service = _service_of(environ)
                if service and self._down(service, _operation_of(environ)):
                    start("503 Service Unavailable", [("Content-Length", "0")])
                    return [b""]
            return app(environ, start)

        return serve


def _service_of(environ: dict[str, Any]) -> str | None:
    found = _SIGNED_FOR.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found.group(1) if found else None


def _operation_of(environ: dict[str, Any]) -> str | None:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    path = str(environ.get("PATH_INFO", ""))
    if "/operation/" in path:
        return path.rsplit("/operation/", 1)[1].strip("/")
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    if "Action" in query:
        return query["Action"][0]
    return _form_action(environ)


def _form_action(environ: dict[str, Any]) -> str | None:
    """The query protocol's Action from a form body, leaving the body readable."""
    if "x-www-form-urlencoded" not in environ.get("CONTENT_TYPE", ""):
        return None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    actions = parse_qs(body.decode("utf-8", "replace")).get("Action")
    return actions[0] if actions else None
