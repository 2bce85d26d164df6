"""A Chroma server of its own: ``chroma run`` from this Python environment."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from harness.local.servers.base import ServerProcess

logger = logging.getLogger(__name__)


def chroma_executable() -> str:
    """Return the ``chroma`` command installed beside this interpreter."""
    return str(Path(sys.executable).with_name("chroma"))


class ChromaServer(ServerProcess):
    """A Chroma server supervised from here, persisting under ``data_dir``."""

    kind = "chroma"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        connect_host: str | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        quiet = {"ANONYMIZED_TELEMETRY": "False"}
        super().__init__(
            data_dir,
            netns=netns,
            env={**quiet, **(env or {})},
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.port = port
        self.bind = host
        self.host = connect_host or ("127.0.0.1" if host == "0.0.0.0" else host)

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    @property
    def persist_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    def describe(self) -> str:
        return f"chroma on {self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            chroma_executable(),
            "run",
            "--path",
            str(self.persist_path),
            "--host",
            self.bind,
            "--port",
            str(self.port),
        ]

    def probe(self) -> None:
        response = httpx.get(f"{self.url}/api/v2/heartbeat", timeout=2.0)
        response.raise_for_status()
