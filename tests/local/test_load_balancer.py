"""The local ALB: real listeners, real health checks, truthful target health."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from harness.aws.alb import Alb as DeployedAlb
from harness.aws.clients import ClientFactory
from harness.aws.security_groups import GATEWAY_PORT
from harness.errors import NotReadyError
from harness.local.load_balancer import LocalLoadBalancers, install
from harness.local.moto_server import MotoServer

REGION = "us-east-1"
DEADLINE = 15.0
SCALE = 0.05  # a 6 s health-check interval lasts 0.3 s
HEALTH = "/health"
T = TypeVar("T")
FAST_CHECKS = {
    "HealthCheckPath": HEALTH,
    "HealthCheckIntervalSeconds": 6,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
    "Matcher": {"HttpCode": "200-299"},
}


@dataclass
class Account:
    """A moto account with the default VPC's first two subnets."""

    server: MotoServer
    elbv2: Any
    ec2: Any
    vpc_id: str
    subnets: list[str]


@dataclass
class Alb:
    """An ALB with an HTTP listener on port 80 forwarding to one ip target group."""

    name: str
    arn: str
    dns_name: str
    group_arn: str
    port: int


@dataclass
class Seen:
    """One request a target received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class TargetServer(ThreadingHTTPServer):
    """A real HTTP target on one loopback address that records what it serves."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.health_status = 200
        self.hang = threading.Event()
        self.seen: list[Seen] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def ip(self) -> str:
        return str(self.server_address[0])

    def served_paths(self) -> list[str]:
        return [s.path for s in list(self.seen) if not s.path.startswith(HEALTH)]

    def close(self) -> None:
        self.hang.set()
        self.shutdown()
        self.server_close()
        self.thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: TargetServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append(
            Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
        )
        if self.path == f"{HEALTH}/slow":
            self.server.hang.wait(DEADLINE)  # released at teardown
        if self.path.startswith(HEALTH):
            self._reply(self.server.health_status, {"health": "checked"})
        else:
            self._reply(201, {"served_by": self.server.ip, "body": body.decode()})

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Reply", "from-target")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def eventually(check: Callable[[], T], timeout: float = DEADLINE) -> T:
    """Retry ``check`` until it stops failing its assertions; fail with the last."""
    for attempt in Retrying(
        retry=retry_if_exception_type(AssertionError),
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.05),
        reraise=True,
    ):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def health(elbv2: Any, alb: Alb) -> dict[str, dict[str, Any]]:
    """Each target's TargetHealth, keyed by its IP address."""
    found = elbv2.describe_target_health(TargetGroupArn=alb.group_arn)
    return {
        d["Target"]["Id"]: d["TargetHealth"] for d in found["TargetHealthDescriptions"]
    }


@pytest.fixture(scope="module")
def account() -> Iterator[Account]:
    """A moto account whose ELBv2 has its target health completed."""
    install()
    with MotoServer() as server:
        clients = ClientFactory(REGION, endpoint_url=server.endpoint_url)
        ec2 = clients.client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
        vpc_id = vpc["Vpcs"][0]["VpcId"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        names = [s["SubnetId"] for s in subnets["Subnets"][:2]]
        yield Account(server, clients.client("elbv2"), ec2, vpc_id, names)


@pytest.fixture
def targets() -> Iterator[Callable[[int], list[TargetServer]]]:
    """Makes target servers on 127.0.0.2, 127.0.0.3, ... sharing one port."""
    made: list[TargetServer] = []

    def make(count: int) -> list[TargetServer]:
        first = TargetServer(("127.0.0.2", 0))
        made.append(first)
        port = first.server_address[1]
        made.extend(TargetServer((f"127.0.0.{n}", port)) for n in range(3, count + 2))
        return made[-count:]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def make_alb(account: Account) -> Iterator[Callable[..., Alb]]:
    """Creates ALBs through the ELBv2 API as the deployer does; deletes them after."""
    elbv2 = account.elbv2
    made: list[Alb] = []

    def make(port: int, **health_check: Any) -> Alb:
        name = f"t-{secrets.token_hex(4)}"
        lb = elbv2.create_load_balancer(
            Name=name, Subnets=account.subnets, Scheme="internet-facing"
        )["LoadBalancers"][0]
        settings = FAST_CHECKS | health_check
        group = elbv2.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=port,
            VpcId=account.vpc_id,
            TargetType="ip",
            HealthCheckProtocol="HTTP",
            **settings,
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
        )
        made.append(Alb(name, lb["LoadBalancerArn"], lb["DNSName"], group, port))
        return made[-1]

    yield make
    for alb in made:
        delete(elbv2, alb)


