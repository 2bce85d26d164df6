"""ECR repositories for the platform's images and CloudWatch log groups."""

from __future__ import annotations

import logging
from typing import Any

from harness.aws.tags import key_value

logger = logging.getLogger(__name__)

PLATFORM_IMAGES = ("gateway", "agent", "metrics")
LOG_RETENTION_DAYS = 14


class Repositories:
    """One ECR repository per platform image, named with the run's prefix."""

    def __init__(self, ecr: Any, prefix: str) -> None:
        self._ecr = ecr
        self._prefix = prefix

    def name(self, image: str) -> str:
        return f"{self._prefix}/{image}"

    def ensure(self, tags: dict[str, str]) -> dict[str, str]:
        """Image name to repository URI."""
        uris = {}
        for image in PLATFORM_IMAGES:
            name = self.name(image)
            try:
                repo = self._ecr.describe_repositories(repositoryNames=[name])[
                    "repositories"
                ][0]
            except self._ecr.exceptions.RepositoryNotFoundException:
                repo = self._ecr.create_repository(
                    repositoryName=name,
                    imageScanningConfiguration={"scanOnPush": True},
                    tags=key_value(tags),
                )["repository"]
                logger.info("created ECR repository %s", name)
            uris[image] = str(repo["repositoryUri"])
        return uris

    def delete(self, name: str) -> None:
        self._ecr.delete_repository(repositoryName=name, force=True)
        logger.info("deleted ECR repository %s", name)


class LogGroups:
    """The log groups containers and functions write to."""

    def __init__(self, logs: Any, prefix: str) -> None:
        self._logs = logs
        self._prefix = prefix

    @property
    def tasks(self) -> str:
        return f"/ecs/{self._prefix}"

    def lambda_group(self, function: str) -> str:
        return f"/aws/lambda/{function}"

    def ensure(self, name: str, tags: dict[str, str]) -> str:
        found = self._logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        if not any(group["logGroupName"] == name for group in found):
            self._logs.create_log_group(logGroupName=name, tags=tags)
            self._logs.put_retention_policy(
                logGroupName=name, retentionInDays=LOG_RETENTION_DAYS
            )
            logger.info("created log group %s", name)
        return name

    def find(self) -> list[str]:
        """Groups whose names carry the run's prefix (tasks' and functions')."""
        names: list[str] = []
        for prefix in (self.tasks, self.lambda_group(self._prefix)):
            paginator = self._logs.get_paginator("describe_log_groups")
            for page in paginator.paginate(logGroupNamePrefix=prefix):
                names.extend(group["logGroupName"] for group in page["logGroups"])
        return names

    def delete(self, name: str) -> None:
        self._logs.delete_log_group(logGroupName=name)
        logger.info("deleted log group %s", name)
