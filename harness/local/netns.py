"""awsvpc networking for the local target: a bridge per run, a namespace per task.

A run owns a Linux bridge with a /24 of the harness's private range; the host
holds the subnet's first address on it. Each task gets a network namespace
joined to the bridge by a veth pair, with its own address, loopback and a
default route through the bridge, so the containers of one task meet on
``localhost`` on their standard ports and the host reaches every task.

Every object is named after the run id (interface names fit the kernel's 15
characters), so ``reap`` finds what a crashed run left by name alone:

- bridge ``ebr<run>``; veth host end ``e<nn><run>`` (``nn`` the task's slot);
- namespace and ``/etc/netns`` folder ``euglena-<run>-<task>``.

All changes go through the ``ip`` command rather than pyroute2, because a
namespace must be made by ``ip netns add`` for ``ip netns exec`` to enter it,
and one tool with JSON listings keeps creation, teardown and the reaper alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import filelock
import psutil

from harness.errors import ConfigError, DeployError
from harness.local.servers.base import end_processes

logger = logging.getLogger(__name__)

#: The private range reserved for the harness; each run takes one /24 of it.
HARNESS_RANGE = ipaddress.IPv4Network("10.213.0.0/16")
NETNS_ETC = Path("/etc/netns")
LOCK_PATH = Path("/run/euglena/netns.lock")
#: Slots are two decimal digits in the veth name.
MAX_TASKS_PER_RUN = 100
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

_RUN_ID = re.compile(r"^[a-z0-9]{4,12}$")
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BRIDGE = re.compile(r"^ebr([a-z0-9]{4,12})$")
_VETH = re.compile(r"^e[0-9]{2}([a-z0-9]{4,12})$")
_NAMESPACE = re.compile(r"^euglena-([a-z0-9]{4,12})-[A-Za-z0-9_.-]+$")
_LOCK_TIMEOUT_SECONDS = 30.0
_KILL_GRACE_SECONDS = 5.0
# Unknown names must fail at once: the host's nameserver is out of reach from a
# namespace, and a hanging lookup stalls servers that resolve their own name.
_RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def bridge_name(run_id: str) -> str:
    """Return the name of run ``run_id``'s bridge."""
    return f"ebr{_checked_run_id(run_id)}"


def veth_name(run_id: str, slot: int) -> str:
    """Return the host-side veth name of task slot ``slot`` of run ``run_id``."""
    if not 0 <= slot < MAX_TASKS_PER_RUN:
        raise ValueError(f"slot {slot} is outside 0..{MAX_TASKS_PER_RUN - 1}")
    return f"e{slot:02d}{_checked_run_id(run_id)}"


def namespace_name(run_id: str, task_id: str) -> str:
    """Return the network namespace name of task ``task_id`` of run ``run_id``."""
    if not _TASK_ID.match(task_id):
        raise ConfigError(
            f"task id {task_id!r} cannot name a network namespace",
            details="Use 1-64 letters, digits, '_', '.' or '-', starting with "
            "a letter or digit (an ECS task id fits).",
        )
    return f"euglena-{_checked_run_id(run_id)}-{task_id}"


def run_of(name: str) -> str | None:
    """Return the run id that owns a bridge, veth or namespace ``name``, if any."""
    for pattern in (_BRIDGE, _VETH, _NAMESPACE):
        found = pattern.match(name)
        if found:
            return found.group(1)
    return None


def require_net_admin(effective_caps: int | None = None) -> None:
    """Raise ConfigError unless this process may build namespaces and links."""
    if effective_caps is None:
        effective_caps = _effective_capabilities()
    needed = (1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)
    if effective_caps & needed != needed:
        raise ConfigError(
            "the local target needs root or CAP_NET_ADMIN (with CAP_SYS_ADMIN, "
            "which `ip netns add` needs to mount the namespace)",
            details="Run the harness as root (`sudo -E .venv/bin/python -m "
            "harness ...`), or in a container started with `--cap-add NET_ADMIN "
            "--cap-add SYS_ADMIN`, or pick `--target aws`.",
        )
    if shutil.which("ip") is None:
        raise ConfigError(
            "the local target needs the `ip` command to build task networks",
            details="Install iproute2 (`apt-get install iproute2`).",
        )


