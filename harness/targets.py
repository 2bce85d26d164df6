"""Opening an account on a target: real AWS, or the local emulation.

This is the one place that knows which target is in use; everything past it
sees only a client factory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.aws.clients import CallObserver, ClientFactory
from harness.config import Settings
from harness.faults import Faults, LocalFaults, UnreachableFaults

logger = logging.getLogger(__name__)

# Data planes of the emulated accounts open in this process, by endpoint URL.
_planes: dict[str, Any] = {}


def published(clients: ClientFactory, outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs with every address made one a user on this host can reach.

    On ``aws`` they are as deployed; on ``local`` the load balancer's name
    becomes the local listener that stands for it.
    """
    plane = _planes.get(clients.endpoint_url or "")
    return plane.publish(outputs) if plane is not None else outputs


def faults_for(clients: ClientFactory) -> Faults:
    """The faults a test can inject into the account the clients reach."""
    plane = _planes.get(clients.endpoint_url or "")
    if plane is not None:
        return LocalFaults(plane)
    if clients.endpoint_url:
        return UnreachableFaults(
            "the local deployment runs in another process (reuse of an `up`)"
        )
    return UnreachableFaults(
        "on aws a container is reached only through ECS Exec, which this"
        " harness does not drive"
    )


@contextmanager
def open_account(
    settings: Settings,
    *,
    observer: CallObserver | None = None,
    scratch: bool = False,
    runs_tasks: bool = True,
) -> Iterator[ClientFactory]:
    """Clients for the settings' target; ``scratch`` forces a fresh emulated account.

    On ``local`` an emulated account lives as long as the context, and its
    data plane runs every service deployed into it, unless ``runs_tasks`` is
    false (the caller only reads); a ``scratch`` account only answers the API
    calls, for a plan. On ``aws`` the default credential chain reaches the real
    account.
    """
    if settings.target == "aws" and not scratch:
        yield ClientFactory(settings.region, observer=observer)
        return
    from harness.local.data_plane import STATE_ROOT, LocalDataPlane
    from harness.local.moto_server import MotoServer

    with MotoServer() as server:
        clients = ClientFactory(
            settings.region, endpoint_url=server.endpoint_url, observer=observer
        )
        if scratch or not runs_tasks:
            yield clients
            return
        with LocalDataPlane(
            server, settings.region, settings.run_id, state_root=STATE_ROOT
        ) as plane:
            _planes[server.endpoint_url] = plane
            try:
                yield clients
            finally:
                del _planes[server.endpoint_url]
