"""What a Fargate task reaches inside itself: task metadata v4 and the ECS agent.

Each container of a local task gets ``ECS_CONTAINER_METADATA_URI_V4`` (its
container metadata, and the task's under ``/task``) and ``ECS_AGENT_URI``,
whose ``task-protection/v1/state`` reads and sets the task's scale-in
protection with the ECS API's rules, answering in the agent's shapes:
``{"protection": {...}}`` on success, ``{"failure": {...}}`` for a task ECS
refuses, ``{"error": {...}}`` with HTTP 400 for a bad request.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from harness.local.http_thread import ServedApp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskEntry:
    """Where a task's record lives: its cluster and ARN."""

    cluster: str
    task_arn: str


class TaskEndpoints:
    """Serves every local task's metadata and agent endpoints from one port."""

    def __init__(self, ecs: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._ecs = ecs
        self._tasks: dict[str, TaskEntry] = {}
        self._lock = threading.Lock()
        self._served = ServedApp(self._app(), host, port)

    def start(self) -> TaskEndpoints:
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.stop()

    def add(self, task_id: str, entry: TaskEntry) -> None:
        with self._lock:
            self._tasks[task_id] = entry

    def remove(self, task_id: str) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)

    def environment(self, task_id: str, container: str | None = None) -> dict[str, str]:
        """The variables the task's containers find in their environment.

        Without a container name the metadata URI is the task's; its ``/task``
        path answers as a container's does.
        """
        base = self._served.url
        metadata = f"{base}/v4/{task_id}" + (f"/{container}" if container else "")
        return {
            "ECS_CONTAINER_METADATA_URI_V4": metadata,
            "ECS_AGENT_URI": f"{base}/api/{task_id}",
        }

    def _entry(self, task_id: str) -> TaskEntry:
        with self._lock:
            entry = self._tasks.get(task_id)
        if entry is None:
            raise HTTPException(404, f"no task {task_id} runs here")
        return entry

    def _describe(self, entry: TaskEntry) -> dict[str, Any]:
        found = self._ecs.describe_tasks(cluster=entry.cluster, tasks=[entry.task_arn])
        return dict(found["tasks"][0])

    def _app(self) -> FastAPI:
        app = FastAPI(title="ECS task endpoints (local)", openapi_url=None)

        @app.get("/v4/{task_id}/task")
        @app.get("/v4/{task_id}/{container}/task")
        def task_metadata(task_id: str, container: str = "") -> dict[str, Any]:
            return _task_metadata(self._describe(self._entry(task_id)))

        @app.get("/v4/{task_id}/{container}")
        def container_metadata(task_id: str, container: str) -> dict[str, Any]:
            task = self._describe(self._entry(task_id))
            return _container_metadata(task, container)

        @app.get("/api/{task_id}/task-protection/v1/state")
        def get_protection(task_id: str) -> JSONResponse:
            entry = self._entry(task_id)
            return self._protection(
                entry,
                lambda: self._ecs.get_task_protection(
                    cluster=entry.cluster, tasks=[entry.task_arn]
                ),
            )

        @app.put("/api/{task_id}/task-protection/v1/state")
        async def put_protection(task_id: str, request: Request) -> JSONResponse:
            entry = self._entry(task_id)
            body = await request.json()
            return self._protection(entry, lambda: self._update(entry, body))

        return app

    def _update(self, entry: TaskEntry, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "ProtectionEnabled" not in body:
            raise ValueError("the body must be JSON with ProtectionEnabled")
        params: dict[str, Any] = {
            "cluster": entry.cluster,
            "tasks": [entry.task_arn],
            "protectionEnabled": bool(body["ProtectionEnabled"]),
        }
        if body.get("ExpiresInMinutes") is not None:
            params["expiresInMinutes"] = int(body["ExpiresInMinutes"])
        return dict(self._ecs.update_task_protection(**params))

    def _protection(self, entry: TaskEntry, call: Any) -> JSONResponse:
        try:
            answer = call()
        except ClientError as error:
            details = error.response["Error"]
            return _error(entry, details.get("Code", ""), details.get("Message", ""))
        except ValueError as error:
            return _error(entry, "InvalidParameterException", str(error))
        if answer.get("failures"):
            failure = answer["failures"][0]
            return JSONResponse(
                {
                    "failure": {
                        "Arn": failure.get("arn"),
                        "Reason": failure.get("reason"),
                        "Detail": failure.get("detail"),
                    }
                }
            )
        protected = answer["protectedTasks"][0]
        expiration = protected.get("expirationDate")
        return JSONResponse(
            {
                "protection": {
                    "TaskArn": protected["taskArn"],
                    "ProtectionEnabled": protected["protectionEnabled"],
                    "ExpirationDate": expiration.isoformat() if expiration else None,
                }
            }
        )


def _error(entry: TaskEntry, code: str, message: str) -> JSONResponse:
    body = {"error": {"Arn": entry.task_arn, "Code": code, "Message": message}}
    return JSONResponse(body, status_code=400)


def _task_metadata(task: dict[str, Any]) -> dict[str, Any]:
    family, _, revision = task["taskDefinitionArn"].rsplit("/", 1)[-1].partition(":")
    return {
        "Cluster": task["clusterArn"],
        "TaskARN": task["taskArn"],
        "Family": family,
        "Revision": revision,
        "DesiredStatus": task["desiredStatus"],
        "KnownStatus": task["lastStatus"],
        "LaunchType": task.get("launchType", "FARGATE"),
        "Containers": [
            _container_metadata(task, c["name"]) for c in task.get("containers", [])
        ],
    }


def _container_metadata(task: dict[str, Any], name: str) -> dict[str, Any]:
    container = next((c for c in task["containers"] if c["name"] == name), None)
    if container is None:
        raise HTTPException(404, f"task {task['taskArn']} has no container {name}")
    address = next(
        (
            detail["value"]
            for attachment in task.get("attachments", [])
            for detail in attachment["details"]
            if detail["name"] == "privateIPv4Address"
        ),
        None,
    )
    return {
        "DockerId": container["containerArn"].rsplit("/", 1)[-1],
        "Name": name,
        "Image": container.get("image"),
        "KnownStatus": container.get("lastStatus"),
        "DesiredStatus": task["desiredStatus"],
        "Health": {"status": container.get("healthStatus", "UNKNOWN")},
        "Labels": {
            "com.amazonaws.ecs.cluster": task["clusterArn"],
            "com.amazonaws.ecs.task-arn": task["taskArn"],
            "com.amazonaws.ecs.container-name": name,
        },
        "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [address]}],
    }
