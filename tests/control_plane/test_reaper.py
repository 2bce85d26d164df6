"""The reaper removes what earlier runs left, found by tag, and spares recent runs."""

from __future__ import annotations

from dataclasses import replace

from harness.aws.clients import ClientFactory
from harness.config import Settings
from harness.deploy import Deployer
from harness.probes.inventory import inventory
from harness.teardown import Reaper, reap_old_runs


def test_left_over_run_is_reaped_whole(
    clients: ClientFactory, settings: Settings
) -> None:
    """A run never torn down is removed entirely once it is older than the bound."""
    Deployer(settings, clients).deploy()
    assert inventory(clients, settings)

    removed = reap_old_runs(clients, settings, older_than_minutes=0)

    assert set(removed) == {settings.run_id}
    assert inventory(clients, settings) == {}


def test_recent_run_is_spared(clients: ClientFactory, settings: Settings) -> None:
    """A run younger than the bound keeps every resource."""
    Deployer(settings, clients).deploy()
    before = inventory(clients, settings)

    removed = reap_old_runs(clients, settings, older_than_minutes=60)

    assert removed == {}
    assert inventory(clients, settings) == before


def test_runs_are_listed_by_their_tags(
    clients: ClientFactory, settings: Settings
) -> None:
    """Every run with tagged resources is listed with its creation time."""
    second = replace(settings, run_id="othr0000", cluster_name="euglena-othr0000")
    Deployer(settings, clients).deploy()
    Deployer(second, clients).deploy()

    runs = Reaper(clients, settings).runs()

    assert set(runs) == {"test0000", "othr0000"}
    assert all(created > 0 for created in runs.values())
