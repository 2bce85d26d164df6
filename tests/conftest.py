"""Real RabbitMQ, Redis, Chroma and Postgres processes for the project's tests.

Each fixture starts its server the first time a test asks for it, once per
pytest session and per xdist worker, on free loopback ports and in a temporary
directory of its own, and stops it at the end of the session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from harness.local.servers import (
    ChromaServer,
    PostgresCluster,
    RabbitNode,
    RedisServer,
    free_port,
    start_on_free_ports,
)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A RabbitMQ node with the management plugin, user and password guest."""
    data_dir = tmp_path_factory.mktemp("rabbitmq")
    node_name = f"euglena-{_worker()}-{os.getpid()}@localhost"
    node = start_on_free_ports(
        lambda: RabbitNode(
            data_dir,
            amqp_port=free_port(),
            management_port=free_port(),
            dist_port=free_port(),
            epmd_port=free_port(),
            node_name=node_name,
        )
    )
    yield node
    node.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server with append-only persistence, so a restart keeps its data."""
    data_dir = tmp_path_factory.mktemp("redis")
    server = start_on_free_ports(
        lambda: RedisServer(data_dir, port=free_port(), appendonly=True)
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A Chroma server persisting to a temporary directory."""
    data_dir = tmp_path_factory.mktemp("chroma")
    server = start_on_free_ports(lambda: ChromaServer(data_dir, port=free_port()))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PostgresCluster]:
    """A Postgres cluster of its own; connect with its ``dsn`` as superuser."""
    data_dir = tmp_path_factory.mktemp("postgres")
    password = secrets.token_urlsafe(16)
    cluster = start_on_free_ports(
        lambda: PostgresCluster(data_dir, port=free_port(), password=password)
    )
    yield cluster
    cluster.stop()


@pytest.fixture
def clean_rabbitmq(rabbitmq: RabbitNode) -> RabbitNode:
    """The session's RabbitMQ node, running and without any queue."""
    rabbitmq.start()
    rabbitmq.delete_queues()
    return rabbitmq


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The session's Redis server, running and empty."""
    redis_server.start()
    redis_server.flush_all()
    return redis_server
