"""The local stack: PostgreSQL, Redis and Neo4j for one profile, started idempotently."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from infra.local._process import ServerStatus
from infra.local.neo4j_server import Neo4jServer
from infra.local.postgres_server import PostgresServer
from infra.local.profiles import Profile
from infra.local.redis_server import RedisServer


class LocalServer(Protocol):
    name: str

    def start(self, *, timeout: float = ...) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> ServerStatus: ...


def servers(profile: Profile, *, neo4j_password: str) -> list[LocalServer]:
    return [
        PostgresServer(profile),
        RedisServer(profile),
        Neo4jServer(profile, password=neo4j_password),
    ]


@contextmanager
def _stack_lock(profile: Profile) -> Iterator[None]:
    # Several processes (pytest workers, two terminals) may bring one stack up at once.
    profile.var_dir.mkdir(parents=True, exist_ok=True)
    with (profile.var_dir / "stack.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def up(profile: Profile, *, neo4j_password: str, say: Callable[[str], None] = print) -> list[str]:
    """Start whatever is not running yet; reuse what is. Returns the names of the
    servers this call started, for `stop` to stop exactly those."""
    started_now: list[str] = []
    with _stack_lock(profile):
        for server in servers(profile, neo4j_password=neo4j_password):
            started = time.monotonic()
            was_up = server.status().up
            server.start()
            verb = "already running" if was_up else f"started in {time.monotonic() - started:.1f}s"
            if not was_up:
                started_now.append(server.name)
            say(f"{server.name}: {verb}")
    return started_now


def stop(
    profile: Profile,
    names: Iterable[str],
    *,
    neo4j_password: str,
    say: Callable[[str], None] = print,
) -> None:
    """Stop the named servers of `profile` (those an `up` started), leaving the rest."""
    wanted = set(names)
    with _stack_lock(profile):
        for server in reversed(servers(profile, neo4j_password=neo4j_password)):
            if server.name in wanted:
                server.stop()
                say(f"{server.name}: stopped")


@contextmanager
def running(
    profile: Profile, *, neo4j_password: str, say: Callable[[str], None] = print
) -> Iterator[None]:
    """The stack up for the body; whatever this started is stopped afterwards, so a
    command or a test run leaves nothing behind that was not running before it."""
    started = up(profile, neo4j_password=neo4j_password, say=say)
    try:
        yield
    finally:
        stop(profile, started, neo4j_password=neo4j_password, say=say)


def down(profile: Profile, *, neo4j_password: str, say: Callable[[str], None] = print) -> None:
    with _stack_lock(profile):
        for server in reversed(servers(profile, neo4j_password=neo4j_password)):
            was_up = server.status().pid is not None
            server.stop()
            say(f"{server.name}: {'stopped' if was_up else 'not running'}")


def status(profile: Profile, *, neo4j_password: str) -> list[ServerStatus]:
    return [server.status() for server in servers(profile, neo4j_password=neo4j_password)]


def format_status(rows: list[ServerStatus]) -> str:
    header = ("store", "port", "pid", "version", "state")
    table = [header] + [
        (
            row.store,
            str(row.port),
            str(row.pid or "-"),
            row.version or "-",
            "up" if row.up else "down",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
