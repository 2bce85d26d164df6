"""Tags in the shapes the different AWS APIs want them."""

from __future__ import annotations


def key_value(tags: dict[str, str]) -> list[dict[str, str]]:
    """EC2, ELB, IAM, ECR, EFS: ``[{"Key": ..., "Value": ...}]``."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def lower_key_value(tags: dict[str, str]) -> list[dict[str, str]]:
    """ECS: ``[{"key": ..., "value": ...}]``."""
    return [{"key": key, "value": value} for key, value in tags.items()]


def from_key_value(items: list[dict[str, str]] | None) -> dict[str, str]:
    """Back to a dict, from either casing."""
    return {
        item.get("Key", item.get("key", "")): item.get("Value", item.get("value", ""))
        for item in items or []
    }
