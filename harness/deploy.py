"""The idempotent deployer: deploy from scratch, deploy again to update, tear down."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from harness.aws.alb import Alb
from harness.aws.clients import ClientFactory
from harness.aws.ecs import EcsInfrastructure, ServiceSpec
from harness.aws.iam import IamRoles
from harness.aws.images import ImageBuilder
from harness.aws.network import Network, NetworkDiscovery
from harness.aws.registry import LogGroups, Repositories
from harness.aws.security_groups import GATEWAY_PORT, SecurityGroups
from harness.aws.taskdefs import SINGLE_FAMILY, Context, build
from harness.config import Settings
from harness.errors import ConfigError, DeployError
from harness.plan import Feature, features
from harness.progress import Progress
from harness.readiness import STEADY_TIMEOUT, backing_endpoints, wait_until_steady
from harness.teardown import Reaper

logger = logging.getLogger(__name__)

SINGLE_SERVICE = "euglena-service"
RABBITMQ_USER = "euglena"
# Stages whose deploy this version of the harness builds.
DEPLOYABLE = ("0", "0.5", "1")

LOCAL_SERVICE_SETTINGS = {
    "PUBLISH_INTERVAL_SECONDS": "5",
    "METRIC_FRESHNESS_SECONDS": "15",
    "SCALE_IN_COOLDOWN_SECONDS": "30",
}
AWS_SERVICE_SETTINGS = {
    "PUBLISH_INTERVAL_SECONDS": "5",
    "METRIC_FRESHNESS_SECONDS": "60",
    "SCALE_IN_COOLDOWN_SECONDS": "300",
}
COMMON_SERVICE_SETTINGS = {
    "TASKS_PER_WORKER": "5",
    "MIN_WORKERS": "1",
    "MAX_WORKERS": "5",
    "PROTECTION_MINUTES": "60",
    "AGENT_SKIP_PHRASE": "skipskipskip",
}


@dataclass
class DeployResult:
    """What a deploy made: the outputs file's content and the steps' timings."""

    outputs: dict[str, Any]
    timings: list[tuple[str, float]] = field(default_factory=list)
    created: bool = False


class Deployer:
    """Deploys the settings' stage into the account the client factory reaches."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientFactory,
        progress: Progress | None = None,
    ) -> None:
        if settings.stage not in DEPLOYABLE:
            raise ConfigError(
                f"stage {settings.stage} is planned but its deploy is not built yet;"
                f" deployable stages: {', '.join(DEPLOYABLE)}"
            )
        self.settings = settings
        self.clients = clients
        self.progress = progress or Progress()
        self.ecs = EcsInfrastructure(clients.client("ecs"), settings.cluster_name)
        self.images = ImageBuilder(clients.client("ecr"), settings.image_tag)
        if settings.build:
            self.images.preflight()

    def deploy(self) -> DeployResult:
        """Deploy; a first deploy that fails half-way removes what it made."""
        started = time.monotonic()
        with self.progress.step("discover network"):
            network = NetworkDiscovery(
                self.clients.client("ec2"), self.settings
            ).discover_all()
        fresh = not self.ecs.service_exists(SINGLE_SERVICE)
        try:
            outputs = self._deploy(network)
        except Exception as error:
            if fresh:
                logger.error("deploy failed; removing what this run created")
                self.teardown()
            if isinstance(error, DeployError | ConfigError):
                raise
            raise DeployError(
                f"deploy of stage {self.settings.stage} failed: {error}",
                region=self.settings.region,
            ) from error
        logger.info(
            "stage %s %s in %.1fs",
            self.settings.stage,
            "deployed" if fresh else "updated",
            time.monotonic() - started,
        )
        return DeployResult(
            outputs=outputs, timings=self.progress.timings, created=fresh
        )

    def _deploy(self, network: Network) -> dict[str, Any]:
        settings = self.settings
        tags = settings.tags(created=int(time.time()))
        enabled = features(settings.stage)
        step = self.progress.step
        with step("IAM roles"):
            roles = IamRoles(self.clients.client("iam"), settings.prefix).ensure(tags)
        with step("ECR repositories"):
            repos = Repositories(self.clients.client("ecr"), settings.prefix).ensure(
                tags
            )
        if settings.build:
            with step("build and push images"):
                self.images.build_and_push(repos)
        with step("log groups"):
            logs = LogGroups(self.clients.client("logs"), settings.prefix)
            log_group = logs.ensure(logs.tasks, tags)
        with step("security groups"):
            groups = SecurityGroups(
                self.clients.client("ec2"), settings.prefix, network.vpc_id
            ).ensure(tags, efs=Feature.EFS in enabled)
        with step("load balancer"):
            lb = Alb(self.clients.client("elbv2"), settings.prefix).ensure(
                vpc_id=network.vpc_id,
                subnets=network.subnet_ids,
                zones=len(network.zones),
                group=groups.alb,
                tags=tags,
            )
        with step("cluster"):
            cluster_arn = self.ecs.ensure_cluster(tags)
        with step("task definitions"):
            context = self._context(
                repos, roles.execution_arn, roles.task_arn, log_group
            )
            specs = build(enabled, context)
            arns = [self.ecs.register_task_definition(spec, tags) for spec in specs]
        with step("services"):
            service_arn = self.ecs.create_or_update_service(
                ServiceSpec(
                    name=SINGLE_SERVICE,
                    task_definition=arns[0],
                    desired_count=1,
                    subnets=network.subnet_ids,
                    security_groups=[
                        groups.tasks,
                        *[g.id for g in network.security_groups],
                    ],
                    load_balancers=[
                        {
                            "targetGroupArn": lb.target_group_arn,
                            "containerName": "gateway",
                            "containerPort": GATEWAY_PORT,
                        }
                    ],
                    # One broker and one Redis per service: never run two.
                    minimum_healthy_percent=0,
                    maximum_percent=100,
                    health_check_grace_seconds=120,
                ),
                tags,
            )
        return self._outputs(
            cluster_arn, {SINGLE_SERVICE: service_arn}, lb.dns_name, context
        )

    def _context(
        self, repos: dict[str, str], execution_role: str, task_role: str, log_group: str
    ) -> Context:
        previous = self._previous_environment()
        password = previous.get("RABBITMQ_PASSWORD") or secrets.token_urlsafe(18)
        jwt_secret = (
            self.settings.supabase_jwt_secret
            or previous.get("JWT_SECRET")
            or secrets.token_urlsafe(32)
        )
        by_target = (
            LOCAL_SERVICE_SETTINGS
            if self.settings.target == "local"
            else AWS_SERVICE_SETTINGS
        )
        environment = {
            **COMMON_SERVICE_SETTINGS,
            **by_target,
            "AWS_REGION": self.settings.region,
            "ECS_CLUSTER": self.settings.cluster_name,
            "JWT_SECRET": jwt_secret,
        }
        if self.settings.external_check_url:
            environment["EXTERNAL_CHECK_URL"] = self.settings.external_check_url
        return Context(
            images={
                name: f"{uri}:{self.settings.image_tag}" for name, uri in repos.items()
            },
            execution_role=execution_role,
            task_role=task_role,
            log_group=log_group,
            region=self.settings.region,
            environment=environment,
            rabbitmq_user=RABBITMQ_USER,
            rabbitmq_password=password,
        )

    def _previous_environment(self) -> dict[str, str]:
        """Credentials of the deployed revision, so an update keeps them."""
        current = self.ecs.latest_task_definition(SINGLE_FAMILY)
        if not current:
            return {}
        for container in current["containerDefinitions"]:
            if container["name"] == "gateway":
                return {
                    item["name"]: item["value"]
                    for item in container.get("environment", [])
                }
        return {}

    def _outputs(
        self, cluster_arn: str, services: dict[str, str], dns_name: str, ctx: Context
    ) -> dict[str, Any]:
        settings = self.settings
        outputs: dict[str, Any] = {
            "stage": settings.stage,
            "target": settings.target,
            "region": settings.region,
            "run_id": settings.run_id,
            "cluster": cluster_arn,
            "services": services,
            "gateway_url": f"http://{dns_name}",
            "load_balancer_dns": dns_name,
        }
        if self.clients.endpoint_url:
            outputs["aws_endpoint_url"] = self.clients.endpoint_url
            outputs["jwt_secret"] = ctx.environment["JWT_SECRET"]
        return outputs

    def wait_ready(self, timeout: float = STEADY_TIMEOUT) -> dict[str, Any]:
        """Wait until the services run healthy; the outputs that need them running."""
        services = [SINGLE_SERVICE]
        with self.progress.step("services steady and healthy"):
            wait_until_steady(
                self.clients.client("ecs"),
                self.settings.cluster_name,
                services,
                timeout,
            )
        environment = self._previous_environment()
        credentials = (
            environment.get("RABBITMQ_USER", RABBITMQ_USER),
            environment.get("RABBITMQ_PASSWORD", ""),
        )
        return backing_endpoints(
            self.clients.client("ecs"),
            self.settings.cluster_name,
            SINGLE_SERVICE,
            credentials,
        )

    def teardown(self) -> list[str]:
        """Remove every resource of the run; returns what was removed."""
        with self.progress.step("teardown"):
            return Reaper(self.clients, self.settings).reap_run(self.settings.run_id)
