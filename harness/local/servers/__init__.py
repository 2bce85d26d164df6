"""Real server processes (RabbitMQ, Redis, Chroma, Postgres) supervised from here.

Used by the project's test fixtures and by the local target's containers.
"""

from harness.local.servers.base import (
    ServerProcess,
    ServerStartError,
    free_port,
    process_tree,
    start_on_free_ports,
)
from harness.local.servers.chroma import ChromaServer
from harness.local.servers.postgres import PostgresCluster
from harness.local.servers.rabbitmq import RabbitNode
from harness.local.servers.redis import RedisServer

__all__ = [
    "ChromaServer",
    "PostgresCluster",
    "RabbitNode",
    "RedisServer",
    "ServerProcess",
    "ServerStartError",
    "free_port",
    "process_tree",
    "start_on_free_ports",
]
