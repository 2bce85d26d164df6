"""The images the local target can run, each mapped to a local command.

A task definition names images; the local target has no Docker engine, so each
image is run as the program its official image runs, with that image's
defaults: ``redis`` as ``redis-server`` without protected mode, ``rabbitmq`` as a
RabbitMQ node of its own that accepts its user from other hosts, with the
management plugin, ``chromadb/chroma`` as ``chroma run``, and the platform's own
images (``<registry>/euglena-<run>/<name>:<tag>``) as ``python -m
services.<name>`` from this repository, in this Python environment.

Note: a container has no file system of its own. Where its image keeps data (for
instance ``/data`` for Redis and Chroma, ``/var/lib/rabbitmq`` for RabbitMQ) is
mapped by the catalog to the directory of the volume mounted there, or to a
directory of the task's own; environment values and command arguments that
name a mounted ``containerPath`` are rewritten to the volume's directory. Any
other absolute path a container uses is the host's.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harness.aws.registry import PLATFORM_IMAGES
from harness.errors import DeployError
from harness.local.servers.chroma import chroma_executable
from harness.local.servers.rabbitmq import RABBITMQ_SERVER, RabbitNode
from harness.local.servers.redis import REDIS_SERVER

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
RABBITMQ_BIN = str(Path(RABBITMQ_SERVER).parent)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Fresher management statistics than RabbitMQ's 5 s default (facts §3); queue
# depth readers should still prefer the real-time list endpoint.
RABBITMQ_STATS = {"collect_statistics_interval": "1000"}
_PLATFORM_REPO = re.compile(r"^euglena(-[^/]+)?/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class ContainerContext:
    """What a catalog entry knows of the container it launches."""

    name: str
    image: str
    environment: Mapping[str, str]
    command: tuple[str, ...] = ()
    entry_point: tuple[str, ...] = ()
    data_dir: Path = Path()
    mounts: Mapping[str, Path] = field(default_factory=dict)

    def data_path(self, container_path: str) -> Path:
        """Return the directory standing for ``container_path`` in the image.

        It is the volume mounted there, else a directory in the container's own
        data directory, which lives as long as the task.
        """
        mounted = self.mounts.get(str(PurePosixPath(container_path)))
        path = mounted or self.data_dir / container_path.strip("/").replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Launch:
    """How to run one container: its program, environment, directory and PATH."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    path_dirs: tuple[str, ...] = ()
    data_dirs: tuple[Path, ...] = ()

    @property
    def path(self) -> str:
        """The PATH of the container and of its health-check command."""
        return os.pathsep.join((*self.path_dirs, SYSTEM_PATH))


ImageLauncher = Callable[[ContainerContext], Launch]


def image_name(image: str) -> str:
    """Return the catalog key of an image reference: no registry, tag or digest.

    ``redis:7.2`` and ``docker.io/library/redis`` are ``redis``; a platform image
    ``<account>.dkr.ecr.<region>.amazonaws.com/euglena-<run>/gateway:latest``
    is ``euglena/gateway``.
    """
    name = image.split("@", 1)[0]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    name = name.removeprefix("library/")
    platform = _PLATFORM_REPO.match(name)
    if platform and platform["name"] in PLATFORM_IMAGES:
        return f"euglena/{platform['name']}"
    return name


def rewrite_paths(value: str, mounts: Mapping[str, Path]) -> str:
    """Return ``value`` with a leading mounted ``containerPath`` made the volume's
    directory, so that a program finds the volume where its image would."""
    for container_path, directory in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == container_path or value.startswith(container_path + "/"):
            return str(directory) + value[len(container_path) :]
    return value


def _refuse_command(ctx: ContainerContext) -> None:
    if ctx.command or ctx.entry_point:
        raise DeployError(
            f"container {ctx.name!r} overrides the command of {ctx.image!r}, which"
            " the local catalog runs only as its image's default; drop 'command'"
            " and 'entryPoint' or add a catalog entry that understands them",
            resource=ctx.name,
        )


def redis_image(ctx: ContainerContext) -> Launch:
    """``redis-server`` as the official image runs it, data in its ``/data``."""
    data = ctx.data_path("/data")
    args = list(ctx.command)
    if args and args[0] == REDIS_SERVER:
        args = args[1:]
    elif args and not args[0].startswith("-"):
        return Launch(argv=tuple(args), cwd=data, data_dirs=(data,))
    defaults = ["--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no"]
    argv = (REDIS_SERVER, *defaults, "--dir", str(data), "--logfile", "", *args)
    return Launch(argv=argv, cwd=data, data_dirs=(data,))


