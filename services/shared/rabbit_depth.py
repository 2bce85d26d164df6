"""How deep the work queue is, read from RabbitMQ's management API.

Standard library only: this module is also packed into the autoscaler's Lambda
zip, where nothing but the zip and boto3 can be imported.

The message counts come from the vhost's queue list with
``disable_stats=true&enable_queue_totals=true``, which the broker answers from
the queues themselves, in real time; the single-queue endpoint answers from
statistics samples that lag about five seconds.

Configuration: ``RABBITMQ_MANAGEMENT_URL`` is the API's base URL without
credentials (``http://host:15672``), and ``RABBITMQ_USER`` /
``RABBITMQ_PASSWORD`` the credentials. Credentials embedded in the URL
(``http://user:pass@host:15672``) are accepted too; separate variables win.

Note: the consumer count has no real-time source in the API, so it comes from
the single-queue endpoint and may trail a consumer's arrival or departure by a
few seconds.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from services.shared.queue_metrics import QUEUE_NAME, QueueDepth

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 5.0


class QueueDepthError(Exception):
    """The queue's depth could not be read; ``host``, ``port`` say from where."""

    def __init__(
        self, message: str, *, host: str, port: int, status: int | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.status = status
        super().__init__(message)


class BrokerUnreachableError(QueueDepthError):
    """The management API did not answer, or answered with an HTTP error."""


class QueueNotFoundError(QueueDepthError):
    """The broker answered, but the queue does not exist in the vhost."""


@dataclass(frozen=True)
class ManagementEndpoint:
    """Where the management API listens and how to log in to it."""

    base_url: str
    user: str
    password: str

    @classmethod
    def from_url(
        cls, url: str, user: str | None = None, password: str | None = None
    ) -> ManagementEndpoint:
        """Build from a URL, taking credentials from the arguments or the URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"RABBITMQ_MANAGEMENT_URL {url!r} is not an http(s) URL with a "
                "host: set it to e.g. http://rabbitmq:15672"
            )
        user = user or urllib.parse.unquote(parts.username or "")
        password = password or urllib.parse.unquote(parts.password or "")
        if not user or not password:
            raise ValueError(
                "no RabbitMQ management credentials: set RABBITMQ_USER and "
                "RABBITMQ_PASSWORD (or put them in RABBITMQ_MANAGEMENT_URL)"
            )
        netloc = (
            parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        )
        base_url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return cls(base_url=base_url.rstrip("/"), user=user, password=password)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def read_queue_depth(
    endpoint: ManagementEndpoint,
    queue_name: str = QUEUE_NAME,
    *,
    vhost: str = "/",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> QueueDepth:
    """Read the queue's ready, unacknowledged and consumer counts now."""
    quoted_vhost = urllib.parse.quote(vhost, safe="")
    totals = _get_json(
        endpoint,
        f"/api/queues/{quoted_vhost}?disable_stats=true&enable_queue_totals=true",
        timeout,
    )
    queue = next((q for q in totals if q.get("name") == queue_name), None)
    if queue is None:
        raise _queue_missing(endpoint, queue_name, vhost)
    depth = QueueDepth(
        ready=int(queue.get("messages_ready", 0)),
        unacknowledged=int(queue.get("messages_unacknowledged", 0)),
        consumers=_consumers(endpoint, queue_name, vhost, timeout),
    )
    logger.debug("queue %s on %s: %s", queue_name, endpoint.host, depth)
    return depth


def _consumers(
    endpoint: ManagementEndpoint, queue_name: str, vhost: str, timeout: float
) -> int:
    quoted_vhost = urllib.parse.quote(vhost, safe="")
    path = f"/api/queues/{quoted_vhost}/{urllib.parse.quote(queue_name, safe='')}"
    try:
        details = _get_json(endpoint, path, timeout)
    except BrokerUnreachableError as error:
        if error.status == 404:  # deleted between the two calls
            raise _queue_missing(endpoint, queue_name, vhost) from error
        raise
    return int(details.get("consumers", 0))


def _queue_missing(
    endpoint: ManagementEndpoint, queue_name: str, vhost: str
) -> QueueNotFoundError:
    return QueueNotFoundError(
        f"queue {queue_name!r} does not exist in vhost {vhost!r} on "
        f"{endpoint.host}:{endpoint.port}: start the service that declares it, "
        "or check the queue name",
        host=endpoint.host,
        port=endpoint.port,
    )


def _get_json(endpoint: ManagementEndpoint, path: str, timeout: float) -> Any:
    token = base64.b64encode(f"{endpoint.user}:{endpoint.password}".encode()).decode()
    request = urllib.request.Request(
        endpoint.base_url + path,
        headers={"Authorization": f"Basic {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise _http_error(endpoint, path, error) from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise BrokerUnreachableError(
            f"RabbitMQ management API at {endpoint.host}:{endpoint.port} is "
            f"unreachable ({reason}): check RABBITMQ_MANAGEMENT_URL and that the "
            "broker runs with the management plugin",
            host=endpoint.host,
            port=endpoint.port,
        ) from error


def _http_error(
    endpoint: ManagementEndpoint, path: str, error: urllib.error.HTTPError
) -> BrokerUnreachableError:
    hint = {
        401: "check RABBITMQ_USER and RABBITMQ_PASSWORD",
        404: "check the vhost and RABBITMQ_MANAGEMENT_URL",
    }.get(error.code, "the broker may be starting or overloaded; retry later")
    return BrokerUnreachableError(
        f"RabbitMQ management API at {endpoint.host}:{endpoint.port} answered "
        f"HTTP {error.code} {error.reason} for {path.split('?')[0]}: {hint}",
        host=endpoint.host,
        port=endpoint.port,
        status=error.code,
    )
