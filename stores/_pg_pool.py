"""The asyncpg pool and its lifecycle, shared by the PostgreSQL and metrics stores."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from stores._lifecycle import Lifecycle, StoreState
from stores._tls import describe_failure
from stores.errors import StoreOverloaded, StoreTimeout, StoreUnavailable
from stores.health import PoolUsage
from stores.postgres.options import PgConnection

logger = logging.getLogger(__name__)

# Errors that mean "the server is not there or the connection broke", as opposed to
# the server refusing a statement.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
)


class PgPool:
    """Opens degraded when the server is down at start-up (the pool connects on first
    use), closes within `close_timeout`, and turns an unreachable server into
    `StoreUnavailable` naming the store."""

    __slots__ = (
        "_acquire_timeout",
        "_checked_out",
        "_close_timeout",
        "_create",
        "_lifecycle",
        "_min_size",
        "_name",
        "_pool",
        "_waiting",
    )

    def __init__(
        self,
        name: str,
        create: Callable[[int], Awaitable[asyncpg.Pool]],
        *,
        min_size: int,
        acquire_timeout: float,
        close_timeout: float,
    ) -> None:
        """`create(min_size)` makes the pool; the store decides its settings."""
        self._name = name
        self._create = create
        self._min_size = min_size
        self._acquire_timeout = acquire_timeout
        self._close_timeout = close_timeout
        self._pool: asyncpg.Pool | None = None
        self._waiting = 0
        # Connections handed out by `connection()` and not yet back in the pool (every
        # acquire goes through it); `_waiting` counts those being taken.
        self._checked_out = 0
        self._lifecycle = Lifecycle(name)

    async def open(self) -> None:
        self._lifecycle.opening()
        try:
            self._pool = await self._create(self._min_size)
        except UNAVAILABLE_ERRORS as exc:
            # Start degraded rather than not at all.
            logger.warning(
                "%s not reachable at start-up (%s); will retry on use",
                self._name,
                describe_failure(exc),
            )
            self._pool = await self._create(0)
        self._lifecycle.state = StoreState.OPENED

    def check_open(self) -> None:
        """Raise `StoreMisuse` unless the pool is open."""
        self._lifecycle.check_open()

    async def aclose(self) -> None:
        if self._lifecycle.state is not StoreState.OPENED or self._pool is None:
            self._lifecycle.state = StoreState.CLOSED
            return
        self._lifecycle.state = StoreState.CLOSED
        try:
            await asyncio.wait_for(self._pool.close(), timeout=self._close_timeout)
        except (TimeoutError, asyncio.CancelledError):
            # Connections still checked out after the grace period are not coming back.
            self._pool.terminate()
            raise

    async def expire_connections(self) -> None:
        """Replace every connection (one in use when it is released), so that new ones
        run the pool's `init` again."""
        self._lifecycle.check_open()
        assert self._pool is not None
        await self._pool.expire_connections()

    def usage(self) -> PoolUsage:
        """Connections in use, idle and waited for, now (for metrics)."""
        pool = self._pool
        if pool is None:
            return PoolUsage(in_use=0, idle=0, waiting=self._waiting, max=0)
        idle = pool.get_idle_size()
        return PoolUsage(
            in_use=pool.get_size() - idle,
            idle=idle,
            waiting=self._waiting,
            max=pool.get_max_size(),
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PgConnection]:
        """A pooled connection. Waiting too long for one is `StoreOverloaded` when every
        connection is busy (an unreachable server times out connecting instead); a
        statement past its timeout is `StoreTimeout`."""
        self._lifecycle.check_open()
        pool = self._pool
        assert pool is not None
        # A connection, or room to open one (bounded by the pool's connect timeout), is
        # free when fewer than the pool's size are out or being taken: taking it does
        # not wait, so no timer bounds it. Otherwise the wait is bounded here rather
        # than by `acquire(timeout=)`: before Python 3.12 asyncpg bounds that with a
        # `wait_for` running the acquire in a task of its own.
        free = self._checked_out + self._waiting < pool.get_max_size()
        try:
            self._waiting += 1
            try:
                if free:
                    conn = await pool.acquire()
                else:
                    async with asyncio.timeout(self._acquire_timeout):
                        conn = await pool.acquire()
            finally:
                self._waiting -= 1
        except TimeoutError as exc:
            if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
                raise StoreOverloaded(
                    self._name, f"no free connection within {self._acquire_timeout:g}s"
                ) from exc
            raise StoreUnavailable(self._name, "connecting timed out") from exc
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self._name, describe_failure(exc)) from exc
        self._checked_out += 1
        try:
            yield conn
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            # The client-side command timeout and the server's statement_timeout.
            raise StoreTimeout(self._name, "a statement ran past its timeout") from exc
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self._name, describe_failure(exc)) from exc
        finally:
            try:
                # Bounded, as `acquire(timeout=)` left it: a connection whose statement
                # was cancelled waits for the server to confirm, and a pool closing
                # waits for every release.
                await pool.release(conn, timeout=self._acquire_timeout)
            finally:
                self._checked_out -= 1


# What an `ObservedConnection` reports of each statement: its text and its seconds.
StatementObserver = Callable[[str, float], None]


class ObservedConnection(asyncpg.Connection):
    """A connection that reports every statement sent through its public methods to
    `observer` (set by the pool's `init`): the round trip and its latency.

    In place of asyncpg's query logger, which wraps each statement in a generator-based
    context manager, builds a `LoggedQuery` and schedules each callback as a handle of
    its own on the event loop: about 4% of a one-row read's CPU. The statements asyncpg
    sends on its own account (type introspection, on a type's first use on a
    connection) go through its private methods and are not reported, which is what
    counting round trips wants.
    """

    observer: StatementObserver | None = None

    def _observed(self, query: str, started: float) -> None:
        observer = self.observer
        if observer is not None:
            observer(query, time.perf_counter() - started)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        started = time.perf_counter()
        try:
            return await super().execute(query, *args, **kwargs)
        finally:
            self._observed(query, started)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            await super().executemany(command, args, **kwargs)
        finally:
            self._observed(command, started)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().fetch(query, *args, **kwargs)
        finally:
            self._observed(query, started)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().fetchrow(query, *args, **kwargs)
        finally:
            self._observed(query, started)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().fetchval(query, *args, **kwargs)
        finally:
            self._observed(query, started)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().fetchmany(query, args, **kwargs)
        finally:
            self._observed(query, started)
