"""The real server processes start, serve, keep or lose data as told, and stop
without leaving any process behind."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import chromadb
import pika
import psutil
import psycopg
import pytest
import redis

from harness.local.servers import (
    ChromaServer,
    PostgresCluster,
    RabbitNode,
    RedisServer,
    ServerProcess,
    ServerStartError,
    free_port,
)

SERVER_FIXTURES = ["rabbitmq", "redis_server", "chroma_server", "postgres_cluster"]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [
        proc
        for proc in procs
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port on which this process already listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_rabbitmq_publishes_and_delivers_a_message(clean_rabbitmq: RabbitNode) -> None:
    """A message published to the node's queue is delivered back unchanged."""
    queue = f"servers.{uuid.uuid4().hex}"

    with pika.BlockingConnection(pika.URLParameters(clean_rabbitmq.amqp_url)) as conn:
        channel = conn.channel()
        channel.queue_declare(queue)
        channel.basic_publish("", queue, b"hello")
        _, _, body = next(channel.consume(queue, auto_ack=True, inactivity_timeout=5))

    assert body == b"hello"


def test_rabbitmq_delete_queues_removes_declared_queues(rabbitmq: RabbitNode) -> None:
    """delete_queues removes a queue a client declared, so a passive declare fails."""
    queue = f"servers.{uuid.uuid4().hex}"
    with pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url)) as conn:
        conn.channel().queue_declare(queue, durable=True)

    deleted = rabbitmq.delete_queues()

    assert queue in deleted
    with (
        pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url)) as conn,
        pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"),
    ):
        conn.channel().queue_declare(queue, passive=True)


def test_rabbitmq_restart_keeps_persistent_message(clean_rabbitmq: RabbitNode) -> None:
    """A persistent message in a durable queue is still there after a restart."""
    queue = "servers.durable"
    with pika.BlockingConnection(pika.URLParameters(clean_rabbitmq.amqp_url)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True)
        persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        channel.basic_publish("", queue, b"survivor", properties=persistent)

    clean_rabbitmq.restart()

    with pika.BlockingConnection(pika.URLParameters(clean_rabbitmq.amqp_url)) as conn:
        _, _, body = conn.channel().basic_get(queue, auto_ack=True)
    assert body == b"survivor"


def test_rabbitmq_user_is_accepted_from_any_host(rabbitmq: RabbitNode) -> None:
    """The node's config lets its user connect from other hosts, as the image does."""
    config = (rabbitmq.data_dir / "rabbitmq.conf").read_text()

    assert "loopback_users = none" in config
    assert f"default_user = {rabbitmq.user}" in config


@pytest.fixture
def redis_client(clean_redis: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's emptied Redis server."""
    client = redis.Redis.from_url(clean_redis.url)
    yield client
    client.close()


def test_redis_sets_and_gets_a_key(redis_client: redis.Redis) -> None:
    """A key written to the server reads back with its value."""
    redis_client.set("greeting", "hello")

    assert redis_client.get("greeting") == b"hello"


def test_redis_restart_with_appendonly_keeps_a_key(
    clean_redis: RedisServer, redis_client: redis.Redis
) -> None:
    """With append-only persistence a key survives a plain restart."""
    redis_client.set("kept", "yes")

    clean_redis.restart()

    assert redis_client.get("kept") == b"yes"


def test_redis_restart_dropping_data_loses_keys(
    clean_redis: RedisServer, redis_client: redis.Redis
) -> None:
    """A restart with drop_data comes back empty, as after a lost volume."""
    redis_client.set("doomed", "yes")

    clean_redis.restart(drop_data=True)

    assert redis_client.dbsize() == 0
    assert clean_redis.log_path.exists()


def test_chroma_answers_heartbeat_and_stores_embeddings(
    chroma_server: ChromaServer,
) -> None:
    """Chroma answers its heartbeat and returns records added with embeddings."""
    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port)
    name = f"servers-{uuid.uuid4().hex[:12]}"
    collection = client.create_collection(name, embedding_function=None)
    vectors: list[Sequence[float]] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    near_a: list[Sequence[float]] = [[0.9, 0.1, 0.0]]

    collection.add(
        ids=["a", "b"],
        embeddings=vectors,
        documents=["first", "second"],
    )
    found = collection.query(query_embeddings=near_a, n_results=1)

    assert client.heartbeat() > 0
    assert collection.get(ids=["b"])["documents"] == ["second"]
    assert found["ids"] == [["a"]]


