"""Building and pushing images for the aws target: the docker calls and their checks."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import replace
from typing import Any

import pytest

from harness.aws.clients import ClientFactory
from harness.aws.images import ImageBuilder
from harness.config import Settings
from harness.deploy import Deployer
from harness.errors import ConfigError, DeployError
from harness.probes.inventory import inventory


class DockerCalls:
    """Records each docker command and answers with a chosen exit code."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.commands: list[list[str]] = []
        self.stdin: list[str | None] = []
        self._returncode = returncode
        self._stderr = stderr

    def __call__(self, command: list[str], **options: Any) -> Any:
        self.commands.append(command)
        self.stdin.append(options.get("input"))
        return subprocess.CompletedProcess(command, self._returncode, "", self._stderr)


def _no_docker(command: list[str], **_: Any) -> Any:
    raise FileNotFoundError(2, "No such file or directory", command[0])


def test_missing_docker_cli_is_a_setting_to_fix(clients: ClientFactory) -> None:
    """Without a docker CLI, --build is refused with what to do instead."""
    builder = ImageBuilder(clients.client("ecr"), "v1", run=_no_docker)

    with pytest.raises(ConfigError, match=r"docker CLI.*leaving out --build"):
        builder.preflight()


def test_unreachable_engine_is_a_setting_to_fix(clients: ClientFactory) -> None:
    """A docker CLI without an engine is refused, quoting docker's own reason."""
    calls = DockerCalls(1, "Cannot connect to the Docker daemon")
    builder = ImageBuilder(clients.client("ecr"), "v1", run=calls)

    with pytest.raises(ConfigError, match="Cannot connect to the Docker daemon"):
        builder.preflight()


def test_images_are_built_and_pushed_after_an_ecr_login(
    clients: ClientFactory,
) -> None:
    """docker logs in with ECR's token on stdin, then builds and pushes each image."""
    calls = DockerCalls()
    ecr = clients.client("ecr")
    token = ecr.get_authorization_token()["authorizationData"][0]
    password = base64.b64decode(token["authorizationToken"]).decode().split(":")[1]
    builder = ImageBuilder(ecr, "v1", run=calls)
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/euglena-test0000/gateway"

    pushed = builder.build_and_push({"gateway": uri})

    login, build, push = calls.commands
    assert login[:4] == ["docker", "login", "--username", "AWS"]
    assert calls.stdin[0] == password
    assert password not in " ".join(login)
    assert build[1] == "build"
    assert build[-3:] == ["-t", f"{uri}:v1", "."]
    assert build[3].endswith("services/gateway/Dockerfile")
    assert push == ["docker", "push", f"{uri}:v1"]
    assert pushed == {"gateway": f"{uri}:v1"}


def test_failed_push_names_the_image(clients: ClientFactory) -> None:
    """A docker step that fails stops the deploy with the image and docker's output."""
    builder = ImageBuilder(
        clients.client("ecr"), "v1", run=DockerCalls(1, "denied: not authorized")
    )

    with pytest.raises(DeployError, match=r"docker login failed[\s\S]*denied"):
        builder.build_and_push({"agent": "example/agent"})


def test_build_without_an_engine_creates_nothing(
    clients: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy asked to build, where no engine answers, fails before any AWS call."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    building = replace(settings, build=True)

    with pytest.raises(ConfigError, match="--build"):
        Deployer(building, clients)

    assert inventory(clients, building) == {}
