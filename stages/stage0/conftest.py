"""Stage 0 deploys the platform as one task in the service ``euglena-service``."""

from harness.pytest_plugin import stage_deployment

deployment = stage_deployment("0")
