"""Skip mode: instead of running, report whether each dependency can be reached.

A mandate containing the skip phrase (``AGENT_SKIP_PHRASE``) is not run: its
result is a connectivity report for RabbitMQ, Redis, Chroma and the external
URL (``EXTERNAL_CHECK_URL``), also logged as one JSON line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from services.agent.http_connector import USER_AGENT
from services.agent.settings import Settings
from services.shared import health

logger = logging.getLogger(__name__)

REPORT_EVENT = "connectivity_report"


def is_skip(mandate: str, settings: Settings) -> bool:
    """Return True when ``mandate`` asks for skip mode."""
    return settings.skip_phrase in mandate


def check_external(url: str) -> health.CheckResult:
    """Check the external URL as the agent's HTTP connector would fetch it."""
    if not url:
        return health.CheckResult(False, 0.0, "EXTERNAL_CHECK_URL is not set")
    return health.check_http(url, headers={"User-Agent": USER_AGENT})


def connectivity(settings: Settings) -> dict[str, health.CheckResult]:
    """Check every dependency of the agent, side by side."""
    return health.run_checks(
        {
            "rabbitmq": lambda: health.check_rabbitmq(settings.rabbitmq_url),
            "redis": lambda: health.check_redis(settings.redis_url),
            "chroma": lambda: health.check_chroma(settings.chroma_url),
            "external": lambda: check_external(settings.external_check_url),
        }
    )


def skip_report(task_id: str, settings: Settings) -> dict[str, Any]:
    """Return the skip-mode result of ``task_id`` and log it as one JSON line."""
    checks = connectivity(settings)
    report = {
        "mode": "skip",
        "message": "skip phrase found: the agent did not run; "
        "this is a connectivity report",
        "all_ok": health.all_ok(checks),
        "external_url": settings.external_check_url or None,
        "connectivity": {name: result.as_dict() for name, result in checks.items()},
    }
    logger.info("%s", json.dumps({"event": REPORT_EVENT, "task_id": task_id, **report}))
    return report
