"""Finding and removing what a run created: teardown and the reaper.

Resources are found by their run-id tag through the Resource Groups Tagging
API, and, for the kinds that API does not list (IAM roles, log groups), by the
run's name prefix. Removal goes in dependency order: services before their
cluster, listeners before their load balancer, security groups last.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from botocore.exceptions import ClientError

from harness.aws.clients import ClientFactory
from harness.aws.iam import IamRoles
from harness.aws.registry import LogGroups
from harness.aws.retry import eventually
from harness.aws.tags import from_key_value
from harness.config import TAG_CREATED, TAG_PROJECT, TAG_RUN, Settings

logger = logging.getLogger(__name__)

# Tagging API resource types, in the order they are removed.
REMOVAL_ORDER = (
    "ecs:service",
    "ecs:cluster",
    "ecs:task-definition",
    "elasticloadbalancing:listener",
    "elasticloadbalancing:loadbalancer",
    "elasticloadbalancing:targetgroup",
    "ecr:repository",
    "ec2:security-group",
)


def resource_type(arn: str) -> str:
    """``service:type`` of an ARN, as the tagging API's type filters spell it."""
    parts = arn.split(":", 5)
    service, rest = parts[2], parts[5]
    kind = rest.split("/", 1)[0].split(":", 1)[0]
    if service == "elasticloadbalancing" and kind in {"loadbalancer", "listener"}:
        return f"{service}:{kind}"
    return f"{service}:{kind}"


