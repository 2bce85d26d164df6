"""``python -m harness``: up, check, down and the plan, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from threading import Thread

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 90.0
DOWN_TIMEOUT = 60.0


def _lines(stream: object, into: Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _wait_for_ready(lines: Queue[str], process: subprocess.Popen[str]) -> str:
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=READY_TIMEOUT)
        except Empty:
            message = f"no ready line within {READY_TIMEOUT}s: {seen}"
            raise AssertionError(message) from None
        seen.append(line)
        if line.startswith("ready:"):
            return line
        if process.poll() is not None:
            raise AssertionError(f"up exited {process.returncode}: {seen}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, str]]:
    """A running ``up --stage 0``, its outputs file and its ready line."""
    outputs = tmp_path / "outputs.json"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "harness", "up", "--stage", "0"),
            *("--run-id", "cliup000", "--outputs", str(outputs)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: Queue[str] = Queue()
    Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        yield process, outputs, _wait_for_ready(lines, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_writes_outputs_and_says_ready(
    up: tuple[subprocess.Popen[str], Path, str],
) -> None:
    """``up`` writes a private outputs file with the contract's keys, says ready."""
    _, outputs, ready = up

    written = json.loads(outputs.read_text())
    assert "stage 0 on local, run cliup000" in ready
    assert outputs.stat().st_mode & 0o777 == 0o600
    assert {"stage", "target", "region", "run_id", "cluster", "services"} <= set(
        written
    )
    assert written["gateway_url"].startswith("http://")
    assert written["aws_endpoint_url"].startswith("http://127.0.0.1:")


def test_check_reports_the_service_of_a_running_up(
    up: tuple[subprocess.Popen[str], Path, str],
) -> None:
    """``check`` reads the outputs file and reports euglena-service from ECS."""
    _, outputs, _ = up

    done = subprocess.run(
        [sys.executable, "-m", "harness", "check", "--outputs", str(outputs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert "euglena-service" in done.stdout
    assert "ACTIVE" in done.stdout


def test_sigterm_tears_down_and_exits_zero(
    up: tuple[subprocess.Popen[str], Path, str],
) -> None:
    """SIGTERM makes ``up`` tear down, remove its outputs file and exit 0."""
    process, outputs, _ = up

    os.kill(process.pid, signal.SIGTERM)

    assert process.wait(timeout=DOWN_TIMEOUT) == 0
    assert not outputs.exists()


def test_down_stops_the_up_process(
    up: tuple[subprocess.Popen[str], Path, str],
) -> None:
    """``down`` asks the owning ``up`` process to tear down, and waits for it."""
    process, outputs, _ = up

    status = cli.main(["down", "--outputs", str(outputs)])

    assert status == 0
    assert process.wait(timeout=DOWN_TIMEOUT) == 0
    assert not outputs.exists()


def test_dry_run_prints_a_numbered_plan(capsys: pytest.CaptureFixture[str]) -> None:
    """``deploy --dry-run`` prints each mutating call numbered, the service last."""
    status = cli.main(["deploy", "--stage", "0", "--dry-run", "--run-id", "plan0000"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].strip().startswith("1. iam CreateRole")
    assert "ecs CreateService serviceName=euglena-service" in lines[-1]


def test_missing_outputs_file_says_how_to_get_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``check`` without an outputs file exits 2 and says to deploy first."""
    status = cli.main(["check", "--outputs", str(tmp_path / "none.json")])

    assert status == 2
    assert "deploy first or fix the path" in capsys.readouterr().err
