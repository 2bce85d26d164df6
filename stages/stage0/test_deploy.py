"""A deploy into an empty account creates the platform; a second one updates it."""

from __future__ import annotations

from typing import Any

from harness.deployment import Deployment
from harness.probes.inventory import counts, inventory

EXPECTED_CONTAINERS = {"gateway", "agent", "redis", "rabbitmq", "chroma"}


def _service(deployment: Deployment) -> dict[str, Any]:
    ecs = deployment.client("ecs")
    found = ecs.describe_services(
        cluster=deployment.settings.cluster_name, services=["euglena-service"]
    )["services"]
    assert found, "service euglena-service does not exist"
    return dict(found[0])


def _task_definition(deployment: Deployment) -> dict[str, Any]:
    arn = _service(deployment)["taskDefinition"]
    ecs = deployment.client("ecs")
    return dict(ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"])


def test_empty_account_gets_every_kind_of_resource(deployment: Deployment) -> None:
    """The first deploy creates every kind of resource the platform needs."""
    found = counts(inventory(deployment.clients, deployment.settings))

    assert found.get("ecs:cluster") == 1
    assert found.get("ecs:service") == 1
    assert found.get("ecs:task-definition", 0) >= 1
    assert found.get("iam:role") == 2
    assert found.get("ecr:repository") == 3
    assert found.get("logs:log-group") == 1
    assert found.get("ec2:security-group") == 2
    assert found.get("elasticloadbalancing:loadbalancer") == 1
    assert found.get("elasticloadbalancing:targetgroup") == 1


def test_service_runs_one_fargate_task_behind_the_alb(deployment: Deployment) -> None:
    """``euglena-service`` runs one Fargate task whose gateway sits behind the ALB."""
    service = _service(deployment)
    elbv2 = deployment.client("elbv2")

    group_arn = service["loadBalancers"][0]["targetGroupArn"]
    group = elbv2.describe_target_groups(TargetGroupArns=[group_arn])["TargetGroups"][0]

    assert service["desiredCount"] == 1
    assert service["launchType"] == "FARGATE"
    assert service["loadBalancers"][0]["containerName"] == "gateway"
    assert group["TargetType"] == "ip"
    assert group["HealthCheckPath"] == "/health"


def test_one_task_definition_holds_all_five_containers(deployment: Deployment) -> None:
    """All five containers share one task, each health-checked and logged."""
    definition = _task_definition(deployment)
    containers = {c["name"]: c for c in definition["containerDefinitions"]}

    assert set(containers) == EXPECTED_CONTAINERS
    for name, container in containers.items():
        health = container.get("healthCheck", {})
        assert health.get("command"), f"{name} has no health check"
        assert health["startPeriod"] >= 10, f"{name} health check has no start period"
        assert container["logConfiguration"]["logDriver"] == "awslogs", name
    assert definition["networkMode"] == "awsvpc"


def test_second_deploy_updates_without_duplicating(deployment: Deployment) -> None:
    """Deploying again adds a task definition revision and duplicates nothing."""
    before = counts(inventory(deployment.clients, deployment.settings))
    revision_before = _task_definition(deployment)["revision"]

    deployment.deploy_again()

    after = counts(inventory(deployment.clients, deployment.settings))
    definition = _task_definition(deployment)
    assert definition["revision"] == revision_before + 1
    assert after.pop("ecs:task-definition") == before.pop("ecs:task-definition") + 1
    assert after == before
