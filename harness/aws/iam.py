"""The platform's IAM roles: ECS's execution role and the tasks' own role."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from harness.aws.tags import from_key_value, key_value
from harness.config import TAG_RUN

logger = logging.getLogger(__name__)

EXECUTION_POLICY = (
    "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
)
ECS_TASKS_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
# Exactly what the platform's code calls, nothing more.
TASK_PERMISSIONS = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "QueueMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData", "cloudwatch:GetMetricData"],
            "Resource": "*",
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        },
        {
            "Sid": "TaskProtection",
            "Effect": "Allow",
            "Action": ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
            "Resource": "*",
        },
        {
            "Sid": "Discovery",
            "Effect": "Allow",
            "Action": ["servicediscovery:DiscoverInstances"],
            "Resource": "*",
        },
        {
            "Sid": "FileSystem",
            "Effect": "Allow",
            "Action": [
                "elasticfilesystem:ClientMount",
                "elasticfilesystem:ClientWrite",
                "elasticfilesystem:ClientRootAccess",
            ],
            "Resource": "*",
        },
    ],
}


@dataclass(frozen=True)
class Roles:
    execution_arn: str
    task_arn: str


class IamRoles:
    """Creates, finds and removes the run's roles, named with its prefix."""

    def __init__(self, iam: Any, prefix: str) -> None:
        self._iam = iam
        self._prefix = prefix

    @property
    def names(self) -> tuple[str, str]:
        return f"{self._prefix}-execution", f"{self._prefix}-task"

    def ensure(self, tags: dict[str, str]) -> Roles:
        execution, task = self.names
        execution_arn = self._ensure_role(execution, tags)
        self._iam.attach_role_policy(RoleName=execution, PolicyArn=EXECUTION_POLICY)
        task_arn = self._ensure_role(task, tags)
        self._iam.put_role_policy(
            RoleName=task,
            PolicyName="euglena-task",
            PolicyDocument=json.dumps(TASK_PERMISSIONS),
        )
        return Roles(execution_arn=execution_arn, task_arn=task_arn)

    def _ensure_role(self, name: str, tags: dict[str, str]) -> str:
        try:
            return str(self._iam.get_role(RoleName=name)["Role"]["Arn"])
        except self._iam.exceptions.NoSuchEntityException:
            pass
        role = self._iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(ECS_TASKS_TRUST),
            Description="Euglena platform role",
            Tags=key_value(tags),
        )["Role"]
        logger.info("created IAM role %s", name)
        return str(role["Arn"])

    def find(self, run_id: str | None = None) -> list[str]:
        """Role names with the run's prefix (IAM is not in the tagging API)."""
        names = []
        for page in self._iam.get_paginator("list_roles").paginate():
            for role in page["Roles"]:
                if not role["RoleName"].startswith(self._prefix):
                    continue
                tags = from_key_value(
                    self._iam.list_role_tags(RoleName=role["RoleName"])["Tags"]
                )
                if run_id is None or tags.get(TAG_RUN) == run_id:
                    names.append(role["RoleName"])
        return names

    def delete(self, name: str) -> None:
        for policy in self._iam.list_attached_role_policies(RoleName=name)[
            "AttachedPolicies"
        ]:
            self._iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for policy_name in self._iam.list_role_policies(RoleName=name)["PolicyNames"]:
            self._iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
        self._iam.delete_role(RoleName=name)
        logger.info("deleted IAM role %s", name)
