"""Run the gateway: ``python -m services.gateway`` serves the API on ``PORT``."""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import Settings
from services.shared.config import SettingsError

logger = logging.getLogger("services.gateway")


def main() -> int:
    """Read the settings, build the app and serve it until stopped."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # pika narrates every connection step at INFO; its warnings are enough.
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        logger.error("cannot start the gateway: %s", error)
        return 2
    logger.info("gateway starting on port %s", settings.port)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again
    # against the handler it found; this one lets the process exit with 0.
    signal.signal(signal.SIGTERM, lambda *_: logger.info("gateway stopped"))
    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