def rabbitmq_image(ctx: ContainerContext) -> Launch:
    """A RabbitMQ node ``rabbit@localhost`` on the standard ports, its own epmd
    on 4369, the management plugin on, data in its ``/var/lib/rabbitmq``."""
    _refuse_command(ctx)
    base = ctx.data_path("/var/lib/rabbitmq")
    node = RabbitNode(
        base,
        amqp_port=5672,
        management_port=15672,
        dist_port=25672,
        node_name="rabbit@localhost",
        epmd_port=4369,
        user=ctx.environment.get("RABBITMQ_DEFAULT_USER", "guest"),
        password=ctx.environment.get("RABBITMQ_DEFAULT_PASS", "guest"),
        bind="0.0.0.0",
        extra_config=RABBITMQ_STATS,
    )
    node.prepare()
    env = {
        key: value
        for key, value in node.environment().items()
        if key.startswith(("RABBITMQ_", "ERL_")) or key == "HOME"
    }
    # epmd runs in the foreground inside the container, so that it ends with it;
    # the node itself is told not to start one (it would daemonize and escape).
    script = 'epmd -port "$ERL_EPMD_PORT" -address 127.0.0.1 & exec "$0"'
    return Launch(
        argv=("sh", "-c", script, RABBITMQ_SERVER),
        env=env,
        cwd=base,
        path_dirs=(RABBITMQ_BIN,),
        data_dirs=(base,),
    )


def chroma_image(ctx: ContainerContext) -> Launch:
    """``chroma run`` on port 8000 of every address, data in its ``/data``."""
    _refuse_command(ctx)
    data = ctx.data_path("/data")
    argv = (chroma_executable(), "run", "--host", "0.0.0.0", "--port", "8000")
    return Launch(
        argv=(*argv, "--path", str(data)),
        env={"ANONYMIZED_TELEMETRY": "False"},
        cwd=data,
        path_dirs=(VENV_BIN,),
        data_dirs=(data,),
    )


def command_image(default: Sequence[str]) -> ImageLauncher:
    """Return a launcher that runs the container's entry point and command, or
    ``default``, from the repository root with this environment's Python."""

    def launch(ctx: ContainerContext) -> Launch:
        # PATH starts with this environment's bin, so ``python`` is its Python.
        argv = (*ctx.entry_point, *ctx.command) or tuple(default)
        env = {
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        return Launch(argv=argv, env=env, cwd=REPO_ROOT, path_dirs=(VENV_BIN,))

    return launch


def default_images() -> dict[str, ImageLauncher]:
    """The catalog's entries for the third-party and platform images."""
    images: dict[str, ImageLauncher] = {
        "redis": redis_image,
        "rabbitmq": rabbitmq_image,
        "chromadb/chroma": chroma_image,
    }
    for name in PLATFORM_IMAGES:
        images[f"euglena/{name}"] = command_image(("python", "-m", f"services.{name}"))
    return images


class Catalog:
    """Maps image references to launchers; see the module docstring."""

    def __init__(self, images: Mapping[str, ImageLauncher] | None = None) -> None:
        self._images = dict(default_images() if images is None else images)

    @property
    def known(self) -> list[str]:
        """The image names this catalog can run."""
        return sorted(self._images)

    def with_images(self, images: Mapping[str, ImageLauncher]) -> Catalog:
        """Return a catalog that also runs ``images`` (keys as ``image_name``)."""
        return Catalog({**self._images, **images})

    def resolve(self, image: str) -> ImageLauncher:
        """Return the launcher of ``image``, or raise DeployError naming it."""
        launcher = self._images.get(image_name(image))
        if launcher is None:
            raise DeployError(
                f"the local target cannot run image {image!r} (read as"
                f" {image_name(image)!r}); it knows {', '.join(self.known)}: use one"
                " of those or add an entry to the catalog (harness.local.catalog)",
                resource=image,
            )
        return launcher

    def launch(self, ctx: ContainerContext) -> Launch:
        """Return how to run the container ``ctx`` describes."""
        return self.resolve(ctx.image)(ctx)
