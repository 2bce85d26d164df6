"""The deployer: first deploy, update, refusal and roll-back, in an emulated account."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from harness.aws.clients import ClientFactory
from harness.config import Settings
from harness.deploy import Deployer
from harness.errors import ConfigError, DeployError
from harness.probes.inventory import counts, inventory


def _fail(operation: str, code: str) -> Any:
    def handler(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": code, "Message": f"{operation} refused by the test"}},
            operation,
        )

    return handler


def _environment(clients: ClientFactory, family: str) -> dict[str, str]:
    ecs = clients.client("ecs")
    definition = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    gateway = next(
        c for c in definition["containerDefinitions"] if c["name"] == "gateway"
    )
    return {item["name"]: item["value"] for item in gateway["environment"]}


def test_failed_first_deploy_removes_what_it_made(
    clients: ClientFactory, settings: Settings
) -> None:
    """A first deploy whose last step fails leaves nothing tagged with the run."""
    clients.client("ecs").meta.events.register(
        "before-call.ecs.CreateService", _fail("CreateService", "AccessDeniedException")
    )

    with pytest.raises(DeployError, match="CreateService refused by the test"):
        Deployer(settings, clients).deploy()

    assert inventory(clients, settings) == {}


def test_unbuilt_stage_is_refused_before_any_call(
    clients: ClientFactory, settings: Settings
) -> None:
    """A stage whose deploy is not built is refused, listing the deployable ones."""
    later = settings.with_stage("9")

    with pytest.raises(ConfigError, match=r"stage 9 .*deployable stages: 0, 0.5, 1"):
        Deployer(later, clients)

    assert inventory(clients, later) == {}


def test_update_keeps_credentials_and_adds_a_revision(
    clients: ClientFactory, settings: Settings
) -> None:
    """A second deploy registers revision 2 with the first one's secrets."""
    first = Deployer(settings, clients).deploy()
    before = _environment(clients, "euglena-platform")

    second = Deployer(settings, clients).deploy()

    after = _environment(clients, "euglena-platform:2")
    assert first.created
    assert not second.created
    assert after["JWT_SECRET"] == before["JWT_SECRET"]
    assert after["RABBITMQ_PASSWORD"] == before["RABBITMQ_PASSWORD"]
    assert second.outputs["jwt_secret"] == first.outputs["jwt_secret"]


def test_two_runs_share_an_account_without_touching_each_other(
    clients: ClientFactory, settings: Settings
) -> None:
    """Tearing one run down leaves another run in the same account whole."""
    second = replace(settings, run_id="othr0000", cluster_name="euglena-othr0000")
    other = Deployer(second, clients)
    Deployer(settings, clients).deploy()
    other.deploy()
    kept = counts(inventory(clients, settings))

    other.teardown()

    assert inventory(clients, second) == {}
    assert counts(inventory(clients, settings)) == kept
