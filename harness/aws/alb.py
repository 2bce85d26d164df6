"""The application load balancer in front of the gateway."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from harness.aws.security_groups import GATEWAY_PORT
from harness.aws.tags import key_value
from harness.errors import ConfigError

logger = logging.getLogger(__name__)

HEALTH_PATH = "/health"


@dataclass(frozen=True)
class LoadBalancer:
    arn: str
    dns_name: str
    target_group_arn: str
    listener_arn: str


class Alb:
    """An internet-facing ALB, an ``ip`` target group on ``/health``, a listener."""

    def __init__(self, elbv2: Any, prefix: str) -> None:
        self._elbv2 = elbv2
        self._prefix = prefix

    @property
    def name(self) -> str:
        return f"{self._prefix}-alb"

    @property
    def target_group_name(self) -> str:
        return f"{self._prefix}-gw"

    def ensure(
        self,
        *,
        vpc_id: str,
        subnets: list[str],
        zones: int,
        group: str,
        tags: dict[str, str],
    ) -> LoadBalancer:
        if zones < 2:
            raise ConfigError(
                "an application load balancer needs subnets in at least two"
                " availability zones; name subnets in two zones in SUBNET_NAMES"
            )
        lb = self._ensure_balancer(subnets, group, tags)
        target_group = self._ensure_target_group(vpc_id, tags)
        listener = self._ensure_listener(lb["LoadBalancerArn"], target_group, tags)
        return LoadBalancer(
            arn=lb["LoadBalancerArn"],
            dns_name=lb["DNSName"],
            target_group_arn=target_group,
            listener_arn=listener,
        )

    def _ensure_balancer(
        self, subnets: list[str], group: str, tags: dict[str, str]
    ) -> Any:
        try:
            return self._elbv2.describe_load_balancers(Names=[self.name])[
                "LoadBalancers"
            ][0]
        except self._elbv2.exceptions.LoadBalancerNotFoundException:
            pass
        lb = self._elbv2.create_load_balancer(
            Name=self.name,
            Subnets=subnets,
            SecurityGroups=[group],
            Scheme="internet-facing",
            Type="application",
            IpAddressType="ipv4",
            Tags=key_value(tags),
        )["LoadBalancers"][0]
        logger.info("created load balancer %s", self.name)
        return lb

    def _ensure_target_group(self, vpc_id: str, tags: dict[str, str]) -> str:
        try:
            found = self._elbv2.describe_target_groups(Names=[self.target_group_name])
            return str(found["TargetGroups"][0]["TargetGroupArn"])
        except self._elbv2.exceptions.TargetGroupNotFoundException:
            pass
        group = self._elbv2.create_target_group(
            Name=self.target_group_name,
            Protocol="HTTP",
            Port=GATEWAY_PORT,
            VpcId=vpc_id,
            TargetType="ip",
            HealthCheckProtocol="HTTP",
            HealthCheckPath=HEALTH_PATH,
            HealthCheckIntervalSeconds=15,
            HealthCheckTimeoutSeconds=5,
            HealthyThresholdCount=2,
            UnhealthyThresholdCount=5,
            Matcher={"HttpCode": "200"},
            Tags=key_value(tags),
        )["TargetGroups"][0]
        logger.info("created target group %s", self.target_group_name)
        return str(group["TargetGroupArn"])

    def _ensure_listener(
        self, lb_arn: str, target_group: str, tags: dict[str, str]
    ) -> str:
        listeners = self._elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        for listener in listeners:
            if listener["Port"] == 80:
                return str(listener["ListenerArn"])
        listener = self._elbv2.create_listener(
            LoadBalancerArn=lb_arn,
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}],
            Tags=key_value(tags),
        )["Listeners"][0]
        return str(listener["ListenerArn"])
