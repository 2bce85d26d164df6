"""``GET /health``: a JSON report of the publisher, 200 while the process serves."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

Report = Callable[[], dict[str, Any]]


class HealthServer(ThreadingHTTPServer):
    """Serves ``report()`` as JSON on ``/health`` from a daemon thread."""

    daemon_threads = True

    def __init__(self, host: str, port: int, report: Report) -> None:
        self.report = report
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(
            target=self.serve_forever, name="health", daemon=True
        )

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which hangs where no
        # name server answers (a task's network namespace); the name is unused.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health on http://%s:%s/health", *self.server_address[:2])
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            self._send(404, {"error": f"no such path {self.path}; try /health"})
            return
        self._send(200, self.server.report())

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)
