"""The local target's awsvpc networking, proven with real namespaces and processes."""

from __future__ import annotations

import gc
import ipaddress
import json
import secrets
import selectors
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import tenacity

from harness.errors import ConfigError, DeployError
from harness.local import netns
from harness.local.netns import RunNetwork, TaskNamespace

# A standard port the host may already use itself (its own Redis).
STANDARD_PORT = 6379
DEADLINE_SECONDS = 10.0

# Reads host names on stdin and answers each with its address, or "-" if unknown.
_RESOLVER = """
import socket, sys
for line in sys.stdin:
    try:
        print(socket.gethostbyname(line.strip()), flush=True)
    except OSError:
        print("-", flush=True)
"""


def _new_run_id() -> str:
    return f"nt{secrets.token_hex(4)}"


@pytest.fixture
def make_run() -> Iterator[Callable[[], RunNetwork]]:
    """Creates run networks and removes all they left, even when a test fails."""
    made: list[RunNetwork] = []

    def make() -> RunNetwork:
        run = RunNetwork(_new_run_id())
        made.append(run)
        return run.create()

    yield make
    for run in made:
        run.destroy()
        netns.reap(run.run_id)


@pytest.fixture
def run(make_run: Callable[[], RunNetwork]) -> RunNetwork:
    """One run network with its bridge."""
    return make_run()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, ended after it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(timeout=DEADLINE_SECONDS)


def _serve(
    task: TaskNamespace,
    root: Path,
    processes: list[subprocess.Popen[str]],
    bind: str = "0.0.0.0",
) -> None:
    """Start an HTTP server in ``task`` whose /whoami answers the task's name."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "whoami").write_text(task.name)
    argv = [sys.executable, "-m", "http.server", str(STANDARD_PORT), "--bind", bind]
    processes.append(
        subprocess.Popen(
            [*task.exec_prefix(), *argv, "--directory", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    )


def _inside(task: TaskNamespace, code: str) -> str:
    """Run Python ``code`` inside ``task`` and return what it printed."""
    done = subprocess.run(
        [*task.exec_prefix(), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        check=True,
    )
    return done.stdout.strip()


def _fetch_inside(task: TaskNamespace, host: str) -> str:
    code = (
        "import urllib.request as u; print(u.urlopen("
        f"'http://{host}:{STANDARD_PORT}/whoami', timeout=2).read().decode())"
    )
    return _inside(task, code)


def _whoami(address: str) -> str:
    url = f"http://{address}:{STANDARD_PORT}/whoami"
    return httpx.get(url, timeout=1.0).text


def _until(check: Callable[[], object]) -> object:
    """Retry ``check`` until it returns without raising, up to the deadline."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(DEADLINE_SECONDS),
        wait=tenacity.wait_fixed(0.1),
        reraise=True,
    )
    return retrying(check)


def _refused_or_timed_out(address: str) -> None:
    try:
        socket.create_connection((address, STANDARD_PORT), timeout=0.5).close()
    except OSError:
        return
    raise AssertionError(f"{address}:{STANDARD_PORT} still answers")


def _names_left(run_id: str) -> list[str]:
    """Every namespace, link and /etc/netns folder named after ``run_id``."""
    namespaces = [ns.split()[0] for ns in _ip_lines("netns", "list")]
    links = [link["ifname"] for link in json.loads(_ip_text("-j", "link", "show"))]
    folders = [p.name for p in Path("/etc/netns").glob("*")]
    return [
        name for name in [*namespaces, *links, *folders] if netns.run_of(name) == run_id
    ]


def _ip_text(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True).stdout


def _ip_lines(*args: str) -> list[str]:
    return [line for line in _ip_text(*args).splitlines() if line.strip()]


def _assert_in_namespace(pid: int, name: str) -> None:
    assert str(pid) in _ip_text("netns", "pids", name).split()


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ask(resolver: subprocess.Popen[str], name: str) -> str:
    """Ask a running resolver for ``name``; fail if it does not answer in time."""
    assert resolver.stdin is not None
    assert resolver.stdout is not None
    resolver.stdin.write(name + "\n")
    resolver.stdin.flush()
    with selectors.DefaultSelector() as selector:
        selector.register(resolver.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=DEADLINE_SECONDS):
            raise AssertionError(f"the resolver gave no answer for {name}")
    return resolver.stdout.readline().strip()


