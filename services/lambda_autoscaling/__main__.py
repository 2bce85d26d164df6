"""One autoscaler invocation outside Lambda: ``python -m services.lambda_autoscaling``.

It reads the same environment as the Lambda function, decides, applies the
decision unless ``--dry-run`` is given, and prints the decision record as one
JSON line on standard output. Exit status 2 means a setting is missing or
malformed, 1 that the agent service could not be found.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from services.lambda_autoscaling.ecs_state import ServiceNotFoundError
from services.lambda_autoscaling.handler import handler
from services.shared.config import SettingsError

logger = logging.getLogger("services.lambda_autoscaling")


def main(argv: list[str] | None = None) -> int:
    """Run one invocation and print its decision record."""
    parser = argparse.ArgumentParser(
        prog="python -m services.lambda_autoscaling",
        description="Decide the agent service's size once, as the Lambda does.",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="decide without changing the service"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        record = handler({"dry_run": arguments.dry_run}, None)
    except SettingsError as error:
        logger.error("cannot run the autoscaler: %s", error)
        return 2
    except ServiceNotFoundError as error:
        logger.error("%s", error)
        return 1
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
