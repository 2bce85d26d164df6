"""The metrics publisher's settings, read once from the environment at start.

``RABBITMQ_MANAGEMENT_URL`` is the management API without credentials
(``http://rabbitmq:15672``) and ``RABBITMQ_USER`` / ``RABBITMQ_PASSWORD`` log in
to it; credentials inside the URL are accepted too. ``RABBITMQ_URL`` (AMQP),
optional, lets the publisher count ready messages over AMQP while the
management API is down. ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``) names CloudWatch's region; ``AWS_ENDPOINT_URL``, set on
the local target only, is honoured by boto3 itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.shared import config
from services.shared.rabbit_depth import ManagementEndpoint

DEFAULT_PORT = 8082
DEFAULT_PUBLISH_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class Settings:
    """Where to read the queue, where to publish, and how often."""

    management: ManagementEndpoint
    region: str
    publish_interval_seconds: float = DEFAULT_PUBLISH_INTERVAL_SECONDS
    port: int = DEFAULT_PORT
    amqp_url: str = field(default="", repr=False)  # holds the password

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = config.environment(environ)
        url = config.required(
            env,
            "RABBITMQ_MANAGEMENT_URL",
            "set the management API's URL, e.g. http://rabbitmq:15672",
        )
        try:
            management = ManagementEndpoint.from_url(
                url,
                config.optional(env, "RABBITMQ_USER") or None,
                config.optional(env, "RABBITMQ_PASSWORD") or None,
            )
        except ValueError as error:
            raise config.SettingsError(str(error)) from None
        region = config.optional(env, "AWS_REGION") or config.required(
            env, "AWS_DEFAULT_REGION", "set AWS_REGION to CloudWatch's region"
        )
        interval = config.number(
            env,
            "PUBLISH_INTERVAL_SECONDS",
            DEFAULT_PUBLISH_INTERVAL_SECONDS,
            minimum=1.0,
        )
        port = config.integer(env, "PORT", DEFAULT_PORT, minimum=1)
        amqp_url = config.optional(env, "RABBITMQ_URL")
        return cls(management, region, interval, port, amqp_url)
