"""Teardown removes everything tagged with its run and nothing of any other run."""

from __future__ import annotations

from harness.deployment import Deployment
from harness.probes.inventory import inventory


def test_teardown_leaves_nothing_of_the_run(deployment: Deployment) -> None:
    """A second run torn down leaves nothing behind and this run intact."""
    other = deployment.other_run("gone0000")
    deployer = deployment.deployer(other)
    deployer.deploy()
    assert inventory(deployment.clients, other), "the second run created nothing"

    deployer.teardown()

    assert inventory(deployment.clients, other) == {}
    assert inventory(deployment.clients, deployment.settings).get("ecs:service")
