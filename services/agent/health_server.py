"""The agent's health endpoint: ``GET /health`` reports RabbitMQ, Redis and Chroma.

It answers 200 while the process serves, with each dependency's status in the
body, so a lost dependency is visible without the health check restarting
the agent.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.agent.settings import Settings
from services.shared import health

logger = logging.getLogger(__name__)


def health_body(settings: Settings) -> dict[str, object]:
    """Check the agent's dependencies and return the health document."""
    results = health.run_checks(
        {
            "rabbitmq": lambda: health.check_rabbitmq(settings.rabbitmq_url),
            "redis": lambda: health.check_redis(settings.redis_url),
            "chroma": lambda: health.check_chroma(settings.chroma_url),
        }
    )
    return {
        "status": "ok" if health.all_ok(results) else "degraded",
        "dependencies": {name: result.as_dict() for name, result in results.items()},
    }


class HealthServer(ThreadingHTTPServer):
    """An HTTP server that does not resolve its own name when it binds."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], settings: Settings) -> None:
        self.settings = settings
        super().__init__(address, HealthHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which hangs where
        # no name server answers (a task network without resolv.conf).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class HealthHandler(BaseHTTPRequestHandler):
    """Serves ``/health``; every other path is a 404."""

    server: HealthServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            self._answer(404, {"detail": f"no such path {self.path}; try /health"})
            return
        self._answer(200, health_body(self.server.settings))

    def _answer(self, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("health %s", format % args)


def start_health_server(settings: Settings, *, host: str = "0.0.0.0") -> HealthServer:
    """Serve ``/health`` on ``settings.port`` from a daemon thread."""
    server = HealthServer((host, settings.port), settings)
    threading.Thread(
        target=server.serve_forever, name="health-server", daemon=True
    ).start()
    logger.info("agent health on port %s", server.port)
    return server