@dataclasses.dataclass(frozen=True)
class TaskNamespace:
    """A task's network namespace: its name, its address and its veth."""

    name: str
    address: str
    run_id: str
    task_id: str
    veth: str
    slot: int

    def exec_prefix(self) -> list[str]:
        """Return the command prefix that runs a program inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Take the task off the network, as a lost network interface would."""
        logger.info("cutting the network of %s", self.name)
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        """Put the task back on the network after ``cut``."""
        logger.info("restoring the network of %s", self.name)
        _ip("link", "set", self.veth, "up")

    @property
    def is_cut(self) -> bool:
        """True while the task's veth is down."""
        links = _ip_json("link", "show", "dev", self.veth)
        return "UP" not in links[0].get("flags", [])

    @property
    def hosts_path(self) -> Path:
        """The hosts file that ``ip netns exec`` shows as ``/etc/hosts``."""
        return NETNS_ETC / self.name / "hosts"


class RunNetwork:
    """The bridge and task namespaces of one run; a context manager."""

    def __init__(self, run_id: str) -> None:
        self.run_id = _checked_run_id(run_id)
        self.bridge = bridge_name(run_id)
        self.subnet: ipaddress.IPv4Network | None = None
        self._tasks: dict[str, TaskNamespace] = {}
        self._extra_hosts: dict[str, str] = {}

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    @property
    def gateway_address(self) -> str:
        """The host's address on the bridge, which every task reaches."""
        return str(self._subnet()[1])

    @property
    def tasks(self) -> list[TaskNamespace]:
        """The task namespaces that exist now, in slot order."""
        return sorted(self._tasks.values(), key=lambda task: task.slot)

    def create(self) -> Self:
        """Create the run's bridge on a free /24 of the harness range."""
        require_net_admin()
        if _has_link(self.bridge):
            raise DeployError(
                f"run {self.run_id} already has a bridge",
                resource=self.bridge,
                details=f"Remove what it left with `python -m harness reap` "
                f"(reap(run_id={self.run_id!r})) or choose another run id.",
            )
        self.subnet = _allocate_subnet(self.bridge)
        logger.info("run %s network: %s on %s", self.run_id, self.subnet, self.bridge)
        return self

    def add_task(self, task_id: str) -> TaskNamespace:
        """Create task ``task_id``'s namespace, joined to the run's bridge."""
        name = namespace_name(self.run_id, task_id)
        if name in self._tasks:
            raise DeployError(f"task {task_id} already has a namespace", resource=name)
        if name in _namespaces():
            raise DeployError(
                f"namespace {name} already exists on this machine",
                resource=name,
                details=f"A crashed run left it: reap(run_id={self.run_id!r}).",
            )
        slot = self._free_slot()
        task = TaskNamespace(
            name=name,
            address=str(self._subnet()[slot + 2]),
            run_id=self.run_id,
            task_id=task_id,
            veth=veth_name(self.run_id, slot),
            slot=slot,
        )
        try:
            self._build(task)
        except BaseException:
            _remove_namespace(task.name, task.veth)
            raise
        self._tasks[name] = task
        logger.info("task %s: namespace %s at %s", task_id, name, task.address)
        return task

    def remove_task(self, task: TaskNamespace) -> None:
        """End the task's processes and remove its namespace, veth and files."""
        _remove_namespace(task.name, task.veth)
        self._tasks.pop(task.name, None)
        logger.info("task %s: namespace %s removed", task.task_id, task.name)

    def set_hosts(self, names: dict[str, str]) -> None:
        """Make ``names`` (host name -> address) resolve in every task namespace."""
        for host, address in names.items():
            _check_host_entry(host, address)
        self._extra_hosts = dict(names)
        for task in self._tasks.values():
            _rewrite_in_place(task.hosts_path, self._hosts_text(task))

    def destroy(self) -> None:
        """Remove every task namespace and the bridge, releasing the subnet."""
        for task in self.tasks:
            self.remove_task(task)
        if _has_link(self.bridge):
            _ip("link", "del", self.bridge)
        if self.subnet is not None:
            logger.info("run %s network removed (%s)", self.run_id, self.subnet)
        self.subnet = None

    def _subnet(self) -> ipaddress.IPv4Network:
        if self.subnet is None:
            raise DeployError(
                f"run {self.run_id}'s network is not created",
                resource=self.bridge,
                details="Call RunNetwork.create() (or use it as a context manager).",
            )
        return self.subnet

    def _free_slot(self) -> int:
        taken = {task.slot for task in self._tasks.values()}
        for slot in range(MAX_TASKS_PER_RUN):
            if slot not in taken:
                return slot
        raise DeployError(
            f"run {self.run_id} already has {MAX_TASKS_PER_RUN} task namespaces",
            resource=self.bridge,
            details="Stop tasks that are no longer needed before starting more.",
        )

    def _build(self, task: TaskNamespace) -> None:
        folder = NETNS_ETC / task.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text(_RESOLV_CONF)
        task.hosts_path.write_text(self._hosts_text(task))

        _ip("netns", "add", task.name)
        # The peer is born inside the namespace: the host has an eth0 of its own.
        peer = ("peer", "name", "eth0", "netns", task.name)
        _ip("link", "add", task.veth, "type", "veth", *peer)
        _ip("link", "set", task.veth, "master", self.bridge, "up")

        prefix = f"{task.address}/{self._subnet().prefixlen}"
        _ip("addr", "add", prefix, "dev", "eth0", netns=task.name)
        _ip("link", "set", "lo", "up", netns=task.name)
        _ip("link", "set", "eth0", "up", netns=task.name)
        _ip("route", "add", "default", "via", self.gateway_address, netns=task.name)

    def _hosts_text(self, task: TaskNamespace) -> str:
        lines = [
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            # The machine's host name resolves to the task, as a Fargate task's
            # own host name does, so servers that look themselves up start.
            f"{task.address}\t{task.name} {socket.gethostname()}",
        ]
        lines += [f"{addr}\t{host}" for host, addr in self._extra_hosts.items()]
        return "\n".join(lines) + "\n"


