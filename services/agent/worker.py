"""``InterfaceAgent``: takes mandates off the work queue, runs them, records results.

Delivery is at least once, each result recorded once:

- one message at a time (prefetch 1), acknowledged only after its outcome is
  stored in Redis;
- a redelivered message whose task already has an outcome is acknowledged
  without running again;
- a malformed message is rejected to the dead-letter queue with its reason;
- the task runs on a worker thread while the consumer thread keeps the AMQP
  connection's heartbeats going, under ECS scale-in protection.

``stop()`` (SIGTERM) lets the current task finish within the grace period, or
requeues it (its record back to ``queued``, its scale-in protection released),
and then returns from :meth:`InterfaceAgent.run_forever`.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from typing import Any

import redis
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from services.agent.connectivity import is_skip, skip_report
from services.agent.http_connector import HttpConnector
from services.agent.memory import AgentMemory
from services.agent.runners import Runner, TaskContext
from services.agent.settings import Settings
from services.agent.state import TaskLedger
from services.shared import rabbitmq
from services.shared.ecs_manager import TaskProtection
from services.shared.queue_metrics import QUEUE_NAME
from services.shared.tasks import MalformedMessageError, TaskMessage, TaskRecord

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
MAX_RECONNECT_DELAY = 10.0


class Outcome(enum.Enum):
    """What the consumer does with a message once its task has been handled."""

    ACK = "ack"
    REQUEUE = "requeue"


class InterfaceAgent:
    """Consumes the work queue until stopped; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: TaskLedger,
        runners: dict[str, Runner],
        protection: TaskProtection,
        http: HttpConnector,
        memory: AgentMemory | None = None,
        ecs_task_arn: str | None = None,
        name: str = "euglena-agent",
    ) -> None:
        self.settings = settings
        self.name = name
        self._ledger = ledger
        self._runners = runners
        self._protection = protection
        self._http = http
        self._memory = memory
        self._ecs_task_arn = ecs_task_arn
        self._stopping = threading.Event()
        self._abandoned = threading.Event()
        self._inflight: threading.Thread | None = None
        self.consuming = threading.Event()

    def stop(self) -> None:
        """Ask the agent to stop after the current task (thread- and signal-safe)."""
        self._stopping.set()

    def run_forever(self) -> None:
        """Consume until :meth:`stop`, reconnecting with backoff to a lost RabbitMQ."""
        failures = 0
        while not self._stopping.is_set():
            try:
                self._serve()
            except rabbitmq.CONNECTION_ERRORS as error:
                self.consuming.clear()
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), MAX_RECONNECT_DELAY)
                logger.warning(
                    "lost RabbitMQ (%r); reconnecting in %.1fs", error, delay
                )
                self._stopping.wait(delay)
            else:
                failures = 0
        logger.info("agent %s stopped", self.name)

    def _serve(self) -> None:
        self._wait_for_inflight()
        connection = rabbitmq.connect(self.settings.rabbitmq_url, name=self.name)
        try:
            channel = rabbitmq.open_consumer_channel(connection, prefetch=1)
            logger.info("agent %s consuming %s", self.name, QUEUE_NAME)
            self.consuming.set()
            while not self._stopping.is_set():
                delivery = rabbitmq.next_delivery(channel, timeout=1.0)
                if delivery is not None:
                    self._handle(connection, channel, delivery)
        finally:
            self.consuming.clear()
            close_quietly(connection)

    def _wait_for_inflight(self) -> None:
        """Let a task that outlived its connection record its outcome first."""
        worker = self._inflight
        while worker is not None and worker.is_alive() and not self._stopping.is_set():
            worker.join(timeout=POLL_SECONDS)

    def _handle(
        self, connection: Any, channel: Any, delivery: rabbitmq.Delivery
    ) -> None:
        try:
            message = TaskMessage.parse(delivery.body)
        except MalformedMessageError as error:
            rabbitmq.reject_to_dead_letter(channel, delivery, str(error))
            return
        outcome = self._process_while_pumping(connection, message)
        if outcome is Outcome.ACK:
            channel.basic_ack(delivery_tag=delivery.tag)
        else:
            self._mark_queued(message.task_id)
            channel.basic_nack(delivery_tag=delivery.tag, requeue=True)
            logger.warning("requeued task %s", message.task_id)

    def _mark_queued(self, task_id: str) -> None:
        """Show a requeued task as queued again, before another agent can take it."""
        try:
            self._ledger.requeue(task_id)
        except redis.RedisError as error:
            logger.warning("task %s stays marked running: %r", task_id, error)

    def _process_while_pumping(self, connection: Any, message: TaskMessage) -> Outcome:
        """Run the task on a worker thread, serving the connection meanwhile."""
        box: list[Outcome] = []
        self._abandoned.clear()
        worker = threading.Thread(
            target=lambda: box.append(self._process(message)),
            name=f"task-{message.task_id}",
            daemon=True,
        )
        self._inflight = worker
        worker.start()
        deadline: float | None = None
        while worker.is_alive():
            connection.process_data_events(time_limit=POLL_SECONDS)
            if self._stopping.is_set() and deadline is None:
                deadline = time.monotonic() + self.settings.shutdown_grace_seconds
                logger.info(
                    "stopping: task %s has %.0fs to finish",
                    message.task_id,
                    self.settings.shutdown_grace_seconds,
                )
            if deadline is not None and time.monotonic() > deadline:
                logger.warning("task %s did not finish in time", message.task_id)
                self._abandoned.set()
                self._protection.drop()
                return Outcome.REQUEUE
        return box[0] if box else Outcome.REQUEUE

    def _process(self, message: TaskMessage) -> Outcome:
        stored = self._try_load(message.task_id)
        if stored is not None and stored.is_finished:
            logger.info(
                "task %s is already %s; acknowledging without running it again",
                message.task_id,
                stored.status,
            )
            return Outcome.ACK
        record = self._try_start(message, stored)
        result, error = self._execute(message, record.attempts)
        final = record.with_changes(
            status="failed" if error else "completed", result=result, error=error
        )
        return Outcome.ACK if self._store(final) else Outcome.REQUEUE

    def _try_load(self, task_id: str) -> TaskRecord | None:
        try:
            return self._ledger.load(task_id)
        except redis.RedisError as error:
            logger.warning("cannot read task %s from Redis: %r", task_id, error)
            return None

    def _try_start(self, message: TaskMessage, stored: TaskRecord | None) -> TaskRecord:
        try:
            return self._ledger.start(message, stored)
        except redis.RedisError as error:
            logger.warning("cannot mark task %s running: %r", message.task_id, error)
            base = stored or message.to_record()
            return base.with_changes(status="running", attempts=base.attempts + 1)

    def _execute(self, message: TaskMessage, attempt: int) -> tuple[Any, str | None]:
        """Run the task under protection; return its result or its error."""
        with self._protection.held():
            try:
                if is_skip(message.mandate, self.settings):
                    return skip_report(message.task_id, self.settings), None
                result = self._runners[message.kind](self._context(message, attempt))
                json.dumps(result)
            except Exception as error:
                logger.exception(
                    "task %s failed (attempt %s)", message.task_id, attempt
                )
                return None, f"{type(error).__name__}: {error}"
        logger.info("task %s completed (attempt %s)", message.task_id, attempt)
        return result, None

    def _context(self, message: TaskMessage, attempt: int) -> TaskContext:
        return TaskContext(
            message=message,
            attempt=attempt,
            ecs_task_arn=self._ecs_task_arn,
            http=self._http,
            memory=self._memory,
        )

    def _store(self, final: TaskRecord) -> bool:
        """Store the outcome, retrying while Redis is away; False if it never came."""
        retrying = Retrying(
            retry=retry_if_exception_type(redis.RedisError),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self.settings.store_retry_seconds)
            | stop_when_event_set(self._abandoned),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        try:
            retrying(self._ledger.finish, final)
        except redis.RedisError:
            logger.exception("could not store the outcome of task %s", final.task_id)
            return False
        return True


def close_quietly(connection: Any) -> None:
    """Close an AMQP connection that may already be broken."""
    try:
        if connection.is_open:
            connection.close()
    except rabbitmq.CONNECTION_ERRORS as error:
        logger.debug("closing a broken connection: %r", error)
