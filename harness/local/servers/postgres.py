"""A PostgreSQL cluster of its own: ``initdb`` once, then ``postgres`` in the
foreground on a TCP port, with password (scram) authentication.

Postgres refuses to run as root. Run by root, the cluster's files are given to
the ``postgres`` OS user and both ``initdb`` and ``postgres`` run as that user
(through ``setpriv``, which execs, so the supervised pid is the postmaster).

Note: that user must be able to reach ``data_dir``. When an ancestor directory
does not let it through (pytest's ``/tmp/pytest-of-root`` is mode 0700), search
permission for others (``o+x``) is added to that ancestor, which lets others
pass through it but not list it; each change is logged.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg

from harness.local.servers.base import ServerProcess, ServerStartError, netns_prefix

logger = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
_INITDB_SECONDS = 120


class PostgresCluster(ServerProcess):
    """A Postgres cluster supervised from here, its files in ``data_dir/pgdata``."""

    kind = "postgres"
    # SIGINT is Postgres's "fast" shutdown: it does not wait for clients to leave.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        password: str,
        superuser: str = "postgres",
        bind: str = "127.0.0.1",
        connect_host: str | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            data_dir,
            netns=netns,
            env=env,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.port = port
        self.password = password
        self.superuser = superuser
        self.bind = bind
        self.host = connect_host or ("127.0.0.1" if bind == "0.0.0.0" else bind)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def dsn(self) -> str:
        """Connection URL of the ``postgres`` database as the superuser."""
        auth = f"{quote(self.superuser, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/postgres"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    def describe(self) -> str:
        return f"postgres on {self.host}:{self.port}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return [
            "setpriv",
            f"--reuid={OS_USER}",
            f"--regid={OS_USER}",
            "--init-groups",
            "--",
            *argv,
        ]

    def command(self) -> list[str]:
        return self._as_owner(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.pgdata),
                "-c",
                f"listen_addresses={self.bind}",
                "-c",
                f"port={self.port}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "logging_collector=off",
            ]
        )

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if os.geteuid() == 0:
            env["HOME"] = str(self.pgdata)
        return env

    def prepare(self) -> None:
        if os.geteuid() == 0:
            _open_path_for(self.data_dir, pwd.getpwnam(OS_USER))
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.data_dir / "initdb.pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OS_USER)
            for path in (self.pgdata, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)

        try:
            done = self._run_initdb(pwfile)
        finally:
            pwfile.unlink(missing_ok=True)

        if done.returncode != 0:
            raise ServerStartError(
                f"initdb failed with code {done.returncode}; its output is below",
                resource=self.describe(),
                details=(done.stdout + done.stderr)[-4000:],
            )
        self._allow_remote_hosts()
        logger.info("initialised a postgres cluster in %s", self.pgdata)

    def _run_initdb(self, pwfile: Path) -> subprocess.CompletedProcess[str]:
        argv = [
            str(PG_BIN / "initdb"),
            "-D",
            str(self.pgdata),
            f"--username={self.superuser}",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        ]
        return subprocess.run(
            [*netns_prefix(self.netns), *self._as_owner(argv)],
            capture_output=True,
            text=True,
            env=self.environment(),
            cwd=self.data_dir,
            timeout=_INITDB_SECONDS,
            check=False,
        )

    def _allow_remote_hosts(self) -> None:
        # initdb trusts loopback only; other tasks reach the cluster from their own
        # addresses, always with a password.
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
            hba.write("host all all ::/0 scram-sha-256\n")

    def probe(self) -> None:
        with psycopg.connect(self.dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")


def _open_path_for(path: Path, user: pwd.struct_passwd) -> None:
    """Let ``user`` own ``path`` and pass through every directory above it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for ancestor in path.parents:
        info = ancestor.stat()
        if info.st_uid == user.pw_uid:
            needed = stat.S_IXUSR
        elif info.st_gid in groups:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            ancestor.chmod(stat.S_IMODE(info.st_mode) | needed)
            logger.info("let the %s user pass through %s", user.pw_name, ancestor)
