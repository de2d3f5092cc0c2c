"""PostgreSQL's pool: a free connection is taken at once, a busy pool waits only as long
as the acquire timeout allows, and a connection always comes back (statement done,
failed or cancelled), so the pool's own count of what is out stays right; each statement
a caller sends is one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from functools import partial

import asyncpg
import pytest

from gateway.settings import Settings
from stores import InvalidInput, PostgresStore, StoreOverloaded, roundtrips
from stores._pg_pool import PgPool
from stores.health import CUT_SHORT, EXPIRED, IN_TRANSACTION, LOST, RECYCLED, UNUSED
from tests.support.waiting import until


def _two_connections(settings: Settings, *, acquire_timeout: float = 60) -> PostgresStore:
    options = replace(
        settings.postgres_options(), min_size=1, max_size=2, acquire_timeout=acquire_timeout
    )
    return PostgresStore(options)


async def test_a_burst_beyond_the_pool_waits_its_turn_and_gives_every_connection_back(
    settings: Settings,
) -> None:
    async with _two_connections(settings) as store:

        async def one(n: int) -> int:
            async with store.connection() as conn:
                value: int = await conn.fetchval("SELECT $1::int", n)
                return value

        assert await asyncio.gather(*(one(n) for n in range(40))) == list(range(40))
        usage = store.pool_usage()
        assert (usage.in_use, usage.waiting) == (0, 0)


async def test_values_a_column_cannot_take_are_invalid_input_and_wrong_types_are_not(
    settings: Settings,
) -> None:
    async with _two_connections(settings) as store:
        # The caller's: PostgreSQL refuses it, or the driver finds it out of range.
        for statement, value in (("SELECT $1::text", "a\x00"), ("SELECT $1::int8", 2**70)):
            with pytest.raises(InvalidInput, match="cannot store"):
                async with store.connection() as conn:
                    await conn.fetchval(statement, value)
        # The code's: a defect, reported as one (INTERNAL) rather than as bad input.
        with pytest.raises(asyncpg.DataError, match="invalid input for query argument"):
            async with store.connection() as conn:
                await conn.fetchval("SELECT $1::int", "1")
        async with store.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1


async def test_every_connection_busy_is_overloaded_within_the_acquire_timeout(
    settings: Settings,
) -> None:
    async with _two_connections(settings, acquire_timeout=0.3) as store:
        release = asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with store.connection():
                holding += 1
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await until(lambda: holding == 2)
        # A test's own bound: an acquire that waited without one would never return.
        async with asyncio.timeout(30):
            with pytest.raises(StoreOverloaded):
                async with store.connection():
                    pass
        release.set()
        await asyncio.gather(*holders)
        async with store.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert store.pool_usage().in_use == 0


async def test_a_connection_held_by_a_cancelled_task_comes_back(settings: Settings) -> None:
    async with _two_connections(settings) as store:
        started = 0

        async def sleeper() -> None:
            nonlocal started
            async with store.connection() as conn:
                started += 1
                await conn.execute("SELECT pg_sleep(60)")

        sleepers = [asyncio.create_task(sleeper()) for _ in range(2)]
        await until(lambda: started == 2)
        for task in sleepers:
            task.cancel()
        await asyncio.gather(*sleepers, return_exceptions=True)
        # Both connections are free again: two statements at once take them without
        # waiting on the acquire timeout.
        async with store.connection() as first, store.connection() as second:
            assert await first.fetchval("SELECT 1") == 1
            assert await second.fetchval("SELECT 2") == 2
        assert store.pool_usage().in_use == 0


async def test_each_statement_counts_one_round_trip_and_asyncpg_warm_up_none(
    settings: Settings,
) -> None:
    async with _two_connections(settings) as store:
        with roundtrips.counting() as counter:
            async with store.connection() as conn:
                # A type this connection has not met: asyncpg looks it up first (a
                # statement of its own, not the request's).
                await conn.fetch("SELECT $1::int4range AS r", asyncpg.Range(1, 3))
                await conn.fetchrow("SELECT 1")
                await conn.fetchval("SELECT 1")
                await conn.execute("SELECT 1")
                await conn.executemany("SELECT $1::int", [(1,), (2,)])
                await conn.fetchmany("SELECT $1::int", [(1,), (2,)])
                with pytest.raises(asyncpg.PostgresError):
                    await conn.execute("SELECT no_such_column")
        assert counter == {"postgres": 7}


async def test_a_connection_left_in_a_transaction_is_closed_not_lent_again(
    settings: Settings,
) -> None:
    async with _two_connections(settings) as store:
        async with store.connection() as conn:
            await conn.execute("BEGIN")
            left_open = conn.get_server_pid()
        await until(lambda: conn.is_closed())
        async with store.connection() as conn:
            assert not conn.is_in_transaction()
            assert conn.get_server_pid() != left_open


async def test_a_cancelled_statement_stops_on_the_server_too(settings: Settings) -> None:
    async with _two_connections(settings) as store:
        started = asyncio.Event()

        async def sleeper() -> None:
            async with store.connection() as conn:
                started.set()
                await conn.execute("SELECT pg_sleep(60) /* cancelled-sleeper */")

        task = asyncio.create_task(sleeper())
        await started.wait()

        async def sleeping() -> int:
            async with store.connection() as conn:
                count: int = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE query LIKE '%cancelled-sleeper%' AND pid <> pg_backend_pid()"
                    " AND state = 'active'"
                )
                return count

        await until(lambda: _running(sleeping()))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Cancelled on the server, not left to run its 60 s on a connection closed under it.
        await until(lambda: _stopped(sleeping()))
        assert store.pool_usage().in_use == 0


async def _running(count: Awaitable[int]) -> bool:
    return await count > 0


async def _stopped(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    settings: Settings,
) -> None:
    async with _two_connections(settings) as store:
        async with store.connection() as conn:
            idle_pid = conn.get_server_pid()
        await _terminated_by_the_server(settings, conn)
        async with store.connection() as conn:
            assert conn.get_server_pid() != idle_pid
            assert await conn.fetchval("SELECT 1") == 1


async def test_connections_beyond_min_size_unused_for_a_while_are_closed(
    settings: Settings,
) -> None:
    pool = _bare_pool(settings, max_size=3, idle_lifetime_s=0.2)
    await pool.open()
    try:
        async with pool.connection(), pool.connection(), pool.connection() as third:
            pass
        assert pool.usage().idle == 3
        await until(lambda: pool.usage().idle == 1)
        assert pool.usage().closed == {UNUSED: 2}
        await until(lambda: third.is_closed())
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.aclose()


async def test_connections_opened_and_closed_are_counted_by_reason(settings: Settings) -> None:
    pool = _bare_pool(settings, max_size=2)
    await pool.open()
    try:
        assert (pool.usage().opened, pool.usage().closed) == (1, {})

        async def sleeper() -> None:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(60)")

        task = asyncio.create_task(sleeper())
        await until(lambda: pool.usage().in_use == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with pool.connection() as conn:
            await conn.execute("BEGIN")
        async with pool.connection() as conn:
            expired_pid = conn.get_server_pid()
        await pool.expire_connections()
        async with pool.connection() as lost:
            lost_pid = lost.get_server_pid()
        await _terminated_by_the_server(settings, lost)
        async with pool.connection() as conn:
            assert conn.get_server_pid() not in (expired_pid, lost_pid)
        usage = pool.usage()
        assert usage.closed == {CUT_SHORT: 1, IN_TRANSACTION: 1, EXPIRED: 1, LOST: 1}
        # Each one closed was replaced when next needed.
        assert usage.opened == 5
    finally:
        await pool.aclose()


async def test_a_connection_lent_max_uses_times_is_replaced(settings: Settings) -> None:
    pool = _bare_pool(settings, max_size=1, max_uses=2)
    await pool.open()
    try:
        pids = []
        for _ in range(4):
            async with pool.connection() as conn:
                pids.append(conn.get_server_pid())
        # The one connection the pool may hold is replaced after its second use.
        assert pids[0] == pids[1] != pids[2] == pids[3]
        assert (pool.usage().opened, pool.usage().closed) == (2, {RECYCLED: 2})
    finally:
        await pool.aclose()


async def _terminated_by_the_server(settings: Settings, conn: asyncpg.Connection) -> None:
    """Ends `conn`'s backend from another connection; returns once `conn` has seen it."""
    other = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        await other.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
    finally:
        await other.close()
    await until(lambda: conn.is_closed())


def _bare_pool(
    settings: Settings, *, max_size: int, idle_lifetime_s: float = 300, max_uses: int = 50_000
) -> PgPool:
    """A pool of plain connections (no codecs set up), one kept open at least."""

    async def no_init(conn: asyncpg.Connection) -> None:
        pass

    return PgPool(
        "postgres",
        partial(asyncpg.connect, settings.postgres_dsn.get_secret_value()),
        no_init,
        min_size=1,
        max_size=max_size,
        acquire_timeout=60,
        close_timeout=10,
        idle_lifetime_s=idle_lifetime_s,
        max_uses=max_uses,
    )
