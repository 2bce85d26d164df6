"""The pytest plugin as users meet it: one deploy per stage, also across workers."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

STAGE_TEST = '''
from pathlib import Path


def test_{name}(deployment):
    """Records which deployment this test received."""
    with Path("{record}").open("a") as record:
        record.write(deployment.settings.run_id + " ")
    assert deployment.outputs["services"]
'''


@pytest.fixture
def stage_package(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stage 0 package of four tests, each noting the run it was handed."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    record = pytester.path / "runs.txt"
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    package = pytester.mkpydir("stages")
    stage = package / "stage0"
    stage.mkdir()
    (stage / "__init__.py").write_text("")
    (stage / "conftest.py").write_text(
        "from harness.pytest_plugin import stage_deployment\n\n"
        'deployment = stage_deployment("0")\n'
    )
    for name in ("alpha", "beta", "gamma", "delta"):
        (stage / f"test_{name}.py").write_text(
            STAGE_TEST.format(name=name, record=record)
        )
    return record


def test_stage_deploys_once_under_two_workers(
    pytester: pytest.Pytester, stage_package: Path
) -> None:
    """Under ``-n 2 --dist loadgroup`` all four tests share one deployment."""
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadgroup", "-p", "xdist"
    )

    result.assert_outcomes(passed=4)
    runs = stage_package.read_text().split()
    assert len(runs) == 4
    assert len(set(runs)) == 1, f"deployed more than once: {runs}"


def test_bad_option_is_a_usage_error(
    pytester: pytest.Pytester, stage_package: Path
) -> None:
    """An unknown region stops the run before any test, naming a real region."""
    result = pytester.runpytest_subprocess("--region", "moon-east-1")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown AWS region 'moon-east-1'*us-east-1*"])
    assert not stage_package.exists()
