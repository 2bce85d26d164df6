"""What an agent does with a mandate: the runners, chosen by the task's kind.

A runner is a callable taking a :class:`TaskContext` and returning a
JSON-serialisable result; raising fails the task with the error's message.
``agent`` tasks run the built-in :func:`run_agent` unless ``AGENT_RUNNER``
(``module:callable``) names another; ``synthetic`` tasks run
:func:`run_synthetic`, the load workload.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.agent.http_connector import HttpConnector
from services.agent.memory import AgentMemory
from services.shared.tasks import TaskMessage

logger = logging.getLogger(__name__)

URL_PATTERN = re.compile(r"https?://[^\s<>\"')\]]+")
MAX_URLS = 5
EXCERPT_CHARS = 500


@dataclass(frozen=True)
class TaskContext:
    """What a runner gets: the task, which attempt this is, and the agent's tools."""

    message: TaskMessage
    attempt: int
    ecs_task_arn: str | None
    http: HttpConnector
    memory: AgentMemory | None


Runner = Callable[[TaskContext], Any]


class SyntheticFailureError(RuntimeError):
    """The synthetic workload failed because it was asked to."""


class RunnerConfigError(ValueError):
    """``AGENT_RUNNER`` does not name a callable; the message says how to fix it."""


def run_synthetic(context: TaskContext) -> dict[str, Any]:
    """Work for ``params.seconds``, then fail if ``params.fail``, else report."""
    params = context.message.params
    seconds = float(params.get("seconds", 0))
    logger.info(
        "synthetic execution task_id=%s attempt=%s ecs_task=%s seconds=%s",
        context.message.task_id,
        context.attempt,
        context.ecs_task_arn or "-",
        seconds,
    )
    time.sleep(seconds)
    if params.get("fail"):
        raise SyntheticFailureError("failed on purpose (params.fail is true)")
    return {
        "worked_seconds": seconds,
        "attempt": context.attempt,
        "ecs_task_arn": context.ecs_task_arn,
    }


def run_agent(context: TaskContext) -> dict[str, Any]:
    """Fetch the URLs in the mandate, recall related memories, remember this one."""
    mandate = context.message.mandate
    fetched = [fetch(context.http, url) for url in find_urls(mandate)]
    recalled: list[dict[str, Any]] = []
    memory_error = None
    if context.memory is not None:
        try:
            recalled = recall_and_remember(context, fetched)
        except Exception as error:
            logger.warning(
                "memory unavailable for %s: %r", context.message.task_id, error
            )
            memory_error = f"{type(error).__name__}: {error}"
    return {
        "answer": summarise(mandate, fetched, recalled),
        "fetched": fetched,
        "recalled": recalled,
        "memory_error": memory_error,
    }


def find_urls(text: str) -> list[str]:
    """Return the distinct http(s) URLs in ``text``, in order, at most five."""
    urls = dict.fromkeys(match.rstrip(".,;:!?") for match in URL_PATTERN.findall(text))
    return list(urls)[:MAX_URLS]


def fetch(http: HttpConnector, url: str) -> dict[str, Any]:
    """Fetch ``url`` and return its status and an excerpt, or the error."""
    try:
        page = http.get(url)
    except Exception as error:
        return {"url": url, "ok": False, "error": f"{type(error).__name__}: {error}"}
    return {
        "url": url,
        "ok": page.status < 400,
        "status": page.status,
        "excerpt": " ".join(page.text.split())[:EXCERPT_CHARS],
    }


def recall_and_remember(
    context: TaskContext, fetched: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Recall memories related to the mandate, then remember mandate and pages."""
    assert context.memory is not None
    message = context.message
    recalled = [
        {"memory_id": item.memory_id, "text": item.text, "distance": item.distance}
        for item in context.memory.recall(message.mandate)
    ]
    pages = " ".join(page.get("excerpt", "") for page in fetched)
    context.memory.remember(
        message.task_id,
        f"{message.mandate}\n{pages}".strip(),
        user_id=message.user_id,
    )
    return recalled


def summarise(
    mandate: str, fetched: list[dict[str, Any]], recalled: list[dict[str, Any]]
) -> str:
    """Say in one sentence what the agent did."""
    ok = sum(1 for page in fetched if page["ok"])
    return (
        f"Fetched {ok} of {len(fetched)} linked pages and recalled "
        f"{len(recalled)} related memories for a mandate of {len(mandate)} characters."
    )


def load_runner(spec: str) -> Runner:
    """Return the callable named by ``module:callable``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise RunnerConfigError(
            f"AGENT_RUNNER={spec!r} must look like package.module:callable"
        )
    try:
        runner = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise RunnerConfigError(
            f"AGENT_RUNNER={spec!r} cannot be loaded: {error}"
        ) from None
    if not callable(runner):
        raise RunnerConfigError(f"AGENT_RUNNER={spec!r} is not callable")
    return runner  # type: ignore[no-any-return]


def runners_for(agent_runner: str) -> dict[str, Runner]:
    """Return the runner of each task kind, honouring an ``AGENT_RUNNER`` override."""
    agent = load_runner(agent_runner) if agent_runner else run_agent
    return {"agent": agent, "synthetic": run_synthetic}
