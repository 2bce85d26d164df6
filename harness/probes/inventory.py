"""Which of a run's resources exist, counted by kind."""

from __future__ import annotations

from dataclasses import replace

from harness.aws.clients import ClientFactory
from harness.config import Settings
from harness.teardown import Reaper


def inventory(
    clients: ClientFactory, settings: Settings, run_id: str | None = None
) -> dict[str, list[str]]:
    """Live resources of the run (``settings``' own by default), by kind."""
    run = run_id or settings.run_id
    return Reaper(clients, replace(settings, run_id=run)).existing(run)


def counts(found: dict[str, list[str]]) -> dict[str, int]:
    return {kind: len(items) for kind, items in sorted(found.items())}
