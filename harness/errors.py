"""The harness's errors, split by what the caller does next.

``DeployError`` stops the run; ``NotReadyError`` is worth retrying;
``ConfigError`` means a setting must be fixed before anything is created.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        resource: str | None = None,
        region: str | None = None,
        details: str | None = None,
    ) -> None:
        self.message = message
        self.resource = resource
        self.region = region
        self.details = details
        super().__init__(self._render())

    def _render(self) -> str:
        where = ", ".join(
            f"{key}={value}"
            for key, value in (("resource", self.resource), ("region", self.region))
            if value
        )
        text = f"{self.message} ({where})" if where else self.message
        return f"{text}\n{self.details}" if self.details else text


class ConfigError(HarnessError):
    """A setting is wrong; nothing was created. The message says what to fix."""


class DeployError(HarnessError):
    """A deploy step failed; the run stops (and rolls back what it made)."""


class NotReadyError(HarnessError):
    """Something is not there yet; polling again may succeed."""
