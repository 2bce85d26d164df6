"""boto3 clients for one account and region, optionally behind an endpoint URL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

logger = logging.getLogger(__name__)

CallObserver = Callable[[str, str, dict[str, Any]], None]


class ClientFactory:
    """Hands out one boto3 client per service, all for the same account.

    ``endpoint_url`` points every client at an emulated control plane; with it
    the factory uses fixed fake credentials, since the emulation accepts any.
    ``observer`` is called with (service, operation, params) before each call,
    which is how a dry run records the calls a deploy makes.
    """

    def __init__(
        self,
        region: str,
        *,
        endpoint_url: str | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self._observer = observer
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        if endpoint_url:
            self._session = boto3.session.Session(
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name=region,
            )
        else:
            self._session = boto3.session.Session(region_name=region)

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make(service)
            return self._clients[service]

    def _make(self, service: str) -> Any:
        config = Config(
            retries={"max_attempts": 8, "mode": "adaptive"},
            # Cloud Map's data-plane calls prefix the host, which an endpoint
            # URL on loopback cannot answer.
            inject_host_prefix=self.endpoint_url is None,
        )
        client = self._session.client(
            service, endpoint_url=self.endpoint_url, config=config
        )
        if self._observer is not None:
            client.meta.events.register("before-parameter-build.*.*", self._observe)
        logger.debug("client %s for %s", service, self.endpoint_url or self.region)
        return client

    def _observe(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        assert self._observer is not None
        service = model.service_model.service_name
        self._observer(service, model.name, params)
