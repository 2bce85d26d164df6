"""A Redis server of its own, configured like the official image.

Protected mode is off, as in the official image, so clients on other hosts
(other tasks' namespaces) may connect. With ``appendonly`` the data survives a
restart in ``data_dir``; without it nothing is written to disk.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.local.servers.base import ServerProcess

logger = logging.getLogger(__name__)

REDIS_SERVER = "redis-server"


class RedisServer(ServerProcess):
    """A Redis server supervised from here, its files in ``data_dir``."""

    kind = "redis"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        bind: str = "127.0.0.1",
        appendonly: bool = False,
        connect_host: str | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            data_dir,
            netns=netns,
            env=env,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.port = port
        self.bind = bind
        self.appendonly = appendonly
        self.host = connect_host or ("127.0.0.1" if bind == "0.0.0.0" else bind)

    @property
    def url(self) -> str:
        """URL of database 0."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    def describe(self) -> str:
        return f"redis on {self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            self.bind,
            "--protected-mode",
            "no",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def probe(self) -> None:
        # Readiness is polled here already; redis-py's own retries would only
        # delay noticing that the server has exited.
        client = redis.Redis.from_url(
            self.url, socket_timeout=2.0, retry=Retry(NoBackoff(), 0)
        )
        try:
            if not client.ping():
                raise ConnectionError(f"redis on {self.host}:{self.port} refused PING")
        finally:
            client.close()

    def flush_all(self) -> None:
        """Delete every key of every database."""
        client = redis.Redis.from_url(self.url, socket_timeout=5.0)
        try:
            client.flushall()
        finally:
            client.close()

    def restart(self, drop_data: bool = False) -> Self:
        """Stop and start again; with ``drop_data`` the server's files go between."""
        self.stop()
        if drop_data:
            self.drop_data()
        return self.start()

    def drop_data(self) -> None:
        """Delete everything in ``data_dir`` but the log, as a lost volume would."""
        if self.is_running:
            raise RuntimeError(f"stop {self.describe()} before dropping its data")
        for entry in self.data_dir.iterdir():
            if entry == self.log_path:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        logger.info("dropped the data of %s", self.describe())
