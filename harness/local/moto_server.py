"""moto's server in this process, on a free loopback port, as one AWS account.

moto keeps its state per process, by account id. Each server here answers as
an account of its own (a fresh random id, set on every request it serves), so
two servers in one process, or a scratch account for a dry run beside a live
deployment, never see each other's resources. Clients need nothing special.

Note: moto reads ``MOTO_IAM_LOAD_MANAGED_POLICIES`` when it is imported, so this
module sets it before the first import of moto; AWS-managed policies such as
``AmazonECSTaskExecutionRolePolicy`` are then attachable as on AWS.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from harness.local import cloudwatch_completion, ec2_completion, lambda_runtime
from harness.local.api_outages import Outages

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def new_account_id() -> str:
    """A random 12-digit account id that no other server of this process uses."""
    return str(100_000_000_000 + secrets.randbelow(900_000_000_000))


class MotoServer:
    """An emulated AWS account reachable at ``endpoint_url`` until stopped."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._listeners: list[tuple[BaseWSGIServer, threading.Thread]] = []
        self._app: WsgiApp | None = None
        self.account_id = new_account_id()
        self.endpoint_url = ""
        self.outages = Outages()

    def start(self) -> MotoServer:
        # Werkzeug logs every request at INFO; that is moto's noise, not ours.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        ec2_completion.install()
        lambda_runtime.install()
        cloudwatch_completion.install()
        app = DomainDispatcherApplication(create_backend_app)
        self._app = self.outages.wrap(self._as_account(app))
        self.endpoint_url = self.listen_also(self._host, self._port)
        logger.info(
            "moto server listening on %s as account %s",
            self.endpoint_url,
            self.account_id,
        )
        return self

    def listen_also(self, host: str, port: int = 0) -> str:
        """Serve the same account on another address too (e.g. a task bridge)."""
        assert self._app is not None, "start the server first"
        server = make_server(
            host, port, self._app, threaded=True, request_handler=MotoRequestHandler
        )
        thread = threading.Thread(
            target=server.serve_forever, name=f"moto-{host}", daemon=True
        )
        thread.start()
        self._listeners.append((server, thread))
        bound_host, bound_port = server.server_address[:2]
        return f"http://{bound_host!s}:{bound_port}"

    def _as_account(self, app: WsgiApp) -> WsgiApp:
        def serve(environ: dict[str, Any], start: Callable[..., Any]) -> Any:
            environ["HTTP_X_MOTO_ACCOUNT_ID"] = self.account_id
            return app(environ, start)

        return serve

    def stop(self) -> None:
        for server, thread in self._listeners:
            server.shutdown()
            server.server_close()
            thread.join()
        self._listeners = []
        logger.debug("moto server on %s stopped", self.endpoint_url)

    def reset(self) -> None:
        """Answer from now on as a brand-new, empty account."""
        self.account_id = new_account_id()
        logger.debug(
            "moto server on %s is now account %s", self.endpoint_url, self.account_id
        )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
