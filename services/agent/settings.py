"""The agent's settings, read once from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.shared import config

DEFAULT_SKIP_PHRASE = "skipskipskip"


@dataclass(frozen=True)
class Settings:
    """Where the agent's dependencies are and how it behaves."""

    rabbitmq_url: str
    redis_url: str
    chroma_url: str
    skip_phrase: str = DEFAULT_SKIP_PHRASE
    external_check_url: str = ""
    agent_runner: str = ""
    embedding_model_dir: Path | None = None
    protection_minutes: int = 60
    port: int = 8081
    shutdown_grace_seconds: float = 25.0
    store_retry_seconds: float = 300.0
    ecs_agent_uri: str = ""
    ecs_metadata_uri: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (the process environment by default)."""
        env = config.environment(environ)
        model_dir = config.optional(env, "EMBEDDING_MODEL_DIR")
        return cls(
            rabbitmq_url=config.required(
                env, "RABBITMQ_URL", "set it to e.g. amqp://guest:guest@host:5672/%2F"
            ),
            redis_url=config.required(
                env, "REDIS_URL", "set it to e.g. redis://host:6379/0"
            ),
            chroma_url=config.required(
                env, "CHROMA_URL", "set it to e.g. http://host:8000"
            ),
            skip_phrase=config.optional(env, "AGENT_SKIP_PHRASE", DEFAULT_SKIP_PHRASE),
            external_check_url=config.optional(env, "EXTERNAL_CHECK_URL"),
            agent_runner=config.optional(env, "AGENT_RUNNER"),
            embedding_model_dir=Path(model_dir) if model_dir else None,
            protection_minutes=config.integer(env, "PROTECTION_MINUTES", 60, minimum=1),
            port=config.integer(env, "PORT", 8081, minimum=0),
            shutdown_grace_seconds=config.number(env, "SHUTDOWN_GRACE_SECONDS", 25.0),
            ecs_agent_uri=config.optional(env, "ECS_AGENT_URI"),
            ecs_metadata_uri=config.optional(env, "ECS_CONTAINER_METADATA_URI_V4"),
        )
