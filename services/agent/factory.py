"""Assembling an :class:`InterfaceAgent` from its settings."""

from __future__ import annotations

import logging

from services.agent.http_connector import HttpConnector
from services.agent.memory import AgentMemory
from services.agent.runners import runners_for
from services.agent.settings import Settings
from services.agent.state import TaskLedger
from services.agent.worker import InterfaceAgent
from services.shared.ecs_manager import (
    ProtectionError,
    TaskProtection,
    read_task_metadata,
)

logger = logging.getLogger(__name__)


def build_agent(settings: Settings, *, name: str = "euglena-agent") -> InterfaceAgent:
    """Build the agent; raise with the fix when a setting cannot work."""
    memory = None
    if settings.embedding_model_dir is not None:
        memory = AgentMemory(settings.chroma_url, settings.embedding_model_dir)
    else:
        logger.info("EMBEDDING_MODEL_DIR is not set: the agent runs without memory")
    return InterfaceAgent(
        settings,
        ledger=TaskLedger.from_url(settings.redis_url),
        runners=runners_for(settings.agent_runner),
        protection=TaskProtection.for_task(
            settings.ecs_agent_uri,
            settings.ecs_metadata_uri,
            minutes=settings.protection_minutes,
        ),
        http=HttpConnector(),
        memory=memory,
        ecs_task_arn=ecs_task_arn(settings),
        name=name,
    )


def ecs_task_arn(settings: Settings) -> str | None:
    """Return this task's ARN from the task metadata endpoint, if there is one."""
    if not settings.ecs_metadata_uri:
        return None
    try:
        return read_task_metadata(settings.ecs_metadata_uri).task_arn
    except ProtectionError as error:
        logger.warning("running without a task ARN: %s", error)
        return None
