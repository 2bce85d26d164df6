"""The ECS cluster, task definitions and services."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from harness.aws.retry import eventually
from harness.aws.tags import lower_key_value

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """What an ECS service should be; ``create_or_update_service`` makes it so."""

    name: str
    task_definition: str
    desired_count: int
    subnets: list[str]
    security_groups: list[str]
    assign_public_ip: bool = True
    load_balancers: list[dict[str, Any]] = field(default_factory=list)
    service_registries: list[dict[str, Any]] = field(default_factory=list)
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    health_check_grace_seconds: int | None = None


class EcsInfrastructure:
    """Creates on the first deploy, updates on the next, never duplicates."""

    def __init__(self, ecs: Any, cluster: str) -> None:
        self._ecs = ecs
        self.cluster = cluster

    def ensure_cluster(self, tags: dict[str, str]) -> str:
        found = self._ecs.describe_clusters(clusters=[self.cluster])["clusters"]
        active = [c for c in found if c["status"] == "ACTIVE"]
        if active:
            return str(active[0]["clusterArn"])
        cluster = self._ecs.create_cluster(
            clusterName=self.cluster,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            settings=[{"name": "containerInsights", "value": "enabled"}],
            tags=lower_key_value(tags),
        )["cluster"]
        logger.info("created cluster %s", self.cluster)
        return str(cluster["clusterArn"])

    def register_task_definition(
        self, spec: dict[str, Any], tags: dict[str, str]
    ) -> str:
        definition = eventually(
            lambda: self._ecs.register_task_definition(
                **spec, tags=lower_key_value(tags)
            )
        )["taskDefinition"]
        arn = str(definition["taskDefinitionArn"])
        logger.info("registered task definition %s", arn.rsplit("/", 1)[-1])
        return arn

    def describe_service(self, name: str) -> dict[str, Any] | None:
        try:
            found = self._ecs.describe_services(cluster=self.cluster, services=[name])
        except self._ecs.exceptions.ClusterNotFoundException:
            return None
        for service in found["services"]:
            if service["status"] != "INACTIVE":
                return dict(service)
        return None

    def service_exists(self, name: str) -> bool:
        return self.describe_service(name) is not None

    def ensure_service(self, spec: ServiceSpec, tags: dict[str, str]) -> str:
        """Create the service if it does not exist; leave an existing one alone."""
        existing = self.describe_service(spec.name)
        if existing:
            return str(existing["serviceArn"])
        return self._create_service(spec, tags)

    def create_or_update_service(self, spec: ServiceSpec, tags: dict[str, str]) -> str:
        """Create the service, or roll it onto the spec's task definition."""
        existing = self.describe_service(spec.name)
        if existing is None:
            return self._create_service(spec, tags)
        self._ecs.update_service(
            cluster=self.cluster,
            service=spec.name,
            taskDefinition=spec.task_definition,
            desiredCount=spec.desired_count,
            deploymentConfiguration=self._deployment(spec),
            networkConfiguration=self._network(spec),
        )
        logger.info(
            "updated service %s to %s",
            spec.name,
            spec.task_definition.rsplit("/", 1)[-1],
        )
        return str(existing["serviceArn"])

    def _create_service(self, spec: ServiceSpec, tags: dict[str, str]) -> str:
        extra: dict[str, Any] = {}
        if spec.load_balancers:
            extra["loadBalancers"] = spec.load_balancers
            extra["healthCheckGracePeriodSeconds"] = (
                spec.health_check_grace_seconds or 60
            )
        if spec.service_registries:
            extra["serviceRegistries"] = spec.service_registries
        service = eventually(
            lambda: self._ecs.create_service(
                cluster=self.cluster,
                serviceName=spec.name,
                taskDefinition=spec.task_definition,
                desiredCount=spec.desired_count,
                launchType="FARGATE",
                networkConfiguration=self._network(spec),
                deploymentConfiguration=self._deployment(spec),
                enableExecuteCommand=True,
                propagateTags="SERVICE",
                tags=lower_key_value(tags),
                **extra,
            )
        )["service"]
        logger.info("created service %s", spec.name)
        return str(service["serviceArn"])

    @staticmethod
    def _network(spec: ServiceSpec) -> dict[str, Any]:
        return {
            "awsvpcConfiguration": {
                "subnets": spec.subnets,
                "securityGroups": spec.security_groups,
                "assignPublicIp": "ENABLED" if spec.assign_public_ip else "DISABLED",
            }
        }

    @staticmethod
    def _deployment(spec: ServiceSpec) -> dict[str, Any]:
        return {
            "minimumHealthyPercent": spec.minimum_healthy_percent,
            "maximumPercent": spec.maximum_percent,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        }

    def task_definition_arns(self, family: str) -> list[str]:
        arns: list[str] = []
        paginator = self._ecs.get_paginator("list_task_definitions")
        for page in paginator.paginate(familyPrefix=family, status="ACTIVE"):
            arns.extend(page["taskDefinitionArns"])
        return arns

    def latest_task_definition(self, family: str) -> dict[str, Any] | None:
        try:
            found = self._ecs.describe_task_definition(taskDefinition=family)
        except self._ecs.exceptions.ClientException:
            return None
        return dict(found["taskDefinition"])