@pytest.fixture
def balancers(account: Account) -> Iterator[LocalLoadBalancers]:
    """The account's load balancers, served with health checks 20 times faster."""
    with LocalLoadBalancers(account.server, REGION, time_scale=SCALE) as served:
        yield served


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """An HTTP client that ignores proxy settings of the environment."""
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        yield http


def delete(elbv2: Any, alb: Alb) -> None:
    for listener in elbv2.describe_listeners(LoadBalancerArn=alb.arn)["Listeners"]:
        elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
    elbv2.delete_load_balancer(LoadBalancerArn=alb.arn)
    elbv2.delete_target_group(TargetGroupArn=alb.group_arn)


def security_group(account: Account) -> str:
    return str(
        account.ec2.create_security_group(
            GroupName=f"alb-{secrets.token_hex(4)}",
            Description="test",
            VpcId=account.vpc_id,
        )["GroupId"]
    )


def register(elbv2: Any, alb: Alb, *ips: str) -> None:
    targets = [{"Id": ip, "Port": alb.port} for ip in ips]
    elbv2.register_targets(TargetGroupArn=alb.group_arn, Targets=targets)


def wait_for_states(elbv2: Any, alb: Alb, wanted: dict[str, str]) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        seen = health(elbv2, alb)
        assert {ip: h["State"] for ip, h in seen.items()} == wanted, seen
        return seen

    return eventually(check)


def served_by(client: httpx.Client, url: str, count: int) -> list[str]:
    return [client.get(f"{url}/work").json()["served_by"] for _ in range(count)]


def test_requests_reach_healthy_targets_in_turn(
    account: Account,
    balancers: LocalLoadBalancers,
    make_alb: Any,
    targets: Any,
    client: httpx.Client,
) -> None:
    """Requests through the listener go round robin to the healthy targets."""
    a, b = targets(2)
    alb = make_alb(a.server_address[1])
    register(account.elbv2, alb, a.ip, b.ip)
    wait_for_states(account.elbv2, alb, {a.ip: "healthy", b.ip: "healthy"})

    order = served_by(client, balancers.url_for(alb.dns_name), 6)

    assert {order[0], order[1]} == {a.ip, b.ip}
    assert order[0::2] == [order[0]] * 3
    assert order[1::2] == [order[1]] * 3


def test_failing_target_becomes_unhealthy_gets_no_traffic_and_recovers(
    account: Account,
    balancers: LocalLoadBalancers,
    make_alb: Any,
    targets: Any,
    client: httpx.Client,
) -> None:
    """A target whose health check answers 500 is unhealthy and skipped until fixed."""
    a, b = targets(2)
    alb = make_alb(a.server_address[1])
    register(account.elbv2, alb, a.ip, b.ip)
    wait_for_states(account.elbv2, alb, {a.ip: "healthy", b.ip: "healthy"})
    url = balancers.url_for(alb.arn)

    b.health_status = 500
    seen = wait_for_states(account.elbv2, alb, {a.ip: "healthy", b.ip: "unhealthy"})
    assert seen[b.ip]["Reason"] == "Target.ResponseCodeMismatch"
    assert seen[b.ip]["Description"] == "Health checks failed with these codes: [500]"
    assert served_by(client, url, 4) == [a.ip] * 4

    b.health_status = 200
    wait_for_states(account.elbv2, alb, {a.ip: "healthy", b.ip: "healthy"})
    assert set(served_by(client, url, 4)) == {a.ip, b.ip}


def test_listener_without_targets_answers_503(
    balancers: LocalLoadBalancers, make_alb: Any, client: httpx.Client
) -> None:
    """With no registered target the listener answers 503, as an ALB does."""
    alb = make_alb(8080)

    response = client.get(balancers.url_for(alb.name))

    assert response.status_code == 503
    assert response.headers["server"] == "awselb/2.0"


