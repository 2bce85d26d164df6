"""How long ``python -m harness up`` takes to be ready and to come down.

Runs ``up --stage N`` on the local target for each stage given, times the ready
line (every service steady and healthy) and the exit after SIGTERM (every task
stopped, the run's network removed), and prints each time beside its goal as a
ratio: below 1.0 meets the goal.

    .venv/bin/python benchmarks/harness_speed.py --stages 0 1 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_GOAL = 30.0
DOWN_GOAL = 10.0
LIMIT = 300.0


def measure(stage: str, run_id: str) -> tuple[float, float]:
    """Seconds from start to the ready line, and from SIGTERM to exit."""
    with tempfile.TemporaryDirectory() as scratch:
        outputs = Path(scratch) / "outputs.json"
        started = time.monotonic()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "harness", "up", "--stage", stage),
                *("--run-id", run_id, "--outputs", str(outputs)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("ready:"):
                break
        else:
            raise SystemExit(f"stage {stage}: up exited {process.wait()} before ready")
        ready = time.monotonic() - started
        stopping = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=LIMIT)
        down = time.monotonic() - stopping
    if code != 0:
        raise SystemExit(f"stage {stage}: up exited {code} after SIGTERM")
    return ready, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=["0", "1"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    header = ("stage", "round", "ready s", "/goal", "down s", "/goal")
    print("{:<6} {:<6} {:>8} {:>6} {:>8} {:>6}".format(*header))
    for stage in args.stages:
        for round_ in range(1, args.rounds + 1):
            run_id = f"bench{stage.replace('.', '')}{round_}"
            ready, down = measure(stage, run_id)
            print(
                f"{stage:<6} {round_:<6} {ready:8.1f} {ready / READY_GOAL:6.2f}"
                f" {down:8.1f} {down / DOWN_GOAL:6.2f}",
                flush=True,
            )
    print(f"goals: ready within {READY_GOAL:.0f} s, down within {DOWN_GOAL:.0f} s")


if __name__ == "__main__":
    main()
