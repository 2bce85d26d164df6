"""Opening an account on a target: real AWS, or the local emulation.

This is the one place that knows which target is in use; everything past it
sees only a client factory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from harness.aws.clients import CallObserver, ClientFactory
from harness.config import Settings

logger = logging.getLogger(__name__)


@contextmanager
def open_account(
    settings: Settings, *, observer: CallObserver | None = None, scratch: bool = False
) -> Iterator[ClientFactory]:
    """Clients for the settings' target; ``scratch`` forces a fresh emulated account.

    On ``local`` (or with ``scratch``) an emulated account lives as long as
    the context; on ``aws`` the default credential chain reaches the real one.
    """
    if settings.target == "aws" and not scratch:
        yield ClientFactory(settings.region, observer=observer)
        return
    from harness.local.moto_server import MotoServer

    with MotoServer() as server:
        yield ClientFactory(
            settings.region, endpoint_url=server.endpoint_url, observer=observer
        )
