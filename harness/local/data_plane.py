"""The local data plane: an emulated account that really runs what it is told.

:class:`LocalDataPlane` joins the pieces of the local target around one moto
server: the run's network (a namespace per task), the ECS scheduler that turns
services into tasks, the supervisor that runs each task's containers, the
endpoints tasks reach inside themselves, and the completions of moto that make
the AWS APIs tell the truth about all of it. Tasks reach the emulated AWS APIs
at the host's address on the run's bridge.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from harness.aws.clients import ClientFactory
from harness.errors import NotReadyError
from harness.local import netns
from harness.local.api_outages import Outages
from harness.local.awslogs import CloudWatchLogsSink
from harness.local.ecs_records import LocalTask
from harness.local.ecs_scheduler import ServiceScheduler, TaskState
from harness.local.lambda_runtime import LambdaRuntime
from harness.local.load_balancer import LocalLoadBalancers
from harness.local.moto_server import MotoServer
from harness.local.supervisor import TaskRunner
from harness.local.task_endpoints import TaskEndpoints, TaskEntry

logger = logging.getLogger(__name__)

STATE_ROOT = Path(".euglena/runs")
OWNER_FILE = "owner.pid"
# Scheduled rules fire every 5 s where AWS fires rate(1 minute).
SCHEDULE_SCALE = 5 / 60
LogSink = Callable[[str, str, str], None]


class NamespaceTask:
    """A task's containers running in the task's own network namespace."""

    def __init__(
        self,
        namespace: netns.TaskNamespace,
        runner: TaskRunner,
        on_end: Any,
    ) -> None:
        self.address = namespace.address
        self.namespace = namespace
        self.runner = runner
        self._on_end = on_end
        self._ended = threading.Event()

    def state(self) -> TaskState:
        state = self.runner.state()
        if state.stopped and not self._ended.is_set():
            self._ended.set()
            self._on_end(self)
        return state

    def stop(self, reason: str) -> None:
        self.runner.stop(reason, "ServiceSchedulerInitiated")


class NamespaceLauncher:
    """Launches each task in a new namespace of the run's network."""

    def __init__(
        self,
        network: netns.RunNetwork,
        endpoints: TaskEndpoints,
        *,
        environment: dict[str, str],
        state_root: Path,
        log_sink: LogSink | None,
    ) -> None:
        self._network = network
        self._endpoints = endpoints
        self._environment = environment
        self._state_root = state_root
        self._log_sink = log_sink
        self.tasks: dict[str, NamespaceTask] = {}

    def launch(self, record: LocalTask, definition: dict[str, Any]) -> NamespaceTask:
        task_id = record.id
        namespace = self._network.add_task(task_id)
        self._endpoints.add(task_id, TaskEntry(record.cluster_arn, record.task_arn))
        runner = TaskRunner(
            definition,
            task_id,
            state_root=self._state_root,
            prefix=namespace.exec_prefix(),
            extra_env={**self._environment, **self._endpoints.environment(task_id)},
            log_sink=self._log_sink,
        )
        task = NamespaceTask(namespace, runner, self._ended)
        self.tasks[task_id] = task
        runner.start()
        return task

    def _ended(self, task: NamespaceTask) -> None:
        self._endpoints.remove(task.runner.task_id)
        self._network.remove_task(task.namespace)
        self.tasks.pop(task.runner.task_id, None)

    def stop_all(self, timeout: float) -> None:
        for task in list(self.tasks.values()):
            task.runner.stop("Data plane stopped", "ServiceSchedulerInitiated")
        for task in list(self.tasks.values()):
            task.runner.wait(timeout)
            task.state()


