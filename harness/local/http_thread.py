"""An ASGI application served by uvicorn on a thread of this process."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import uvicorn
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.errors import DeployError

logger = logging.getLogger(__name__)

START_TIMEOUT = 15.0


class ServedApp:
    """Serves ``app`` on ``host``; port 0 takes a free one, read back from ``url``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServedApp:
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        started = Retrying(
            retry=retry_if_result(lambda up: not up),
            stop=stop_after_delay(START_TIMEOUT),
            wait=wait_fixed(0.02),
            retry_error_callback=lambda _: False,
        )(lambda: self._server.started)
        if not started:
            raise DeployError(
                f"the HTTP server on {self.url} did not start within {START_TIMEOUT}s"
            )
        logger.debug("serving on %s", self.url)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT)
        self._socket.close()
