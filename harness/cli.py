"""The command line: ``python -m harness <verb>``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.aws.network import NetworkDiscovery
from harness.config import TARGETS, Settings, load_settings
from harness.deploy import Deployer
from harness.deployment import from_outputs, redacted, write_outputs
from harness.errors import ConfigError, HarnessError
from harness.lifecycle import check_deployment, stop_deployment
from harness.network_check import validate
from harness.plan import STAGE_IDS
from harness.reporting import network_table
from harness.targets import open_account, published

logger = logging.getLogger(__name__)

DEFAULT_OUTPUTS = Path(".euglena/outputs.json")


def _common(parser: argparse.ArgumentParser, *, stage: bool = False) -> None:
    parser.add_argument(
        "--target", choices=TARGETS, help="where to deploy (default: local)"
    )
    parser.add_argument(
        "--region", help="AWS region (default: AWS_REGION or us-east-1)"
    )
    parser.add_argument(
        "--env-file", type=Path, help="aws.env file with the target's settings"
    )
    parser.add_argument("--run-id", help="name of this run (default: random)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log every API call"
    )
    if stage:
        parser.add_argument(
            "--stage", required=True, help=f"one of {', '.join(STAGE_IDS)}"
        )
        parser.add_argument(
            "--build",
            action="store_true",
            help="build the images with docker and push them to ECR (aws target)",
        )


def _outputs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--outputs",
        type=Path,
        default=DEFAULT_OUTPUTS,
        help=f"the deployment's outputs file (default: {DEFAULT_OUTPUTS})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="deploy and stay up until interrupted")
    _common(up, stage=True)
    _outputs_option(up)
    deploy = verbs.add_parser("deploy", help="deploy or update a stage (idempotent)")
    _common(deploy, stage=True)
    _outputs_option(deploy)
    deploy.add_argument(
        "--dry-run", action="store_true", help="print the plan of AWS calls only"
    )
    down = verbs.add_parser("down", help="tear down the deployment in the outputs file")
    _outputs_option(down)
    down.add_argument("-v", "--verbose", action="store_true")
    check = verbs.add_parser(
        "check", help="health of the deployment in the outputs file"
    )
    _outputs_option(check)
    check.add_argument("-v", "--verbose", action="store_true")
    network = verbs.add_parser(
        "network", help="show the network the platform goes into"
    )
    _common(network)
    network.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    network.add_argument(
        "--validate", action="store_true", help="check it can host the platform"
    )
    reap = verbs.add_parser("reap", help="remove what earlier runs left")
    _common(reap)
    reap.add_argument(
        "--outputs", type=Path, help="reap in the account of this deployment"
    )
    reap.add_argument(
        "--older-than",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="only runs created longer ago than this (default: 60)",
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        target=args.target,
        region=args.region,
        stage=getattr(args, "stage", None),
        run_id=args.run_id,
        env_file=args.env_file,
        build=getattr(args, "build", False),
    )


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with open_account(settings) as clients:
        deployer = Deployer(settings, clients)
        result = deployer.deploy()
        try:
            ready = {**result.outputs, **deployer.wait_ready(), "pid": os.getpid()}
            outputs = published(clients, ready)
            write_outputs(outputs, args.outputs)
            print(
                f"ready: stage {settings.stage} on {settings.target},"
                f" run {settings.run_id},"
                f" outputs in {args.outputs}",
                flush=True,
            )
            stop.wait()
        finally:
            deployer.teardown()
            args.outputs.unlink(missing_ok=True)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.dry_run:
        from harness.dry_run import plan

        for number, call in enumerate(plan(settings), 1):
            print(f"{number:3d}. {call}")
        return 0
    if settings.target == "local":
        deployment = from_outputs(args.outputs)
        deployer = Deployer(settings.with_stage(settings.stage), deployment.clients)
        outputs = {**deployment.outputs, **deployer.deploy().outputs}
        write_outputs(outputs, args.outputs)
        print(json.dumps(redacted(outputs), indent=2))
        return 0
    with open_account(settings) as clients:
        outputs = Deployer(settings, clients).deploy().outputs
    write_outputs(outputs, args.outputs)
    print(json.dumps(redacted(outputs), indent=2))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stop_deployment(from_outputs(args.outputs), args.outputs)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    report = check_deployment(from_outputs(args.outputs))
    print(report.render())
    return 0 if report.healthy else 1


def cmd_network(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with open_account(settings, runs_tasks=False) as clients:
        network = NetworkDiscovery(clients.client("ec2"), settings).discover_all()
        checks = validate(clients, settings, network) if args.validate else []
    if args.json:
        payload = network.as_dict()
        if args.validate:
            payload["checks"] = [check.as_dict() for check in checks]
        print(json.dumps(payload, indent=2))
    else:
        print(network_table(network, checks))
    return 1 if any(not check.ok for check in checks) else 0


def cmd_reap(args: argparse.Namespace) -> int:
    from harness.teardown import reap_old_runs

    if args.outputs:
        deployment = from_outputs(args.outputs)
        clients, settings = deployment.clients, deployment.settings
        removed = reap_old_runs(clients, settings, args.older_than)
    else:
        settings = _settings(args)
        if settings.target == "local":
            from harness.local.data_plane import reap_crashed

            removed = reap_crashed()
            for run_id, leftovers in removed.items():
                print(f"run {run_id}: removed {', '.join(leftovers)}")
            if not removed:
                print("nothing to reap")
            return 0
        with open_account(settings, runs_tasks=False) as clients:
            removed = reap_old_runs(clients, settings, args.older_than)
    for run_id, resources in removed.items():
        print(f"run {run_id}: removed {len(resources)} resources")
    if not removed:
        print("nothing to reap")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": cmd_up,
    "deploy": cmd_deploy,
    "down": cmd_down,
    "check": cmd_check,
    "network": cmd_network,
    "reap": cmd_reap,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "urllib3", "werkzeug", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.verb](args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except HarnessError as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