def test_all_unhealthy_targets_fail_open(
    account: Account,
    balancers: LocalLoadBalancers,
    make_alb: Any,
    targets: Any,
    client: httpx.Client,
) -> None:
    """When every registered target is unhealthy, requests go to all of them."""
    a, b = targets(2)
    a.health_status = b.health_status = 503
    alb = make_alb(a.server_address[1])
    register(account.elbv2, alb, a.ip, b.ip)
    wait_for_states(account.elbv2, alb, {a.ip: "unhealthy", b.ip: "unhealthy"})

    order = served_by(client, balancers.url_for(alb.dns_name), 4)

    assert set(order) == {a.ip, b.ip}


def test_unreachable_target_is_unhealthy_and_answers_502(
    account: Account,
    balancers: LocalLoadBalancers,
    make_alb: Any,
    targets: Any,
    client: httpx.Client,
) -> None:
    """A target that refuses connections fails its checks; a request to it is a 502."""
    (a,) = targets(1)
    alb = make_alb(a.server_address[1])
    a.close()  # nothing listens on its address any more
    register(account.elbv2, alb, a.ip)

    seen = wait_for_states(account.elbv2, alb, {a.ip: "unhealthy"})
    response = client.get(balancers.url_for(alb.dns_name))

    assert seen[a.ip]["Reason"] == "Target.FailedHealthChecks"
    assert response.status_code == 502


def test_slow_health_check_is_a_timeout(
    account: Account, balancers: LocalLoadBalancers, make_alb: Any, targets: Any
) -> None:
    """A health check that outlasts its timeout counts as Target.Timeout."""
    (a,) = targets(1)
    alb = make_alb(a.server_address[1], HealthCheckPath=f"{HEALTH}/slow")
    register(account.elbv2, alb, a.ip)

    seen = wait_for_states(account.elbv2, alb, {a.ip: "unhealthy"})

    assert seen[a.ip] == {
        "State": "unhealthy",
        "Reason": "Target.Timeout",
        "Description": "Request timed out",
    }


def test_deregistered_target_drains_and_gets_no_new_requests(
    account: Account,
    balancers: LocalLoadBalancers,
    make_alb: Any,
    targets: Any,
    client: httpx.Client,
) -> None:
    """A deregistered target drains for the group's delay and receives no request."""
    a, b = targets(2)
    alb = make_alb(a.server_address[1])
    account.elbv2.modify_target_group_attributes(
        TargetGroupArn=alb.group_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "20"}],
    )
    register(account.elbv2, alb, a.ip, b.ip)
    wait_for_states(account.elbv2, alb, {a.ip: "healthy", b.ip: "healthy"})
    before = len(b.served_paths())

    account.elbv2.deregister_targets(
        TargetGroupArn=alb.group_arn, Targets=[{"Id": b.ip, "Port": alb.port}]
    )
    balancers.sync()
    seen = health(account.elbv2, alb)
    order = served_by(client, balancers.url_for(alb.dns_name), 4)

    assert seen[b.ip]["State"] == "draining"
    assert seen[b.ip]["Reason"] == "Target.DeregistrationInProgress"
    assert order == [a.ip] * 4
    assert len(b.served_paths()) == before
    wait_for_states(account.elbv2, alb, {a.ip: "healthy"})  # 20 s scaled to 1 s


def test_listener_forwards_the_request_and_adds_forwarded_headers(
    account: Account,
    balancers: LocalLoadBalancers,
    make_alb: Any,
    targets: Any,
    client: httpx.Client,
) -> None:
    """Method, path, query, headers and body reach the target; its answer comes back."""
    (a,) = targets(1)
    alb = make_alb(a.server_address[1])
    register(account.elbv2, alb, a.ip)
    wait_for_states(account.elbv2, alb, {a.ip: "healthy"})
    url = balancers.url_for(alb.dns_name, port=80)

    response = client.put(
        f"{url}/tasks/7?kind=agent&x=%2F",
        content=b'{"mandate": "m"}',
        headers={"X-Custom": "kept", "X-Forwarded-For": "203.0.113.7"},
    )

    assert response.status_code == 201
    assert response.headers["x-reply"] == "from-target"
    assert response.json() == {"served_by": a.ip, "body": '{"mandate": "m"}'}
    seen = [s for s in a.seen if not s.path.startswith(HEALTH)][-1]
    assert (seen.method, seen.path) == ("PUT", "/tasks/7?kind=agent&x=%2F")
    assert seen.headers["x-custom"] == "kept"
    assert seen.headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen.headers["x-forwarded-proto"] == "http"
    assert seen.headers["x-forwarded-port"] == url.rsplit(":", 1)[1]
    assert seen.headers["x-amzn-trace-id"].startswith("Root=1-")