class Reaper:
    """Removes one run's resources, or every run's older than a bound."""

    def __init__(self, clients: ClientFactory, settings: Settings) -> None:
        self._clients = clients
        self._settings = settings

    def tagged(self, run_id: str | None = None) -> dict[str, list[str]]:
        """ARNs tagged as Euglena's (of one run, if given), by resource type."""
        tag_filter = [{"Key": TAG_PROJECT, "Values": ["euglena"]}]
        if run_id:
            tag_filter.append({"Key": TAG_RUN, "Values": [run_id]})
        found: dict[str, list[str]] = defaultdict(list)
        paginator = self._clients.client("resourcegroupstaggingapi").get_paginator(
            "get_resources"
        )
        for page in paginator.paginate(TagFilters=tag_filter):
            for item in page["ResourceTagMappingList"]:
                found[resource_type(item["ResourceARN"])].append(item["ResourceARN"])
        return dict(found)

    def runs(self) -> dict[str, int]:
        """Run ids that have tagged resources, with their creation time."""
        runs: dict[str, int] = {}
        paginator = self._clients.client("resourcegroupstaggingapi").get_paginator(
            "get_resources"
        )
        for page in paginator.paginate(
            TagFilters=[{"Key": TAG_PROJECT, "Values": ["euglena"]}]
        ):
            for item in page["ResourceTagMappingList"]:
                tags = from_key_value(item["Tags"])
                created = int(tags.get(TAG_CREATED, "0") or 0)
                run = tags.get(TAG_RUN, "")
                runs[run] = min(runs.get(run, created), created)
        return runs

    def reap_run(self, run_id: str) -> list[str]:
        """Remove everything run ``run_id`` created; returns what was removed."""
        removed: list[str] = []
        tagged = self.tagged(run_id)
        tagged["ecr:repository"] = self._repositories(run_id)
        self._open_security_groups(tagged.get("ec2:security-group", []))
        for kind in REMOVAL_ORDER:
            for arn in tagged.get(kind, []):
                if self._remove(kind, arn):
                    removed.append(arn)
        removed.extend(self._remove_by_prefix(run_id))
        logger.info("run %s: removed %d resources", run_id, len(removed))
        return removed

    def _remove_by_prefix(self, run_id: str) -> list[str]:
        prefix = f"euglena-{run_id}"
        removed = []
        logs = LogGroups(self._clients.client("logs"), prefix)
        for name in logs.find():
            logs.delete(name)
            removed.append(name)
        roles = IamRoles(self._clients.client("iam"), prefix)
        for name in roles.find(run_id):
            roles.delete(name)
            removed.append(name)
        return removed

    def _remove(self, kind: str, arn: str) -> bool:
        remover = getattr(self, "_remove_" + kind.split(":")[1].replace("-", "_"))
        try:
            remover(arn)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code.endswith("NotFound") or code in {
                "ClusterNotFoundException",
                "ServiceNotFoundException",
                "InvalidGroup.NotFound",
                "LoadBalancerNotFound",
                "TargetGroupNotFound",
                "ListenerNotFound",
                "RepositoryNotFoundException",
            }:
                return False
            raise
        logger.debug("removed %s", arn)
        return True

    def _exists(self, kind: str, arn: str) -> bool:
        """Whether a tagged resource is live (ECS keeps deleted ones listed a while)."""
        if not kind.startswith("ecs:"):
            return True
        try:
            status = _status_of(self._clients.client("ecs"), kind, arn)
        except ClientError:
            return False
        return status not in {"INACTIVE", "DELETE_IN_PROGRESS", "DELETED", "MISSING"}

    def _remove_service(self, arn: str) -> None:
        ecs = self._clients.client("ecs")
        cluster = arn.split("/")[-2]
        ecs.update_service(cluster=cluster, service=arn, desiredCount=0)
        ecs.delete_service(cluster=cluster, service=arn, force=True)

    def _remove_cluster(self, arn: str) -> None:
        ecs = self._clients.client("ecs")
        for service in ecs.list_services(cluster=arn)["serviceArns"]:
            self._remove_service(service)
        for task in ecs.list_tasks(cluster=arn, desiredStatus="RUNNING")["taskArns"]:
            ecs.stop_task(cluster=arn, task=task, reason="teardown")
        eventually(
            lambda: ecs.delete_cluster(cluster=arn),
            also=("ClusterContainsServicesException", "ClusterContainsTasksException"),
        )

    def _remove_task_definition(self, arn: str) -> None:
        ecs = self._clients.client("ecs")
        ecs.deregister_task_definition(taskDefinition=arn)
        if hasattr(ecs, "delete_task_definitions"):
            ecs.delete_task_definitions(taskDefinitions=[arn])

    def _remove_listener(self, arn: str) -> None:
        self._clients.client("elbv2").delete_listener(ListenerArn=arn)

    def _remove_loadbalancer(self, arn: str) -> None:
        elbv2 = self._clients.client("elbv2")
        for listener in elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]:
            elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        elbv2.delete_load_balancer(LoadBalancerArn=arn)

    def _remove_targetgroup(self, arn: str) -> None:
        elbv2 = self._clients.client("elbv2")
        eventually(
            lambda: elbv2.delete_target_group(TargetGroupArn=arn),
            also=("ResourceInUse",),
        )

    def _remove_repository(self, arn: str) -> None:
        name = arn.split(":repository/", 1)[1]
        self._clients.client("ecr").delete_repository(repositoryName=name, force=True)

    def _open_security_groups(self, arns: list[str]) -> None:
        """Drop every rule first: groups of a run refer to each other."""
        ec2 = self._clients.client("ec2")
        ids = [arn.rsplit("/", 1)[-1] for arn in arns]
        if not ids:
            return
        for group in ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"]:
            if group["IpPermissions"]:
                ec2.revoke_security_group_ingress(
                    GroupId=group["GroupId"], IpPermissions=group["IpPermissions"]
                )

    def _repositories(self, run_id: str) -> list[str]:
        """ECR repositories of the run (not every emulation tags-lists them)."""
        ecr = self._clients.client("ecr")
        arns = []
        for page in ecr.get_paginator("describe_repositories").paginate():
            for repo in page["repositories"]:
                if not repo["repositoryName"].startswith(f"euglena-{run_id}/"):
                    continue
                tags = from_key_value(
                    ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])[
                        "tags"
                    ]
                )
                if tags.get(TAG_RUN) == run_id:
                    arns.append(repo["repositoryArn"])
        return arns

    def _remove_security_group(self, arn: str) -> None:
        ec2 = self._clients.client("ec2")
        group_id = arn.rsplit("/", 1)[-1]
        eventually(
            lambda: ec2.delete_security_group(GroupId=group_id),
            also=("DependencyViolation",),
            timeout=600,
        )

    def existing(self, run_id: str) -> dict[str, list[str]]:
        """What of the run still exists, by kind (empty when clean)."""
        found = {
            kind: [arn for arn in arns if self._exists(kind, arn)]
            for kind, arns in self.tagged(run_id).items()
        }
        found = {kind: arns for kind, arns in found.items() if arns}
        repos = self._repositories(run_id)
        if repos:
            found["ecr:repository"] = repos
        prefix = f"euglena-{run_id}"
        roles = IamRoles(self._clients.client("iam"), prefix).find(run_id)
        logs = LogGroups(self._clients.client("logs"), prefix).find()
        if roles:
            found["iam:role"] = roles
        if logs:
            found["logs:log-group"] = logs
        return found


def _status_of(ecs: Any, kind: str, arn: str) -> str:
    if kind == "ecs:cluster":
        found = ecs.describe_clusters(clusters=[arn])["clusters"]
    elif kind == "ecs:service":
        found = ecs.describe_services(cluster=arn.split("/")[-2], services=[arn])[
            "services"
        ]
    else:
        found = [ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]]
    return str(found[0]["status"]) if found else "MISSING"


def describe(resources: dict[str, Any]) -> str:
    return ", ".join(
        f"{kind} x{len(items)}" for kind, items in sorted(resources.items())
    )


def reap_old_runs(
    clients: ClientFactory, settings: Settings, older_than_minutes: float
) -> dict[str, list[str]]:
    """Remove every run created longer ago than the bound; returns what went."""
    import time

    reaper = Reaper(clients, settings)
    cutoff = time.time() - older_than_minutes * 60
    removed = {}
    for run_id, created in reaper.runs().items():
        if run_id and created <= cutoff:
            removed[run_id] = reaper.reap_run(run_id)
    return removed
