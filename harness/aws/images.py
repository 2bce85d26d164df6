"""Building the platform's images and pushing them to the run's ECR repositories.

Only the ``aws`` target needs images; the docker CLI does the work, against
whatever engine it reaches (``DOCKER_HOST`` or the local socket). The engine is
checked before any AWS call, so a deploy asked to build never half-starts.
"""

from __future__ import annotations

import base64
import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DeployError

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
Runner = Callable[..., subprocess.CompletedProcess[str]]


class ImageBuilder:
    """Builds ``services/<image>/Dockerfile`` and pushes it as ``<uri>:<tag>``."""

    def __init__(
        self, ecr: Any, tag: str, *, root: Path = ROOT, run: Runner = subprocess.run
    ) -> None:
        self._ecr = ecr
        self._tag = tag
        self._root = root
        self._run = run

    def preflight(self) -> None:
        """Fail with the fix when no docker CLI or engine is there to build with."""
        try:
            done = self._docker(["info", "--format", "{{.ServerVersion}}"], check=False)
        except FileNotFoundError as error:
            raise ConfigError(
                "--build needs the docker CLI, which is not on PATH; install Docker,"
                " or deploy images pushed earlier by leaving out --build"
            ) from error
        if done.returncode != 0:
            raise ConfigError(
                "--build needs a Docker engine and none answered"
                f" ({done.stderr.strip() or 'docker info failed'}); start Docker or"
                " set DOCKER_HOST, or leave out --build"
            )

    def build_and_push(self, repositories: dict[str, str]) -> dict[str, str]:
        """Image name to the pushed reference, for every repository given."""
        self._login()
        pushed = {}
        for image, uri in repositories.items():
            reference = f"{uri}:{self._tag}"
            dockerfile = self._root / "services" / image / "Dockerfile"
            self._docker(["build", "-f", str(dockerfile), "-t", reference, "."])
            self._docker(["push", reference])
            logger.info("pushed %s", reference)
            pushed[image] = reference
        return pushed

    def _login(self) -> None:
        grant = self._ecr.get_authorization_token()["authorizationData"][0]
        user, password = (
            base64.b64decode(grant["authorizationToken"]).decode().split(":", 1)
        )
        registry = grant["proxyEndpoint"]
        self._docker(
            ["login", "--username", user, "--password-stdin", registry], stdin=password
        )

    def _docker(
        self, args: Sequence[str], *, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", *args]
        logger.debug("running %s", " ".join(command[:3]))
        done = self._run(
            command,
            cwd=self._root,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise DeployError(
                f"docker {args[0]} failed with exit code {done.returncode}",
                resource=args[-1],
                details=(done.stderr or done.stdout)[-2000:],
            )
        return done
