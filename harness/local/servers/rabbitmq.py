"""A RabbitMQ node of its own: own Erlang cookie, epmd, ports and data.

The node runs in the foreground under ``/usr/lib/rabbitmq/bin/rabbitmq-server``
(the ``/usr/sbin`` wrapper would switch to the ``rabbitmq`` user and share the
system node's cookie). Its own ``epmd`` runs beside it on a port of its own,
started by us so that we own its pid: the node is told not to start one, which
would daemonize and outlive it. The system's environment file and the
``RABBITMQ_*`` variables of this process are kept away from the node.

Like the official image, the node creates its default user from ``user`` and
``password`` and lets that user connect from other hosts (``loopback_users =
none``); the management plugin is enabled from a pre-written plugins file.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Self
from urllib.parse import quote

import httpx
import pika

from harness.local.servers.base import ServerProcess, free_port, netns_prefix

logger = logging.getLogger(__name__)

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "epmd"
_EPMD_STOP_SECONDS = 5.0


class RabbitNode(ServerProcess):
    """A RabbitMQ node with the management plugin, supervised from here."""

    kind = "rabbitmq"

    def __init__(
        self,
        data_dir: Path,
        *,
        amqp_port: int,
        management_port: int,
        dist_port: int,
        node_name: str,
        epmd_port: int | None = None,
        user: str = "guest",
        password: str = "guest",
        bind: str = "127.0.0.1",
        connect_host: str | None = None,
        extra_config: Mapping[str, str] | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            data_dir,
            netns=netns,
            env=env,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.amqp_port = amqp_port
        self.management_port = management_port
        self.dist_port = dist_port
        self.epmd_port = epmd_port if epmd_port is not None else free_port()
        self.node_name = node_name if "@" in node_name else f"{node_name}@localhost"
        self.user = user
        self.password = password
        self.bind = bind
        self.host = connect_host or ("127.0.0.1" if bind == "0.0.0.0" else bind)
        self.extra_config = dict(extra_config or {})
        self._epmd: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        """AMQP URL of the default vhost, with the node's credentials."""
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"amqp://{auth}@{self.host}:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API, without credentials."""
        return f"http://{self.host}:{self.management_port}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.amqp_port, self.management_port)

    def describe(self) -> str:
        return f"rabbitmq node {self.node_name} (amqp {self.host}:{self.amqp_port})"

    def command(self) -> list[str]:
        return [RABBITMQ_SERVER]

    def prepare(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.data_dir / sub).mkdir(exist_ok=True)
        cookie = self.data_dir / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.data_dir / "rabbitmq.conf").write_text(self._config_text())
        (self.data_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.data_dir / "rabbitmq-env.conf").write_text("")

    def _config_text(self) -> str:
        settings = {
            "listeners.tcp.default": f"{self.bind}:{self.amqp_port}",
            "management.tcp.ip": self.bind,
            "management.tcp.port": str(self.management_port),
            "default_user": self.user,
            "default_pass": self.password,
            "loopback_users": "none",
            # Test machines often have little free disk; RabbitMQ's 50 MB default
            # alarm would block publishers there.
            "disk_free_limit.absolute": "10MB",
            **self.extra_config,
        }
        return "".join(f"{key} = {value}\n" for key, value in settings.items())

    def environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        base = self.data_dir
        node_env = {
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_LOGS": "-",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        }
        return {**inherited, **node_env, **self.extra_env}

    def start(self) -> Self:
        if self.is_running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._start_epmd()
        return super().start()

    def _start_epmd(self) -> None:
        if self._epmd is not None and self._epmd.poll() is None:
            return
        argv = [
            *netns_prefix(self.netns),
            EPMD,
            "-port",
            str(self.epmd_port),
            "-address",
            "127.0.0.1",
        ]
        log = (self.data_dir / "epmd.log").open("ab")
        with log:
            self._epmd = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        logger.debug("epmd for %s on port %s", self.node_name, self.epmd_port)

    def probe(self) -> None:
        response = httpx.get(
            f"{self.management_url}/api/overview",
            auth=(self.user, self.password),
            timeout=2.0,
        )
        response.raise_for_status()
        params = pika.URLParameters(self.amqp_url)
        params.socket_timeout = 2.0
        params.blocked_connection_timeout = 2.0
        pika.BlockingConnection(params).close()

    def delete_queues(self) -> list[str]:
        """Delete every queue of every vhost through the management API.

        Returns the names of the queues deleted.
        """
        auth = (self.user, self.password)
        with httpx.Client(base_url=self.management_url, auth=auth, timeout=10) as api:
            listed = api.get("/api/queues", params={"disable_stats": "true"})
            listed.raise_for_status()
            deleted = []
            for queue in listed.json():
                vhost, name = (
                    quote(queue["vhost"], safe=""),
                    quote(queue["name"], safe=""),
                )
                gone = api.delete(f"/api/queues/{vhost}/{name}")
                if gone.status_code != httpx.codes.NOT_FOUND:
                    gone.raise_for_status()
                deleted.append(queue["name"])
        logger.debug("deleted queues %s on %s", deleted, self.node_name)
        return deleted

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self._stop_epmd()

    def _stop_epmd(self) -> None:
        if self._epmd is None or self._epmd.poll() is not None:
            return
        self._epmd.terminate()
        try:
            self._epmd.wait(_EPMD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._epmd.kill()
            self._epmd.wait()

    @property
    def pids(self) -> list[int]:
        """Return the pids of every live process of this node, epmd included."""
        epmd = self._epmd
        own_epmd = [epmd.pid] if epmd is not None and epmd.poll() is None else []
        return [*super().pids, *own_epmd]
