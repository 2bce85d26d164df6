"""The pytest plugin: options, markers, the deploying fixtures, Allure wiring.

A stage package declares its stage in its ``conftest.py``::

    from harness.pytest_plugin import stage_deployment

    deployment = stage_deployment("0")

and its tests receive the deployed ``deployment``. Under pytest-xdist every
stage package's tests go to one worker (``StageScheduling``), so each stage is
deployed once and torn down once while different stages deploy in parallel.

Note: pytest 9.2 ignores the node-id suffix that xdist's own ``loadgroup``
relies on, so ``xdist_group`` marks alone would spread a stage over workers;
the scheduler here groups by stage package instead of by that suffix.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import allure
import pytest
from xdist.scheduler import LoadScopeScheduling

from harness.config import TARGETS, Settings, load_settings
from harness.deploy import Deployer
from harness.deployment import Deployment, from_outputs, redacted, write_outputs
from harness.errors import ConfigError
from harness.plan import STAGES, get_stage
from harness.progress import Progress
from harness.targets import faults_for, open_account, published

logger = logging.getLogger(__name__)

STAGE_PACKAGE = re.compile(r"^stage(\d+(?:_\d+)?)$")
OUTPUTS_DIR = Path("reports/outputs")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("euglena", "Euglena deployment")
    group.addoption(
        "--target",
        choices=TARGETS,
        default=None,
        help="deploy to the local emulation (default) or to AWS",
    )
    group.addoption(
        "--region", default=None, help="AWS region (default: AWS_REGION or us-east-1)"
    )
    group.addoption(
        "--env-file",
        type=Path,
        default=None,
        help="aws.env with the target's settings (default: ./aws.env if present)",
    )
    group.addoption(
        "--run-id", default=None, help="run id that names and tags every resource"
    )
    group.addoption(
        "--build",
        action="store_true",
        help="build the images with docker and push them to ECR before deploying",
    )
    group.addoption(
        "--keep",
        action="store_true",
        help="leave each deployment up after its tests; outputs go to reports/outputs",
    )
    group.addoption(
        "--reuse",
        type=Path,
        default=None,
        metavar="OUTPUTS",
        help="test the deployment in this outputs file instead of deploying",
    )


def _base_settings(config: pytest.Config) -> Settings:
    env_file = config.getoption("--env-file")
    if env_file is None and Path("aws.env").is_file():
        env_file = Path("aws.env")
    try:
        return load_settings(
            target=config.getoption("--target"),
            region=config.getoption("--region"),
            run_id=config.getoption("--run-id"),
            env_file=env_file,
            build=config.getoption("--build"),
        )
    except ConfigError as error:
        raise pytest.UsageError(str(error)) from error


def pytest_configure(config: pytest.Config) -> None:
    reuse = config.getoption("--reuse", None)
    if reuse is not None and not Path(reuse).is_file():
        raise pytest.UsageError(
            f"--reuse {reuse}: no such outputs file; pass the file `up` wrote"
        )


def stage_of(path: Path) -> str | None:
    """The stage a test file belongs to, from its ``stages/stageN`` package."""
    for part in path.parts:
        match = STAGE_PACKAGE.match(part)
        if match:
            return match.group(1).replace("_", ".")
    return None


def _skip_other_target(config: pytest.Config, item: pytest.Item) -> None:
    target = config.getoption("--target") or _base_settings(config).target
    for marker, needs in (("aws_only", "aws"), ("local_only", "local")):
        found = item.get_closest_marker(marker)
        if found is not None and target != needs:
            reason = found.kwargs.get("reason") or (found.args[0] if found.args else "")
            item.add_marker(
                pytest.mark.skip(reason=f"needs --target {needs}: {reason}")
            )


@pytest.hookimpl
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        _skip_other_target(config, item)
        stage = stage_of(Path(str(item.path)))
        if stage is None:
            continue
        title = get_stage(stage).title
        component = Path(str(item.path)).stem.removeprefix("test_").replace("_", " ")
        # allure's label decorators are untyped; each returns a pytest mark.
        epic = allure.epic(f"Stage {stage}: {title}")  # type: ignore[no-untyped-call]
        feature = allure.feature(component)  # type: ignore[no-untyped-call]
        item.add_marker(epic)
        item.add_marker(feature)


class StageScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """Sends each stage package whole to one worker; other tests one by one."""

    def _split_scope(self, nodeid: str) -> str:
        path = Path(nodeid.split("::", 1)[0])
        if stage_of(path) is None:
            return nodeid
        package = next(p for p in path.parents if STAGE_PACKAGE.match(p.name))
        return str(package)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The stage-aware scheduler for ``--dist loadgroup`` (pytest.ini's default)."""
    if config.getoption("dist") != "loadgroup":
        return None
    return StageScheduling(config, log)


def _allure_step(title: str) -> Any:
    return allure.step(title)


def _attach(name: str, payload: dict[str, Any]) -> None:
    allure.attach(
        json.dumps(redacted(payload), indent=2),
        name=name,
        attachment_type=allure.attachment_type.JSON,
    )


def _deploy(config: pytest.Config, stage: str) -> Iterator[Deployment]:
    settings = _base_settings(config).with_stage(stage)
    with open_account(settings) as clients:
        deployer = Deployer(settings, clients, Progress(_allure_step))
        try:
            result = deployer.deploy()
            outputs = published(clients, {**result.outputs, **deployer.wait_ready()})
            deployment = Deployment(
                settings=settings,
                clients=clients,
                outputs=outputs,
                faults=faults_for(clients),
            )
            _attach(f"stage {stage} outputs", deployment.outputs)
            if config.getoption("--keep"):
                write_outputs(deployment.outputs, OUTPUTS_DIR / f"stage{stage}.json")
            yield deployment
        finally:
            if not config.getoption("--keep"):
                deployer.teardown()


def stage_deployment(stage: str) -> Callable[..., Iterator[Deployment]]:
    """The ``deployment`` fixture of a stage package: deploys once, tears down once."""
    get_stage(stage)

    @pytest.fixture(scope="package")
    def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
        reuse = request.config.getoption("--reuse")
        if reuse is not None:
            existing = from_outputs(Path(reuse))
            if existing.stage != stage:
                pytest.skip(
                    f"--reuse deployment is stage {existing.stage}, not stage {stage}"
                )
            yield existing
            return
        yield from _deploy(request.config, stage)

    return deployment


@pytest.fixture(scope="session")
def harness_settings(request: pytest.FixtureRequest) -> Settings:
    """The run's settings as the options and ``aws.env`` give them."""
    return _base_settings(request.config)


__all__ = ["STAGES", "stage_deployment"]
