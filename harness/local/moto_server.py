"""moto's server in this process, on a free loopback port.

Note: moto reads ``MOTO_IAM_LOAD_MANAGED_POLICIES`` when it is imported, so this
module sets it before the first import of moto; AWS-managed policies such as
``AmazonECSTaskExecutionRolePolicy`` are then attachable as on AWS.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

import httpx

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.server import ThreadedMotoServer

from harness.local import ec2_completion

logger = logging.getLogger(__name__)


class MotoServer:
    """An emulated AWS account reachable at ``endpoint_url`` until stopped."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._host = host
        self.endpoint_url = ""

    def start(self) -> MotoServer:
        # Werkzeug logs every request at INFO; that is moto's noise, not ours.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        ec2_completion.install()
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        logger.info("moto server listening on %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        self._server.stop()
        logger.debug("moto server on %s stopped", self.endpoint_url)

    def reset(self) -> None:
        """Forget every resource, as a brand-new account would have none."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=30).raise_for_status()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