class LocalDataPlane:
    """Everything that makes one emulated account run its services for real."""

    def __init__(
        self, server: MotoServer, region: str, run_id: str, *, state_root: Path
    ) -> None:
        self._server = server
        self._region = region
        self._run_id = run_id
        self._state_root = state_root.resolve() / run_id
        self._clients = ClientFactory(region, endpoint_url=server.endpoint_url)
        self._network = netns.RunNetwork(run_id)
        self._endpoints: TaskEndpoints | None = None
        self._launcher: NamespaceLauncher | None = None
        self._scheduler: ServiceScheduler | None = None
        self._logs: CloudWatchLogsSink | None = None
        self._balancers: LocalLoadBalancers | None = None
        self._lambdas: LambdaRuntime | None = None

    def start(self) -> LocalDataPlane:
        netns.require_net_admin()
        self._state_root.mkdir(parents=True, exist_ok=True)
        (self._state_root / OWNER_FILE).write_text(str(os.getpid()))
        self._network.create()
        try:
            self._start_parts()
        except BaseException:
            self.stop()
            raise
        logger.info("local data plane of run %s is up", self._run_id)
        return self

    def _start_parts(self) -> None:
        bridge = self._network.gateway_address
        task_api = self._server.listen_also(bridge)
        ecs = self._clients.client("ecs")
        self._endpoints = TaskEndpoints(ecs, host=bridge).start()
        self._logs = CloudWatchLogsSink(self._clients.client("logs"))
        self._launcher = NamespaceLauncher(
            self._network,
            self._endpoints,
            environment=_aws_environment(task_api, self._region),
            state_root=self._state_root,
            log_sink=self._logs,
        )
        self._balancers = LocalLoadBalancers(self._server, self._region).start()
        self._lambdas = LambdaRuntime(
            self._server,
            region=self._region,
            schedule_scale=SCHEDULE_SCALE,
            run_id=self._run_id,
        ).start()
        self._scheduler = ServiceScheduler(
            self._server.account_id,
            self._region,
            self._launcher,
            elbv2=self._clients.client("elbv2"),
            definition_of=lambda arn: ecs.describe_task_definition(taskDefinition=arn)[
                "taskDefinition"
            ],
        ).start()

    def task(self, task_arn: str) -> NamespaceTask:
        """The running task an ARN or task id names."""
        assert self._launcher is not None
        task = self._launcher.tasks.get(task_arn.rsplit("/", 1)[-1])
        if task is None:
            raise NotReadyError(f"no task {task_arn} runs in this data plane")
        return task

    @property
    def outages(self) -> Outages:
        """The emulated account's API outages, for fault injection."""
        return self._server.outages

    def publish(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """The outputs with the load balancer's local listener as the gateway URL."""
        assert self._balancers is not None
        dns_name = outputs.get("load_balancer_dns")
        if not dns_name:
            return outputs
        return {**outputs, "gateway_url": self._balancers.url_for(str(dns_name))}

    def stop(self) -> None:
        """Stop every task, then the parts, then remove the run's network."""
        if self._lambdas is not None:
            self._lambdas.stop()
        if self._scheduler is not None:
            self._scheduler.stop()
        if self._launcher is not None:
            self._launcher.stop_all(timeout=60)
        if self._endpoints is not None:
            self._endpoints.stop()
        if self._logs is not None:
            self._logs.close()
        if self._balancers is not None:
            self._balancers.stop()
        self._network.destroy()
        shutil.rmtree(self._state_root, ignore_errors=True)
        logger.info("local data plane of run %s is down", self._run_id)

    def __enter__(self) -> LocalDataPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def reap_crashed(state_root: Path = STATE_ROOT) -> dict[str, list[str]]:
    """Remove what runs whose owning process has died left: networks, processes
    in them, and state directories. Runs whose owner lives are left alone."""
    removed: dict[str, list[str]] = {}
    for run_dir in sorted(state_root.glob("*")):
        owner = run_dir / OWNER_FILE
        pid = int(owner.read_text()) if owner.is_file() else None
        if pid is not None and psutil.pid_exists(pid):
            continue
        removed[run_dir.name] = [*netns.reap(run_dir.name), f"folder {run_dir}"]
        shutil.rmtree(run_dir, ignore_errors=True)
    return removed


def _aws_environment(endpoint: str, region: str) -> dict[str, str]:
    """What a task needs to reach the emulated account with boto3 as on AWS."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
    }
