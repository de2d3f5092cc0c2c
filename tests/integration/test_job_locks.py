"""Jobs only one process may run at a time (graph rebuild, reembed) take a PostgreSQL
advisory lock: a second process is refused with the holder named, and a holder that
is killed frees the lock at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest

from gateway.settings import Settings
from stores import GraphStore, PostgresStore
from stores.postgres.advisory import JobAlreadyRunning, job_key
from tests.support.waiting import until
from workers.embeddings import REEMBED_JOB
from workers.graph_rebuild import REBUILD_JOB, rebuild

# Another process that holds a job's lock, through the same code, until killed.
HOLDER = """
import asyncio, sys
from gateway.settings import Settings
from stores import PostgresStore

async def hold() -> None:
    async with PostgresStore(Settings().postgres_options()) as pg, pg.exclusive_job(sys.argv[1]):
        print("held", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(hold())
"""


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "POLYGRAPH_POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
        "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
        "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "POLYGRAPH_REDIS_URL": settings.redis_url.get_secret_value(),
    }


@contextmanager
def _held(settings: Settings, job: str) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, job],
        env=_env(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held", "the holder did not get the lock"
            yield holder
        finally:
            if holder.poll() is None:
                holder.kill()


async def _lock_free(dsn: str, job: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        key = job_key(job)
        taken = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 1 AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
        return bool(taken == 0)
    finally:
        await conn.close()


def _reembed(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "reembed"],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_second_reembed_is_refused_until_the_first_holder_dies(settings: Settings) -> None:
    with _held(settings, REEMBED_JOB) as holder:
        refused = _reembed(settings)
        assert refused.returncode == 1
        assert "another reembed is running" in refused.stderr
        assert "polygraph reembed" in refused.stderr  # the holder's application name
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    # The server lets go of a dead session's locks: no expiry to wait out.
    asyncio.run(until(lambda: _lock_free(settings.postgres_dsn.get_secret_value(), REEMBED_JOB)))
    done = _reembed(settings)
    assert done.returncode == 0, done.stderr


async def test_a_graph_rebuild_is_refused_while_another_runs(
    settings: Settings, postgres: PostgresStore, graph: GraphStore
) -> None:
    await postgres.migrate()
    refused = pytest.raises(JobAlreadyRunning, match="another graph rebuild is running")
    with _held(settings, REBUILD_JOB), refused:
        await rebuild(postgres, graph, prune_only=[])
    await until(lambda: _lock_free(settings.postgres_dsn.get_secret_value(), REBUILD_JOB))
    report = await rebuild(postgres, graph, prune_only=[])
    assert report.removed_nodes == 0
