"""The run's settings, read once from options, the environment and ``aws.env``.

Precedence, highest first: command-line options, environment variables, the
``aws.env`` file, defaults. Everything is validated here, before any AWS call,
so a bad setting never leaves a half-made deployment behind.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import boto3
from dotenv.parser import parse_stream

from harness.errors import ConfigError
from harness.plan import get_stage

Target = Literal["local", "aws"]
TARGETS: tuple[Target, ...] = ("local", "aws")

ENV_FILE_KEYS = (
    "AWS_REGION",
    "VPC_NAME",
    "VPC_ID",
    "SUBNET_NAMES",
    "SECURITY_GROUP_NAMES",
    "IMAGE_TAG",
    "SUPABASE_URL",
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_KEY",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_DB_URL",
    "EXTERNAL_CHECK_URL",
)
SECRET_KEYS = frozenset(
    {
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_KEY",
        "SUPABASE_JWT_SECRET",
        "SUPABASE_DB_URL",
    }
)
DEFAULT_REGION = "us-east-1"
RUN_ID_PATTERN = re.compile(r"^[a-z0-9]{4,12}$")
TAG_PROJECT = "euglena:project"
TAG_RUN = "euglena:run-id"
TAG_STAGE = "euglena:stage"
TAG_CREATED = "euglena:created"


@dataclass(frozen=True)
class Settings:
    """Everything a deploy needs to know, fixed for the whole run."""

    target: Target = "local"
    region: str = DEFAULT_REGION
    stage: str = "0"
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    cluster_name: str = "euglena-cluster"
    vpc_name: str | None = None
    vpc_id: str | None = None
    subnet_names: tuple[str, ...] = ()
    security_group_names: tuple[str, ...] = ()
    image_tag: str = "latest"
    build: bool = False
    external_check_url: str | None = None
    supabase_url: str | None = None
    supabase_anon_key: str | None = field(default=None, repr=False)
    supabase_service_key: str | None = field(default=None, repr=False)
    supabase_jwt_secret: str | None = field(default=None, repr=False)
    supabase_db_url: str | None = field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        """The name prefix of every resource this run creates."""
        return f"euglena-{self.run_id}"

    def tags(self, created: int) -> dict[str, str]:
        """The tags that mark a resource as this run's."""
        return {
            TAG_PROJECT: "euglena",
            TAG_RUN: self.run_id,
            TAG_STAGE: self.stage,
            TAG_CREATED: str(created),
        }

    def with_stage(self, stage: str) -> Settings:
        get_stage(stage)
        return replace(self, stage=stage)


def read_env_file(path: Path) -> dict[str, str]:
    """The keys of an ``aws.env`` file; a malformed line or unknown key is an error."""
    if not path.is_file():
        raise ConfigError(
            f"env file {path} does not exist; create it or drop --env-file",
        )
    values: dict[str, str] = {}
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                line = binding.original.line
                raise ConfigError(
                    f"{path}:{line}: cannot parse {binding.original.string.strip()!r};"
                    " write each setting as KEY=value"
                )
            if binding.key is None:
                continue
            if binding.key not in ENV_FILE_KEYS:
                raise ConfigError(
                    f"{path}: unknown key {binding.key!r}; known keys are "
                    + ", ".join(ENV_FILE_KEYS)
                )
            values[binding.key] = binding.value or ""
    return values


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def known_regions() -> frozenset[str]:
    session = boto3.session.Session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ecs", partition_name=partition))
    return frozenset(regions)


def _check(settings: Settings) -> None:
    if settings.target not in TARGETS:
        raise ConfigError(
            f"unknown target {settings.target!r}; use --target local or --target aws"
        )
    get_stage(settings.stage)
    if settings.region not in known_regions():
        raise ConfigError(
            f"unknown AWS region {settings.region!r}; set AWS_REGION to a real region"
            " such as us-east-1 or eu-west-1"
        )
    if not RUN_ID_PATTERN.match(settings.run_id):
        raise ConfigError(
            f"run id {settings.run_id!r} must be 4-12 lowercase letters or digits,"
            " since it goes into resource names"
        )
    if settings.vpc_name and settings.vpc_id:
        raise ConfigError("set VPC_NAME or VPC_ID, not both")


def load_settings(
    *,
    target: str | None = None,
    region: str | None = None,
    stage: str | None = None,
    run_id: str | None = None,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    build: bool = False,
) -> Settings:
    """Settings from options, then the environment, then ``env_file``."""
    environ = os.environ if environ is None else environ
    file_values = read_env_file(env_file) if env_file else {}

    def pick(key: str) -> str | None:
        return environ.get(key) or file_values.get(key) or None

    settings = Settings(
        target=(target or environ.get("EUGLENA_TARGET") or "local"),  # type: ignore[arg-type]
        region=region or pick("AWS_REGION") or DEFAULT_REGION,
        stage=stage or environ.get("EUGLENA_STAGE") or "0",
        run_id=run_id or environ.get("EUGLENA_RUN_ID") or secrets.token_hex(4),
        cluster_name=environ.get("EUGLENA_CLUSTER") or "euglena-cluster",
        vpc_name=pick("VPC_NAME"),
        vpc_id=pick("VPC_ID"),
        subnet_names=_split(pick("SUBNET_NAMES")),
        security_group_names=_split(pick("SECURITY_GROUP_NAMES")),
        image_tag=pick("IMAGE_TAG") or "latest",
        build=build,
        external_check_url=pick("EXTERNAL_CHECK_URL"),
        supabase_url=pick("SUPABASE_URL"),
        supabase_anon_key=pick("SUPABASE_ANON_KEY"),
        supabase_service_key=pick("SUPABASE_SERVICE_KEY"),
        supabase_jwt_secret=pick("SUPABASE_JWT_SECRET"),
        supabase_db_url=pick("SUPABASE_DB_URL"),
    )
    _check(settings)
    return settings