def reap(run_id: str | None = None) -> list[str]:
    """Remove every namespace, link and folder of run ``run_id`` (or of every
    harness run) and return what was removed.

    Note: without a run id it also removes the networks of runs still alive
    (another pytest-xdist worker's, say); call it so only when none are.
    """
    require_net_admin()
    if run_id is not None:
        _checked_run_id(run_id)

    def mine(name: str) -> bool:
        owner = run_of(name)
        return owner is not None and run_id in (None, owner)

    namespaces = [name for name in _namespaces() if _NAMESPACE.match(name)]
    namespaces = [name for name in namespaces if mine(name)]
    for name in namespaces:
        _end_processes_in(name)
    removed = _remove_links(mine, "veth", _VETH)
    for name in namespaces:
        _ip("netns", "del", name)
        removed.append(f"namespace {name}")
    removed += _remove_links(mine, "bridge", _BRIDGE)
    removed += _remove_folders(mine)

    logger.info("reaped %d leftovers: %s", len(removed), ", ".join(removed) or "-")
    return removed


def _remove_links(
    mine: Callable[[str], bool], kind: str, pattern: re.Pattern[str]
) -> list[str]:
    removed = []
    for link in _ip_json("-d", "link", "show"):
        name = link.get("ifname", "")
        link_kind = link.get("linkinfo", {}).get("info_kind")
        if link_kind == kind and pattern.match(name) and mine(name):
            _ip("link", "del", name, missing_ok=True)
            removed.append(f"{kind} {name}")
    return removed


