"""The gateway's settings, read once from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.shared import config


@dataclass(frozen=True)
class Settings:
    """Where the gateway's dependencies are and the limits it enforces."""

    redis_url: str
    rabbitmq_url: str
    jwt_secret: str = field(repr=False)
    port: int = 8080
    max_mandate_bytes: int = 16 * 1024
    max_params_bytes: int = 8 * 1024
    max_body_bytes: int = 64 * 1024
    publish_attempts: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (the process environment by default)."""
        env = config.environment(environ)
        return cls(
            redis_url=config.required(
                env, "REDIS_URL", "set it to e.g. redis://localhost:6379/0"
            ),
            rabbitmq_url=config.required(
                env, "RABBITMQ_URL", "set it to e.g. amqp://guest:guest@host:5672/%2F"
            ),
            jwt_secret=config.required(
                env, "JWT_SECRET", "set it to the HS256 secret that signs user tokens"
            ),
            port=config.integer(env, "PORT", 8080, minimum=1),
            max_mandate_bytes=config.integer(
                env, "MAX_MANDATE_BYTES", 16 * 1024, minimum=1
            ),
            max_params_bytes=config.integer(
                env, "MAX_PARAMS_BYTES", 8 * 1024, minimum=2
            ),
        )