def test_host_reaches_a_task_server_on_a_standard_port(
    run: RunNetwork, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A server on 6379 inside a task answers the host at the task's address."""
    task = run.add_task("web")

    _serve(task, tmp_path, processes)

    assert _until(lambda: _whoami(task.address)) == task.name
    assert run.subnet is not None
    assert ipaddress.ip_address(task.address) in run.subnet
    assert run.gateway_address == str(run.subnet[1])


def test_two_tasks_of_one_run_reach_each_other_and_the_host(
    run: RunNetwork, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A task reaches another task of its run by address, and the bridge address."""
    server, client = run.add_task("server"), run.add_task("client")
    _serve(server, tmp_path, processes)
    _until(lambda: _whoami(server.address))

    answer = _fetch_inside(client, server.address)
    gateway_code = (
        "import socket; s = socket.create_connection("
        f"('{run.gateway_address}', {_host_listener_port(processes)}), timeout=2);"
        "print(s.recv(16).decode())"
    )

    assert answer == server.name
    assert _until(lambda: _inside(client, gateway_code)) == "host"


def _host_listener_port(processes: list[subprocess.Popen[str]]) -> int:
    """Start a host process on all addresses that greets each connection with
    'host', standing in for a harness server such as moto."""
    code = (
        "import socket, sys\n"
        "s = socket.create_server(('0.0.0.0', 0)); "
        "print(s.getsockname()[1], flush=True)\n"
        "while True:\n    c, _ = s.accept(); c.sendall(b'host'); c.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    processes.append(proc)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def test_localhost_inside_a_task_is_its_own(
    run: RunNetwork, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A server on a task's localhost is seen there and nowhere else."""
    own, other = run.add_task("own"), run.add_task("other")

    _serve(own, tmp_path, processes, bind="127.0.0.1")

    assert _until(lambda: _fetch_inside(own, "localhost")) == own.name
    with pytest.raises(subprocess.CalledProcessError):
        _fetch_inside(other, "localhost")


def test_set_hosts_names_resolve_and_follow_a_change_of_address(
    run: RunNetwork, processes: list[subprocess.Popen[str]]
) -> None:
    """A name set with set_hosts resolves in a running task and follows a change."""
    task = run.add_task("agent")
    name = "euglena-gateway.euglena.local"
    resolver = subprocess.Popen(
        [*task.exec_prefix(), sys.executable, "-c", _RESOLVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(resolver)

    run.set_hosts({name: "10.213.255.7"})
    first = _ask(resolver, name)
    run.set_hosts({name: "10.213.255.8"})
    second = _ask(resolver, name)

    assert (first, second) == ("10.213.255.7", "10.213.255.8")
    assert _ask(resolver, "localhost") == "127.0.0.1"
    assert _ask(resolver, task.name) == task.address


def test_unknown_names_fail_fast_inside_a_task(run: RunNetwork) -> None:
    """Looking up an unknown name in a task fails within seconds, not a hang."""
    task = run.add_task("lookup")
    code = (
        "import socket\ntry:\n    socket.gethostbyname('no-such-host.invalid')\n"
        "except OSError:\n    print('unknown')"
    )

    assert _inside(task, code) == "unknown"


def test_new_tasks_get_the_hosts_already_set(run: RunNetwork) -> None:
    """A task added after set_hosts resolves the names set before it existed."""
    run.set_hosts({"euglena-redis.euglena.local": "10.213.255.9"})

    task = run.add_task("late")

    assert "10.213.255.9\teuglena-redis.euglena.local" in task.hosts_path.read_text()


def test_a_shorter_hosts_list_leaves_no_stale_entry(run: RunNetwork) -> None:
    """Rewriting the hosts file with fewer names drops the old ones entirely."""
    task = run.add_task("shrink")
    run.set_hosts({f"euglena-old-{n}.euglena.local": "10.213.255.1" for n in range(9)})

    run.set_hosts({"euglena-new.euglena.local": "10.213.255.2"})
    text = task.hosts_path.read_text()

    assert "euglena-old" not in text
    assert text.endswith("10.213.255.2\teuglena-new.euglena.local\n")


def test_cut_makes_a_task_unreachable_and_restore_brings_it_back(
    run: RunNetwork, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """While cut the task's address does not answer; after restore it does."""
    task = run.add_task("flaky")
    _serve(task, tmp_path, processes)
    _until(lambda: _whoami(task.address))

    task.cut()
    _until(lambda: _refused_or_timed_out(task.address))
    was_cut = task.is_cut
    task.restore()

    assert was_cut
    assert not task.is_cut
    assert _until(lambda: _whoami(task.address)) == task.name


def test_two_runs_at_once_get_different_subnets(
    make_run: Callable[[], RunNetwork],
) -> None:
    """Two runs alive together own different /24s of the harness range."""
    first, second = make_run(), make_run()

    assert first.subnet is not None
    assert second.subnet is not None
    assert first.subnet != second.subnet
    assert first.subnet.subnet_of(netns.HARNESS_RANGE)
    assert second.subnet.subnet_of(netns.HARNESS_RANGE)


def test_remove_task_ends_its_processes_and_leaves_nothing(
    run: RunNetwork, processes: list[subprocess.Popen[str]]
) -> None:
    """remove_task ends the task's processes and removes namespace, veth, folder."""
    task, kept = run.add_task("gone"), run.add_task("kept")
    sleeper = subprocess.Popen([*task.exec_prefix(), "sleep", "600"], text=True)
    processes.append(sleeper)
    _until(lambda: _assert_in_namespace(sleeper.pid, task.name))

    run.remove_task(task)

    assert not _is_alive(sleeper.pid)
    assert sorted(_names_left(run.run_id)) == sorted(
        [kept.name, kept.veth, run.bridge, kept.name]
    )


def test_destroy_leaves_no_namespace_link_or_folder(run: RunNetwork) -> None:
    """destroy removes every namespace, link and folder of the run."""
    run.add_task("a")
    run.add_task("b")

    run.destroy()

    assert _names_left(run.run_id) == []
    assert run.subnet is None


def test_reap_removes_what_a_crashed_run_left() -> None:
    """reap by run id removes the namespaces, links and folders of a lost run."""
    crashed = RunNetwork(_new_run_id()).create()
    run_id = crashed.run_id
    try:
        crashed.add_task("orphan")
        del crashed
        gc.collect()

        removed = netns.reap(run_id)

        assert _names_left(run_id) == []
        assert f"namespace euglena-{run_id}-orphan" in removed
        assert f"bridge ebr{run_id}" in removed
    finally:
        netns.reap(run_id)


def test_a_second_network_for_a_live_run_is_refused(run: RunNetwork) -> None:
    """Creating a run's network while its bridge exists fails, naming reap."""
    with pytest.raises(DeployError, match="reap"):
        RunNetwork(run.run_id).create()


def test_missing_capabilities_fail_with_a_config_error() -> None:
    """Without CAP_NET_ADMIN the local target refuses to start, saying how to fix."""
    with pytest.raises(ConfigError, match="root or CAP_NET_ADMIN") as caught:
        netns.require_net_admin(effective_caps=1 << netns.CAP_SYS_ADMIN)

    assert "--cap-add NET_ADMIN" in str(caught.value)


def test_full_capabilities_are_accepted() -> None:
    """With CAP_NET_ADMIN and CAP_SYS_ADMIN the check passes."""
    caps = (1 << netns.CAP_NET_ADMIN) | (1 << netns.CAP_SYS_ADMIN)

    netns.require_net_admin(effective_caps=caps)


def test_names_fit_the_kernel_and_tell_runs_apart() -> None:
    """Link names stay within 15 characters and map back to exactly one run."""
    long_run, short_run = "ab12cd34ef56", "ab12"

    names = [netns.bridge_name(long_run), netns.veth_name(long_run, 99)]

    assert all(len(name) <= 15 for name in names)
    assert [netns.run_of(name) for name in names] == [long_run, long_run]
    assert netns.run_of(netns.veth_name(short_run, 3)) == short_run
    assert netns.run_of(netns.namespace_name("ab12", "cd34-x")) == "ab12"
    assert netns.run_of("eth0") is None


@pytest.mark.parametrize("run_id", ["AB12", "ab1", "ab12cd34ef567", "ab-12"])
def test_bad_run_ids_are_config_errors(run_id: str) -> None:
    """A run id that cannot name interfaces is refused before anything is made."""
    with pytest.raises(ConfigError, match="4-12 lowercase"):
        RunNetwork(run_id)


def test_bad_host_entries_are_config_errors(run: RunNetwork) -> None:
    """set_hosts refuses an address that is not an IP address."""
    with pytest.raises(ConfigError, match="cannot go in a hosts file"):
        run.set_hosts({"euglena-gateway.euglena.local": "gateway"})
