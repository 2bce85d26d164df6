"""An empty emulated AWS account per test, for the control plane's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.aws.clients import ClientFactory
from harness.config import Settings, load_settings
from harness.local.moto_server import MotoServer

REGION = "us-east-1"


@pytest.fixture(scope="module")
def _moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def clients(_moto: MotoServer) -> ClientFactory:
    """Clients for an account that has nothing in it but its default VPC."""
    _moto.reset()
    return ClientFactory(REGION, endpoint_url=_moto.endpoint_url)


@pytest.fixture
def settings() -> Settings:
    """Stage 0 settings for a run named ``test0000`` in the test region."""
    return load_settings(stage="0", region=REGION, run_id="test0000", environ={})
