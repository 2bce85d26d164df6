"""Run the agent: ``python -m services.agent`` consumes until SIGTERM, then exits 0."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from services.agent.factory import build_agent
from services.agent.health_server import start_health_server
from services.agent.runners import RunnerConfigError
from services.agent.settings import Settings
from services.shared.config import SettingsError
from services.shared.embedding_model import ModelError

logger = logging.getLogger("services.agent")


def main() -> int:
    """Read the settings, serve health, consume until told to stop."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # pika narrates every connection step at INFO; its warnings are enough.
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        agent = build_agent(settings)
    except (SettingsError, ModelError, RunnerConfigError) as error:
        logger.error("cannot start the agent: %s", error)
        return 2

    def on_signal(number: int, _: FrameType | None) -> None:
        logger.info(
            "received %s: finishing the current task", signal.Signals(number).name
        )
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = start_health_server(settings)
    agent.run_forever()
    server.shutdown()
    logger.info("agent exited cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
