"""PostgreSQL advisory locks held for a whole session: the migration lock, and the
locks of jobs only one process may run at a time (`exclusive_job`).

Why PostgreSQL rather than a Redis lock with a token: each of these jobs works in
PostgreSQL for its whole run anyway, and the server releases a session's lock the
moment its connection ends, so a holder that crashes or is killed frees it at once,
with no expiry to choose or extend while a long job runs, and with Redis down too.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from stores.errors import StoreRefused


class JobAlreadyRunning(StoreRefused):
    """Another process holds the job's lock."""

    def __init__(self, job: str, holder: str) -> None:
        super().__init__(f"another {job} is running ({holder}); let it finish, then run it again")
        self.job = job
        self.holder = holder


def job_key(job: str) -> int:
    """A stable signed 64-bit key per job name: every process computes the same one."""
    digest = hashlib.sha256(f"polygraph job: {job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def exclusive_job(conn: asyncpg.Connection, job: str) -> AsyncIterator[None]:
    """Hold `job`'s lock on `conn` (a connection of the job's own) while the block runs;
    raise `JobAlreadyRunning`, naming the holder, when another session has it."""
    key = job_key(job)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        raise JobAlreadyRunning(job, await lock_holder(conn, key))
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def lock_holder(conn: asyncpg.Connection, key: int) -> str:
    """Who holds the advisory lock `key`, for a message."""
    # A bigint advisory key is kept as two 32-bit halves.
    row = await conn.fetchrow(
        "SELECT a.pid, a.application_name, host(a.client_addr) AS client,"
        " round(extract(epoch FROM now() - a.backend_start)) AS seconds"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid",
        (key >> 32) & 0xFFFFFFFF,
        key & 0xFFFFFFFF,
    )
    if row is None:
        return "a session that has let it go since"
    application = row["application_name"] or "no application name"
    where = f" from {row['client']}" if row["client"] else ""
    return f"server process {row['pid']} ({application}{where}, connected {row['seconds']} s ago)"
