"""A deployed stage as tests and the command line see it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.aws.clients import ClientFactory
from harness.config import SECRET_KEYS, Settings, load_settings
from harness.deploy import Deployer, DeployResult
from harness.errors import ConfigError
from harness.faults import Faults, UnreachableFaults
from harness.progress import Progress
from harness.targets import published

SECRET_OUTPUTS = frozenset(
    {
        "jwt_secret",
        "supabase_service_key",
        "supabase_anon_key",
        "database_url",
        "rabbitmq_url",
        "redis_url",
    }
)


@dataclass
class Deployment:
    """One stage deployed into one account: outputs, clients and settings."""

    settings: Settings
    clients: ClientFactory
    outputs: dict[str, Any]
    faults: Faults = field(
        default_factory=lambda: UnreachableFaults("no fault injector was given")
    )

    @property
    def stage(self) -> str:
        return self.settings.stage

    @property
    def target(self) -> str:
        return self.settings.target

    def client(self, service: str) -> Any:
        return self.clients.client(service)

    def deployer(
        self, settings: Settings | None = None, progress: Progress | None = None
    ) -> Deployer:
        """A deployer for this account: for this run, or for other settings."""
        return Deployer(settings or self.settings, self.clients, progress)

    def deploy_again(self) -> DeployResult:
        """Deploy the same stage again, as an update, and wait until it has rolled
        out; the outputs follow."""
        deployer = self.deployer()
        result = deployer.deploy()
        ready = {**result.outputs, **deployer.wait_ready()}
        self.outputs = {**self.outputs, **published(self.clients, ready)}
        return result

    def other_run(self, run_id: str) -> Settings:
        """Settings for a second, independent run in the same account."""
        return replace(
            self.settings, run_id=run_id, cluster_name=f"euglena-cluster-{run_id}"
        )


def write_outputs(outputs: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(outputs, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    path.chmod(0o600)  # it holds credentials


def redacted(outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs with every secret masked, for terminals and reports."""
    return {
        key: "***" if key in SECRET_OUTPUTS or key.upper() in SECRET_KEYS else value
        for key, value in outputs.items()
    }


def from_outputs(path: Path) -> Deployment:
    """The deployment an outputs file describes, without deploying anything."""
    try:
        outputs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(
            f"outputs file {path} does not exist; deploy first or fix the path"
        ) from error
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"outputs file {path} is not JSON ({error});"
            " write it with `python -m harness up`"
        ) from error
    missing = [
        key for key in ("stage", "target", "region", "run_id") if key not in outputs
    ]
    if missing:
        raise ConfigError(
            f"outputs file {path} lacks {', '.join(missing)};"
            " it was not written by the harness"
        )
    settings = load_settings(
        target=outputs["target"],
        region=outputs["region"],
        stage=outputs["stage"],
        run_id=outputs["run_id"],
    )
    cluster = (
        str(outputs.get("cluster", "")).rsplit("/", 1)[-1] or settings.cluster_name
    )
    settings = replace(settings, cluster_name=cluster)
    clients = ClientFactory(
        settings.region, endpoint_url=outputs.get("aws_endpoint_url")
    )
    return Deployment(settings=settings, clients=clients, outputs=outputs)
