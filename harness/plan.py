"""The stage plan: which features each migration stage turns on.

Stages are cumulative: stage N has every feature of the stages before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from harness.errors import ConfigError


class Feature(StrEnum):
    """One capability of the deployed platform that a stage can switch on."""

    CORE = "core"  # cluster, IAM, ECR, logs, security groups, ALB, one task
    SKIP_MODE = "skip-mode"
    LENIENT_HEALTH = "lenient-health"
    SPLIT_SERVICES = "split-services"
    EFS = "efs"
    METRICS = "metrics"
    LAMBDA = "lambda"
    PROTECTION = "protection"
    CLOUD_MAP = "cloud-map"
    SCHEDULE = "schedule"
    SUPERDEPLOY = "superdeploy"
    SUPABASE = "supabase"


@dataclass(frozen=True)
class Stage:
    """One migration stage: its id as people write it and what it adds."""

    id: str
    title: str
    adds: tuple[Feature, ...]

    @property
    def package(self) -> str:
        """The pytest package that proves this stage (``stage0_5`` for 0.5)."""
        return "stage" + self.id.replace(".", "_")


STAGES: tuple[Stage, ...] = (
    Stage("0", "deploy from scratch and update", (Feature.CORE,)),
    Stage("0.5", "agent skip mode", (Feature.SKIP_MODE,)),
    Stage("1", "stable health and offline embeddings", (Feature.LENIENT_HEALTH,)),
    Stage(
        "2", "gateway and agent services on EFS", (Feature.SPLIT_SERVICES, Feature.EFS)
    ),
    Stage("3", "queue depth metrics", (Feature.METRICS,)),
    Stage("4", "autoscaler Lambda", (Feature.LAMBDA,)),
    Stage("5", "task scale-in protection", (Feature.PROTECTION,)),
    Stage("6", "Cloud Map discovery", (Feature.CLOUD_MAP,)),
    Stage("7", "scheduled autoscaling", (Feature.SCHEDULE,)),
    Stage("8", "superdeploy", (Feature.SUPERDEPLOY,)),
    Stage("9", "Supabase task tracking", (Feature.SUPABASE,)),
)

STAGE_IDS = tuple(stage.id for stage in STAGES)


def get_stage(stage_id: str) -> Stage:
    """The stage called ``stage_id``; a clear error lists the real ones."""
    for stage in STAGES:
        if stage.id == stage_id.strip():
            return stage
    raise ConfigError(
        f"there is no stage {stage_id!r}; choose one of {', '.join(STAGE_IDS)}"
    )


def features(stage_id: str) -> frozenset[Feature]:
    """Every feature deployed at ``stage_id``: its own and all earlier stages'."""
    wanted = get_stage(stage_id)
    enabled: set[Feature] = set()
    for stage in STAGES:
        enabled.update(stage.adds)
        if stage == wanted:
            return frozenset(enabled)
    raise AssertionError("unreachable: get_stage returned a listed stage")
