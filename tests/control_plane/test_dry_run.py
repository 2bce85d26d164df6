"""The dry-run plan: every mutating AWS call of a first deploy, pinned per stage.

A change to what a deploy does to an account shows up here as a diff of the
plan, which is how calls meant for the ``aws`` target are reviewed. After an
intended change, rewrite the plans with ``EUGLENA_UPDATE_PLANS=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.config import load_settings
from harness.deploy import DEPLOYABLE
from harness.dry_run import plan

PLANS = Path(__file__).parent / "plans"
RUN_ID = "plan0000"


def _rendered(stage: str) -> str:
    settings = load_settings(stage=stage, run_id=RUN_ID, environ={})
    return "".join(f"{call}\n" for call in plan(settings))


@pytest.mark.parametrize("stage", DEPLOYABLE)
def test_plan_matches_the_reviewed_plan(stage: str) -> None:
    """The calls a first deploy makes equal the plan kept beside this test."""
    expected = PLANS / f"stage{stage.replace('.', '_')}.txt"

    rendered = _rendered(stage)

    if os.environ.get("EUGLENA_UPDATE_PLANS") == "1":
        expected.write_text(rendered, encoding="utf-8")
    assert expected.is_file(), f"no plan {expected}; write it: EUGLENA_UPDATE_PLANS=1"
    assert rendered == expected.read_text(encoding="utf-8")


def test_plan_for_aws_needs_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan for the aws target is made in a scratch account, never a real one."""
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    settings = load_settings(target="aws", stage="0", run_id=RUN_ID, environ={})

    calls = plan(settings)

    assert str(calls[-1]).startswith("ecs CreateService serviceName=euglena-service")