def test_postgres_answers_queries_and_keeps_rows_over_restart(
    postgres_cluster: PostgresCluster,
) -> None:
    """Rows committed before a restart are read back after it."""
    with psycopg.connect(postgres_cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('row')")

    postgres_cluster.restart()

    with psycopg.connect(postgres_cluster.dsn) as conn:
        rows = conn.execute("SELECT value FROM kept").fetchall()
    assert ("row",) in rows


def test_postgres_refuses_a_wrong_password(postgres_cluster: PostgresCluster) -> None:
    """Connections over TCP must present the superuser's password."""
    wrong = postgres_cluster.dsn.replace(postgres_cluster.password, "wrong")

    with pytest.raises(psycopg.OperationalError, match="password authentication"):
        psycopg.connect(wrong, connect_timeout=5)


@pytest.mark.parametrize("fixture_name", SERVER_FIXTURES)
def test_stop_leaves_no_process_behind(
    request: pytest.FixtureRequest, fixture_name: str
) -> None:
    """After stop no process of the server's tree is alive; start brings it back."""
    server: ServerProcess = request.getfixturevalue(fixture_name)
    tree = [psutil.Process(pid) for pid in server.pids]

    server.stop()
    left = _alive(tree)
    server.start()

    assert tree
    assert left == []
    assert server.is_running


def test_start_on_a_taken_port_fails_with_the_log_tail(
    tmp_path: Path, taken_port: int
) -> None:
    """A server whose port is taken fails to start and says why, from its log."""
    server = RedisServer(tmp_path, port=taken_port, start_timeout=10)

    with pytest.raises(ServerStartError, match="Address already in use") as failure:
        server.start()

    assert str(server.log_path) in str(failure.value)
    assert not server.is_running


def test_start_on_a_port_another_server_answers_fails(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A server whose port another server of its kind answers is not taken as ready."""
    intruder = RedisServer(tmp_path, port=redis_server.port, start_timeout=10)

    with pytest.raises(ServerStartError, match="Address already in use"):
        intruder.start()

    assert not intruder.is_running
    assert redis_server.is_running


def test_postgres_on_a_taken_port_fails_with_the_log_tail(
    tmp_path: Path, taken_port: int
) -> None:
    """Postgres on a taken port fails to start and its error quotes the log."""
    cluster = PostgresCluster(
        tmp_path, port=taken_port, password="pw", start_timeout=20
    )

    with pytest.raises(ServerStartError, match=r"could not bind|could not create"):
        cluster.start()

    assert not cluster.is_running


def test_start_in_a_missing_namespace_fails_naming_it(tmp_path: Path) -> None:
    """A server told to run in a namespace that does not exist fails, naming it."""
    namespace = f"euglena-absent-{uuid.uuid4().hex[:8]}"
    server = RedisServer(tmp_path, port=free_port(), netns=namespace, start_timeout=10)

    with pytest.raises(ServerStartError, match=namespace):
        server.start()


def test_start_of_a_missing_program_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose program is not installed fails with a message naming it."""
    monkeypatch.setattr(
        "harness.local.servers.redis.REDIS_SERVER", "euglena-no-such-redis-server"
    )
    server = RedisServer(tmp_path, port=free_port())

    with pytest.raises(ServerStartError, match="euglena-no-such-redis-server"):
        server.start()

    assert not server.is_running


def test_free_port_returns_a_bindable_port() -> None:
    """free_port gives a port that can be bound right away."""
    port = free_port()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))

    assert 0 < port < 65536