def _remove_folders(mine: Callable[[str], bool]) -> list[str]:
    if not NETNS_ETC.is_dir():
        return []
    removed = []
    for folder in sorted(NETNS_ETC.iterdir()):
        if _NAMESPACE.match(folder.name) and mine(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"folder {folder}")
    return removed


def _remove_namespace(name: str, veth: str) -> None:
    # The veth goes first, by name, because the kernel frees a deleted
    # namespace's links later, asynchronously, and the name may be reused.
    if name in _namespaces():
        _end_processes_in(name)
    if _has_link(veth):
        _ip("link", "del", veth, missing_ok=True)
    if name in _namespaces():
        _ip("netns", "del", name)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def _end_processes_in(name: str) -> None:
    pids = _ip("netns", "pids", name).split()
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(int(pid)))
    if procs:
        logger.info("ending %d processes left in %s", len(procs), name)
        end_processes(procs, _KILL_GRACE_SECONDS)


def _allocate_subnet(bridge: str) -> ipaddress.IPv4Network:
    # The lock makes "find a free /24, then take it" one step for every run on
    # the machine; the addresses on the host's links are the registry, so a
    # removed bridge releases its subnet and nothing can go stale.
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(LOCK_PATH), timeout=_LOCK_TIMEOUT_SECONDS):
        taken = _subnets_in_use()
        subnet = next(
            (net for net in HARNESS_RANGE.subnets(new_prefix=24) if net not in taken),
            None,
        )
        if subnet is None:
            raise DeployError(
                f"every /24 of {HARNESS_RANGE} is in use",
                resource=bridge,
                details="Remove networks of ended runs with `python -m harness reap`.",
            )
        try:
            _ip("link", "add", bridge, "type", "bridge", "stp_state", "0")
            _ip("addr", "add", f"{subnet[1]}/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
        except BaseException:
            _ip("link", "del", bridge, missing_ok=True)
            raise
    return subnet


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    taken = set()
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            address = ipaddress.IPv4Address(info["local"])
            if address in HARNESS_RANGE:
                taken.add(ipaddress.IPv4Network(f"{address}/24", strict=False))
    return taken


def _namespaces() -> set[str]:
    return {entry["name"] for entry in _ip_json("netns", "list")}


def _has_link(name: str) -> bool:
    return any(link.get("ifname") == name for link in _ip_json("link", "show"))


def _ip_json(*args: str) -> list[dict[str, Any]]:
    text = _ip("-j", *args).strip()
    found: list[dict[str, Any]] = json.loads(text) if text else []
    return found


def _ip(*args: str, netns: str | None = None, missing_ok: bool = False) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    logger.debug("running %s", " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    # A link another cleanup removed first is already where it should be.
    if missing_ok and "Cannot find device" in done.stderr:
        return ""
    if done.returncode != 0:
        raise DeployError(
            f"`{' '.join(argv)}` failed with exit code {done.returncode}",
            resource=netns,
            details=done.stderr.strip() or None,
        )
    return done.stdout


def _rewrite_in_place(path: Path, text: str) -> None:
    # Processes started by `ip netns exec` see a bind mount of this very inode,
    # so the file is rewritten in place; replacing it would hide the change.
    # Blank lines pad over the old text so a reader never sees a stale tail.
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        padding = max(0, os.fstat(fd).st_size - len(data))
        os.write(fd, data + b"\n" * padding)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _check_host_entry(host: str, address: str) -> None:
    try:
        ipaddress.ip_address(address)
        valid_host = bool(host) and not any(c.isspace() or c == "#" for c in host)
    except ValueError:
        valid_host = False
    if not valid_host:
        raise ConfigError(
            f"{host!r} -> {address!r} cannot go in a hosts file",
            details="Map DNS names (no spaces or '#') to IP addresses, e.g. "
            "{'euglena-gateway.euglena.local': '10.213.0.2'}.",
        )


def _checked_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ConfigError(
            f"run id {run_id!r} cannot name the run's network",
            details="Use 4-12 lowercase letters or digits, e.g. 'ab12cd34'.",
        )
    return run_id
