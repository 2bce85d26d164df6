"""Adds the run's environment and failure categories to Allure results.

``python -m harness.report_env RESULTS_DIR`` writes ``environment.properties``
(target, region, versions) and ``categories.json``, which sorts failures into
infrastructure faults, product defects and waits that ran out.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

from harness.config import load_settings

CATEGORIES = [
    {
        "name": "Infrastructure faults",
        "description": "A deploy or AWS call failed: nothing was up to test.",
        "matchedStatuses": ["broken", "failed"],
        "messageRegex": ".*(DeployError|ConfigError|ClientError|EndpointConnection).*",
    },
    {
        "name": "Waits that ran out",
        "description": "Something did not become true before its deadline.",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": ".*(NotReadyError|RetryError|did not .* within|Timeout).*",
    },
    {
        "name": "Product defects",
        "description": "The platform answered, and answered wrong.",
        "matchedStatuses": ["failed"],
        "messageRegex": ".*AssertionError.*",
    },
]


def properties() -> dict[str, str]:
    settings = load_settings()
    return {
        "target": settings.target,
        "region": settings.region,
        "python": platform.python_version(),
        "moto": version("moto"),
        "boto3": version("boto3"),
        "pytest": version("pytest"),
    }


def write(results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}={value}" for key, value in properties().items()]
    (results / "environment.properties").write_text("\n".join(lines) + "\n")
    (results / "categories.json").write_text(json.dumps(CATEGORIES, indent=2))


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/allure-results"))
