"""``python -m harness``: up, check, down and the plan, as a user runs them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from threading import Thread

import pytest
import testinfra

from harness import cli
from harness.local import netns

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 240.0
DOWN_TIMEOUT = 60.0


def _lines(stream: object, into: Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _wait_for_ready(lines: Queue[str], process: subprocess.Popen[str]) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except Empty:
            if process.poll() is not None:
                raise AssertionError(
                    f"up exited {process.returncode}: {seen}"
                ) from None
            continue
        seen.append(line)
        if line.startswith("ready:"):
            return line
    raise AssertionError(f"no ready line within {READY_TIMEOUT}s: {seen}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, str]]:
    """A running ``up --stage 0``, its outputs file and its ready line."""
    outputs = tmp_path / "outputs.json"
    run_id = f"cli{secrets.token_hex(3)}"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "harness", "up", "--stage", "0"),
            *("--run-id", run_id, "--outputs", str(outputs)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "up.log").open("w"),
        text=True,
    )
    lines: Queue[str] = Queue()
    Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        yield process, outputs, _wait_for_ready(lines, process)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=DOWN_TIMEOUT)
        netns.reap(run_id)
        shutil.rmtree(ROOT / ".euglena" / "runs" / run_id, ignore_errors=True)


def _run_id(ready: str) -> str:
    return ready.split(" run ", 1)[1].split(",", 1)[0]


def test_up_writes_outputs_and_says_ready(
    up: tuple[subprocess.Popen[str], Path, str],
) -> None:
    """``up`` writes a private outputs file with the contract's keys, says ready."""
    _, outputs, ready = up

    written = json.loads(outputs.read_text())
    assert "stage 0 on local, run cli" in ready
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


def _namespaces(run_id: str) -> list[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listed.splitlines() if f"euglena-{run_id}-" in line]


def test_sigterm_tears_down_and_exits_zero(
    up: tuple[subprocess.Popen[str], Path, str],
) -> None:
    """SIGTERM makes ``up`` tear down and exit 0, leaving nothing of the run."""
    process, outputs, ready = up
    run_id = _run_id(ready)
    address = json.loads(outputs.read_text())["rabbitmq_url"].split("@")[1]
    assert _namespaces(run_id), "up runs no task namespace"

    os.kill(process.pid, signal.SIGTERM)

    assert process.wait(timeout=DOWN_TIMEOUT) == 0
    assert not outputs.exists()
    assert _namespaces(run_id) == []
    assert not (ROOT / ".euglena" / "runs" / run_id).exists()
    host = testinfra.get_host("local://")
    assert not host.socket(f"tcp://{address.split('/')[0]}").is_listening


def test_crashed_up_is_reaped(up: tuple[subprocess.Popen[str], Path, str]) -> None:
    """After ``up`` is killed outright, ``reap`` removes its tasks and network."""
    process, _, ready = up
    run_id = _run_id(ready)
    process.kill()
    process.wait()
    assert _namespaces(run_id), "the killed run left nothing to reap"

    done = subprocess.run(
        [sys.executable, "-m", "harness", "reap"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"run {run_id}: removed" in done.stdout
    assert _namespaces(run_id) == []


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