def test_url_for_names_the_same_listener_by_arn_dns_name_and_name(
    balancers: LocalLoadBalancers, make_alb: Any
) -> None:
    """A load balancer's local URL is found by its ARN, DNS name or name."""
    alb = make_alb(8080)

    urls = {balancers.url_for(ref) for ref in (alb.arn, alb.dns_name, alb.name)}

    assert len(urls) == 1
    assert urls.pop().startswith("http://127.0.0.1:")
    with pytest.raises(NotReadyError, match="no HTTP listener"):
        balancers.url_for(alb.name, port=443)


def test_new_target_is_initial_until_its_first_verdict(
    account: Account, make_alb: Any, targets: Any
) -> None:
    """A target that has not yet passed or failed enough checks is ``initial``."""
    (a,) = targets(1)
    a.health_status = 500
    alb = make_alb(a.server_address[1], HealthCheckIntervalSeconds=300)

    with LocalLoadBalancers(account.server, REGION) as served:
        register(account.elbv2, alb, a.ip)
        served.sync()
        seen = health(account.elbv2, alb)

    assert seen[a.ip]["State"] == "initial"
    assert seen[a.ip]["Reason"] in (
        "Elb.RegistrationInProgress",
        "Elb.InitialHealthChecking",
    )


def test_moto_alone_still_calls_every_target_healthy(
    account: Account, make_alb: Any
) -> None:
    """Without a served account, moto answers as it always did (pins moto's gap)."""
    alb = make_alb(8080)

    register(account.elbv2, alb, "127.0.0.99")

    assert health(account.elbv2, alb)["127.0.0.99"]["State"] == "healthy"


def test_stopped_balancers_close_listeners_and_leave_moto_as_it_was(
    account: Account, make_alb: Any, client: httpx.Client
) -> None:
    """After stop the listener port refuses connections and moto answers alone."""
    alb = make_alb(8080)
    register(account.elbv2, alb, "127.0.0.98")
    with LocalLoadBalancers(account.server, REGION, time_scale=SCALE) as served:
        url = served.url_for(alb.arn)
        assert client.get(url).status_code in (502, 503)

    with pytest.raises(httpx.ConnectError):
        client.get(url)
    assert health(account.elbv2, alb)["127.0.0.98"]["State"] == "healthy"


def test_deployers_alb_is_served_and_checks_its_gateway_targets(
    account: Account, balancers: LocalLoadBalancers, client: httpx.Client
) -> None:
    """The ALB that harness/aws/alb.py deploys forwards to a gateway on its port."""
    address = f"127.0.0.{secrets.choice(range(10, 250))}"
    gateway = TargetServer((address, GATEWAY_PORT))
    group = security_group(account)
    deployed = DeployedAlb(account.elbv2, f"t{secrets.token_hex(3)}").ensure(
        vpc_id=account.vpc_id,
        subnets=account.subnets,
        zones=2,
        group=group,
        tags={"test": "alb"},
    )
    alb = Alb("", deployed.arn, deployed.dns_name, deployed.target_group_arn, 0)
    try:
        account.elbv2.register_targets(
            TargetGroupArn=deployed.target_group_arn,
            Targets=[{"Id": address, "Port": GATEWAY_PORT}],
        )
        wait_for_states(account.elbv2, alb, {address: "healthy"})

        answer = client.get(f"{balancers.url_for(deployed.dns_name)}/tasks")

        assert answer.json()["served_by"] == address
    finally:
        gateway.close()
        delete(account.elbv2, alb)
