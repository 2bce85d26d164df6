"""Task definitions for each stage's layout of containers.

Stages 0 and 1 run every container in one task; from stage 2 the gateway task
holds gateway, Redis, RabbitMQ and Chroma (and the metrics publisher from stage
3), and the agent task holds the agent alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.aws.security_groups import GATEWAY_PORT
from harness.plan import Feature

SINGLE_FAMILY = "euglena-platform"
GATEWAY_FAMILY = "euglena-gateway"
AGENT_FAMILY = "euglena-agent"

THIRD_PARTY_IMAGES = {
    "redis": "redis:7.2",
    "rabbitmq": "rabbitmq:3.13-management",
    "chroma": "chromadb/chroma:1.5.9",
}


@dataclass(frozen=True)
class HealthTiming:
    """ECS health-check timing; ECS allows interval 5-300 s, timeout 2-60 s,
    retries 1-10 and a start period of 0-300 s."""

    interval: int
    timeout: int
    retries: int
    start_period: int


# What the platform had before stage 1: a slow RabbitMQ start can fail these.
STRICT = HealthTiming(interval=15, timeout=5, retries=3, start_period=15)
# Stage 1: longer than the slowest measured start (RabbitMQ, about 7 s cold,
# far longer on a busy Fargate host) with room for a restart of the node.
LENIENT = HealthTiming(interval=30, timeout=10, retries=5, start_period=180)


@dataclass(frozen=True)
class Context:
    """What a task definition refers to outside itself."""

    images: dict[str, str]  # platform image name -> URI with tag
    execution_role: str
    task_role: str
    log_group: str
    region: str
    environment: dict[str, str]  # shared settings for the platform's services
    rabbitmq_user: str
    rabbitmq_password: str


def _health(command: str, timing: HealthTiming) -> dict[str, Any]:
    return {
        "command": ["CMD-SHELL", command],
        "interval": timing.interval,
        "timeout": timing.timeout,
        "retries": timing.retries,
        "startPeriod": timing.start_period,
    }


def _logging(ctx: Context, stream_prefix: str) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": ctx.log_group,
            "awslogs-region": ctx.region,
            "awslogs-stream-prefix": stream_prefix,
        },
    }


def _env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": key, "value": value} for key, value in sorted(values.items())]


def _http_check(port: int) -> str:
    return (
        'python -c "import urllib.request,sys;'
        f"sys.exit(urllib.request.urlopen('http://localhost:{port}/health',"
        ' timeout=4).status != 200)"'
    )


def _container(name: str, image: str, ctx: Context, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "essential": True,
        "memoryReservation": 256,
        "logConfiguration": _logging(ctx, name),
        **fields,
    }


def backing_containers(ctx: Context, timing: HealthTiming) -> list[dict[str, Any]]:
    """Redis, RabbitMQ and Chroma, each as its official image runs it."""
    rabbit_health = _health("rabbitmq-diagnostics -q ping", timing)
    return [
        _container(
            "redis",
            THIRD_PARTY_IMAGES["redis"],
            ctx,
            portMappings=[{"containerPort": 6379, "protocol": "tcp"}],
            healthCheck=_health("redis-cli ping | grep -q PONG", timing),
        ),
        _container(
            "rabbitmq",
            THIRD_PARTY_IMAGES["rabbitmq"],
            ctx,
            portMappings=[
                {"containerPort": 5672, "protocol": "tcp"},
                {"containerPort": 15672, "protocol": "tcp"},
            ],
            environment=_env(
                {
                    "RABBITMQ_DEFAULT_USER": ctx.rabbitmq_user,
                    "RABBITMQ_DEFAULT_PASS": ctx.rabbitmq_password,
                }
            ),
            healthCheck={
                **rabbit_health,
                "startPeriod": max(rabbit_health["startPeriod"], 30),
            },
            stopTimeout=30,
        ),
        _container(
            "chroma",
            THIRD_PARTY_IMAGES["chroma"],
            ctx,
            portMappings=[{"containerPort": 8000, "protocol": "tcp"}],
            healthCheck=_health("bash -c ':> /dev/tcp/127.0.0.1/8000'", timing),
        ),
    ]


def gateway_container(
    ctx: Context, timing: HealthTiming, env: dict[str, str]
) -> dict[str, Any]:
    return _container(
        "gateway",
        ctx.images["gateway"],
        ctx,
        portMappings=[{"containerPort": GATEWAY_PORT, "protocol": "tcp"}],
        environment=_env({**env, "PORT": str(GATEWAY_PORT)}),
        healthCheck=_health(_http_check(GATEWAY_PORT), timing),
        dependsOn=[
            {"containerName": "redis", "condition": "HEALTHY"},
            {"containerName": "rabbitmq", "condition": "HEALTHY"},
        ],
    )


def agent_container(
    ctx: Context, timing: HealthTiming, env: dict[str, str], *, colocated: bool
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if colocated:
        fields["dependsOn"] = [
            {"containerName": name, "condition": "HEALTHY"}
            for name in ("redis", "rabbitmq", "chroma")
        ]
    return _container(
        "agent",
        ctx.images["agent"],
        ctx,
        environment=_env({**env, "PORT": "8081"}),
        healthCheck=_health(_http_check(8081), timing),
        stopTimeout=120,
        **fields,
    )


def _task(
    family: str, ctx: Context, containers: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "1024",
        "memory": "4096",
        "executionRoleArn": ctx.execution_role,
        "taskRoleArn": ctx.task_role,
        "containerDefinitions": containers,
        **extra,
    }


def service_environment(ctx: Context, host: str) -> dict[str, str]:
    """Addresses of the backing services as seen from a platform container."""
    credentials = f"{ctx.rabbitmq_user}:{ctx.rabbitmq_password}"
    return {
        **ctx.environment,
        "RABBITMQ_URL": f"amqp://{credentials}@{host}:5672/%2F",
        "RABBITMQ_MANAGEMENT_URL": f"http://{host}:15672",
        "RABBITMQ_USER": ctx.rabbitmq_user,
        "RABBITMQ_PASSWORD": ctx.rabbitmq_password,
        "REDIS_URL": f"redis://{host}:6379/0",
        "CHROMA_URL": f"http://{host}:8000",
    }


def build(features: frozenset[Feature], ctx: Context) -> list[dict[str, Any]]:
    """The ``register_task_definition`` arguments for a stage's features."""
    timing = LENIENT if Feature.LENIENT_HEALTH in features else STRICT
    env = service_environment(ctx, "localhost")
    if Feature.SPLIT_SERVICES not in features:
        containers = [
            *backing_containers(ctx, timing),
            gateway_container(ctx, timing, env),
            agent_container(ctx, timing, env, colocated=True),
        ]
        return [_task(SINGLE_FAMILY, ctx, containers)]
    raise NotImplementedError("split services arrive with stage 2")
