"""The platform's security groups and the paths they open.

The ALB group takes HTTP from anywhere; the tasks group takes the gateway port
from the ALB group and anything from itself, so the platform's tasks reach each
other; the file-system group takes NFS from the tasks group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from harness.aws.tags import key_value

logger = logging.getLogger(__name__)

GATEWAY_PORT = 8080
NFS_PORT = 2049


@dataclass(frozen=True)
class Groups:
    alb: str
    tasks: str
    efs: str | None = None


class SecurityGroups:
    def __init__(self, ec2: Any, prefix: str, vpc_id: str) -> None:
        self._ec2 = ec2
        self._prefix = prefix
        self._vpc_id = vpc_id

    def ensure(self, tags: dict[str, str], *, efs: bool = False) -> Groups:
        alb = self._ensure_group("alb", "Euglena load balancer", tags)
        tasks = self._ensure_group("tasks", "Euglena ECS tasks", tags)
        self._allow(
            alb,
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
        )
        self._allow(tasks, self._from_group(alb, GATEWAY_PORT, GATEWAY_PORT))
        self._allow(
            tasks, {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": tasks}]}
        )
        efs_group = None
        if efs:
            efs_group = self._ensure_group("efs", "Euglena file system", tags)
            self._allow(efs_group, self._from_group(tasks, NFS_PORT, NFS_PORT))
        return Groups(alb=alb, tasks=tasks, efs=efs_group)

    @staticmethod
    def _from_group(group: str, low: int, high: int) -> dict[str, Any]:
        return {
            "IpProtocol": "tcp",
            "FromPort": low,
            "ToPort": high,
            "UserIdGroupPairs": [{"GroupId": group}],
        }

    def _ensure_group(self, role: str, description: str, tags: dict[str, str]) -> str:
        name = f"{self._prefix}-{role}"
        found = self._ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [self._vpc_id]},
            ]
        )["SecurityGroups"]
        if found:
            return str(found[0]["GroupId"])
        group_id = self._ec2.create_security_group(
            GroupName=name,
            Description=description,
            VpcId=self._vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": key_value({**tags, "Name": name}),
                }
            ],
        )["GroupId"]
        logger.info("created security group %s (%s)", name, group_id)
        return str(group_id)

    def _allow(self, group_id: str, permission: dict[str, Any]) -> None:
        try:
            self._ec2.authorize_security_group_ingress(
                GroupId=group_id, IpPermissions=[permission]
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "InvalidPermission.Duplicate":
                raise
