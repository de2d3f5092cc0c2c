"""The PostgreSQL connection pool and its lifecycle, shared by the PostgreSQL and metrics
stores."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from stores._lifecycle import Lifecycle, StoreState
from stores._tls import describe_failure
from stores.errors import InvalidInput, StoreOverloaded, StoreTimeout, StoreUnavailable
from stores.health import (
    CUT_SHORT,
    EXPIRED,
    IN_TRANSACTION,
    LOST,
    RECYCLED,
    UNUSED,
    PoolUsage,
)
from stores.postgres.options import PgConnection

logger = logging.getLogger(__name__)

# The reason of a connection closed because the pool is closing: not counted.
_WITH_THE_POOL = ""

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
    """A pool of asyncpg connections. Opens degraded when the server is down at start-up
    (it connects on first use), closes within `close_timeout`, and turns an unreachable
    server into `StoreUnavailable` naming the store.

    Its own rather than asyncpg's `Pool`, which costs about 20 µs of CPU to take and
    give back a connection (a proxy object, a future, a queue, and on release a shielded
    task and a timer), two thirds of what a one-row statement costs itself; here it is
    a list's pop and append (bench/profile_notes.md). What it keeps of asyncpg's pool:
    connections opened as needed up to `max_size`, each set up by `init`; a wait for
    one, when all are out, bounded by `acquire_timeout`; a connection given back in a
    state no one may reuse (its statement cut short by a cancellation or a timeout, a
    transaction left open, or older than `expire_connections`) closed, through the
    cancellation of its statement, and replaced on demand; connections beyond
    `min_size` unused for `idle_lifetime_s` closed (checked every `idle_lifetime_s`
    / 4); a connection lent `max_uses` times closed when given back and replaced, so
    that no server process lives on for ever, holding what it cached of every
    relation it met (asyncpg's pool did the same after 50,000 statements).
    It counts the connections it opens and those it closes, by reason (`usage`), so
    that a stream of reconnects (statements cut short by the operation deadline, say)
    shows in the metrics.
    """

    __slots__ = (
        "_acquire_timeout",
        "_checked_out",
        "_close_timeout",
        "_closed",
        "_closing",
        "_connect",
        "_drained",
        "_generation",
        "_idle",
        "_idle_lifetime_s",
        "_idle_since",
        "_idle_sweep",
        "_init",
        "_lifecycle",
        "_max_size",
        "_max_uses",
        "_min_size",
        "_name",
        "_open",
        "_opened",
        "_opening",
        "_uses",
        "_waiters",
    )

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        init: Callable[[asyncpg.Connection], Awaitable[None]],
        *,
        min_size: int,
        max_size: int,
        acquire_timeout: float,
        close_timeout: float,
        idle_lifetime_s: float = 300.0,
        max_uses: int = 50_000,
    ) -> None:
        """`connect()` opens a connection (bounded by its own connect timeout); the
        store decides its settings. `init(conn)` sets up each new one."""
        self._name = name
        self._connect = connect
        self._init = init
        self._min_size = min_size
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout
        self._close_timeout = close_timeout
        # Every connection open or closing, with the generation it was opened in.
        self._open: dict[asyncpg.Connection, int] = {}
        self._opening = 0
        self._generation = 0
        # Connections opened since the pool was made, and closed by it, by reason.
        self._opened = 0
        self._closed: Counter[str] = Counter()
        # Free connections, the most recently used last (taken first: warm).
        self._idle: list[asyncpg.Connection] = []
        # When each idle connection was given back (monotonic seconds).
        self._idle_since: dict[asyncpg.Connection, float] = {}
        self._idle_lifetime_s = idle_lifetime_s
        # How many times each open connection was lent (given back), and the limit.
        self._uses: dict[asyncpg.Connection, int] = {}
        self._max_uses = max_uses
        self._idle_sweep: asyncio.TimerHandle | None = None
        # Callers waiting for a connection; each is handed one, or None: room to open one.
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._checked_out = 0
        # Closing in the background: connections no one may reuse.
        self._closing: set[asyncio.Task[None]] = set()
        # Set while `aclose` waits for the connections still out.
        self._drained: asyncio.Future[None] | None = None
        self._lifecycle = Lifecycle(name)

    async def open(self) -> None:
        self._lifecycle.opening()
        try:
            for _ in range(self._min_size):
                self._make_idle(await self._new_connection())
        except StoreUnavailable as exc:
            # Start degraded rather than not at all.
            logger.warning(
                "%s not reachable at start-up (%s); will retry on use", self._name, exc.reason
            )
        except BaseException:
            # Refused (a wrong password, say): nothing is left open.
            for conn in self._idle:
                conn.terminate()
            self._idle.clear()
            self._open.clear()
            raise
        self._lifecycle.state = StoreState.OPENED
        self._schedule_idle_sweep()

    def check_open(self) -> None:
        """Raise `StoreMisuse` unless the pool is open."""
        self._lifecycle.check_open()

    async def aclose(self) -> None:
        if self._lifecycle.state is not StoreState.OPENED:
            self._lifecycle.state = StoreState.CLOSED
            return
        self._lifecycle.state = StoreState.CLOSED
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
        # Whoever waits for a connection is told the pool is closing.
        self._wake_all()
        try:
            async with asyncio.timeout(self._close_timeout):
                if self._checked_out:
                    self._drained = asyncio.get_running_loop().create_future()
                    await self._drained
                idle, self._idle = self._idle, []
                await asyncio.gather(*(self._close(conn) for conn in idle))
                if self._closing:
                    await asyncio.gather(*self._closing)
        except (TimeoutError, asyncio.CancelledError):
            # Connections still out after the grace period are not coming back.
            for conn in list(self._open):
                conn.terminate()
            self._open.clear()
            raise

    async def expire_connections(self) -> None:
        """Replace every connection (one in use when it is given back), so that new ones
        run `init` again."""
        self._lifecycle.check_open()
        self._generation += 1
        idle, self._idle = self._idle, []
        self._closed[EXPIRED] += len(idle)
        await asyncio.gather(*(self._close(conn) for conn in idle))

    def usage(self) -> PoolUsage:
        """Connections in use, idle and waited for, now, and opened and closed so far
        (for metrics)."""
        return PoolUsage(
            in_use=self._checked_out,
            idle=len(self._idle),
            waiting=len(self._waiters),
            max=self._max_size,
            opened=self._opened,
            closed=dict(self._closed),
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PgConnection]:
        """A pooled connection. Waiting too long for one is `StoreOverloaded` when every
        connection is busy (an unreachable server times out connecting instead); a
        statement past its timeout is `StoreTimeout`."""
        self._lifecycle.check_open()
        conn = self._take_idle() or await self._acquire()
        self._checked_out += 1
        reusable = False
        try:
            yield conn
            reusable = True
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            # The client-side command timeout (its statement is being cancelled) and
            # the server's statement_timeout (which leaves the connection ready).
            reusable = isinstance(exc, asyncpg.QueryCanceledError)
            raise StoreTimeout(self._name, "a statement ran past its timeout") from exc
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self._name, describe_failure(exc)) from exc
        except asyncpg.DataError as exc:
            # A value the statement cannot take (a NUL character, which text and jsonb
            # cannot hold; a number past its column's range): what the caller sent,
            # whichever read or write sent it. Checks up front catch what they can. A
            # value of the wrong Python type is the code's mistake, not the caller's.
            reusable = True
            if isinstance(exc.__cause__, TypeError):
                raise
            raise InvalidInput(
                "input", f"holds a value PostgreSQL cannot store ({exc}); remove it and retry"
            ) from exc
        except Exception:
            # The server answered with an error, or the caller failed between statements:
            # nothing is in flight.
            reusable = True
            raise
        finally:
            # A cancellation (BaseException) may have cut a statement short.
            self._checked_out -= 1
            self._give_back(conn, reusable)

    def _take_idle(self) -> asyncpg.Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.is_closed():
                return conn
            # The server went away while it was idle.
            self._retire(conn, LOST)
        return None

    async def _acquire(self) -> asyncpg.Connection:
        """A connection when none is idle: a new one if there is room, else one given
        back, waiting at most the acquire timeout."""
        while True:
            if self._lifecycle.state is not StoreState.OPENED:
                raise StoreUnavailable(self._name, "the pool is closing")
            conn = self._take_idle()
            if conn is not None:
                return conn
            if len(self._open) + self._opening < self._max_size:
                return await self._new_connection()
            handed = await self._wait()
            if handed is not None:
                return handed

    async def _wait(self) -> asyncpg.Connection | None:
        waiter: asyncio.Future[asyncpg.Connection | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._acquire_timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection, or room for one, just as the wait ended
                # otherwise: passed on to the next caller.
                handed = waiter.result()
                if handed is not None:
                    self._hand_over(handed)
                else:
                    self._wake_one()
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise StoreOverloaded(
                    self._name, f"no free connection within {self._acquire_timeout:g}s"
                ) from exc
            raise

    async def _new_connection(self) -> asyncpg.Connection:
        # Set up as of now: `expire_connections` while it connects makes it stale.
        generation = self._generation
        self._opening += 1
        try:
            conn = await self._connect()
            try:
                await self._init(conn)
            except BaseException:
                conn.terminate()
                raise
        except TimeoutError as exc:
            raise StoreUnavailable(self._name, "connecting timed out") from exc
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self._name, describe_failure(exc)) from exc
        finally:
            self._opening -= 1
        self._open[conn] = generation
        self._opened += 1
        return conn

    def _give_back(self, conn: asyncpg.Connection, reusable: bool) -> None:
        reason = self._why_not_reused(conn, reusable)
        if reason is None:
            self._hand_over(conn)
        else:
            self._retire(conn, reason)
        if self._drained is not None and not self._checked_out and not self._drained.done():
            self._drained.set_result(None)

    def _why_not_reused(self, conn: asyncpg.Connection, reusable: bool) -> str | None:
        """Why a connection given back is closed (a `CLOSE_REASONS` entry, or
        `_WITH_THE_POOL`); None when it is lent again. Counts the use."""
        if self._lifecycle.state is not StoreState.OPENED:
            return _WITH_THE_POOL
        if not reusable:
            return CUT_SHORT
        if conn.is_closed():
            return LOST
        if conn.is_in_transaction():
            return IN_TRANSACTION
        if self._open.get(conn) != self._generation:
            return EXPIRED
        uses = self._uses[conn] = self._uses.get(conn, 0) + 1
        return RECYCLED if uses >= self._max_uses else None

    def _hand_over(self, conn: asyncpg.Connection) -> None:
        """To the first caller still waiting, or back among the idle."""
        if not self._to_a_waiter(conn):
            self._make_idle(conn)

    def _make_idle(self, conn: asyncpg.Connection) -> None:
        self._idle.append(conn)
        self._idle_since[conn] = time.monotonic()

    def _schedule_idle_sweep(self) -> None:
        self._idle_sweep = asyncio.get_running_loop().call_later(
            self._idle_lifetime_s / 4, self._close_unused
        )

    def _close_unused(self) -> None:
        """Close connections beyond `min_size` idle longer than the idle lifetime: the
        ones given back longest ago are first in the idle list."""
        unused_since = time.monotonic() - self._idle_lifetime_s
        idle = self._idle
        beyond_min_size = len(self._open) - self._min_size
        while idle and beyond_min_size > 0 and self._idle_since[idle[0]] < unused_since:
            self._retire(idle.pop(0), UNUSED)
            beyond_min_size -= 1
        self._schedule_idle_sweep()

    def _to_a_waiter(self, handed: asyncpg.Connection | None) -> bool:
        """Hand a connection, or None (room to open one), to the first caller still
        waiting, if there is one."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _retire(self, conn: asyncpg.Connection, reason: str) -> None:
        """Close a connection no one may reuse, in the background, counted under
        `reason` (not `_WITH_THE_POOL`): `close` waits for the cancellation of a
        statement cut short, so the server stops it too."""
        if reason:
            self._closed[reason] += 1
        if conn.is_closed():
            self._forget(conn)
            return
        task = asyncio.get_running_loop().create_task(self._close(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=self._close_timeout)
        except Exception as exc:
            logger.debug("%s connection closed abruptly: %s", self._name, exc)
            conn.terminate()
        finally:
            self._forget(conn)

    def _forget(self, conn: asyncpg.Connection) -> None:
        """A connection closed: its room is free for a caller waiting for one."""
        self._open.pop(conn, None)
        self._idle_since.pop(conn, None)
        self._uses.pop(conn, None)
        self._wake_one()

    def _wake_one(self) -> None:
        self._to_a_waiter(None)

    def _wake_all(self) -> None:
        while self._to_a_waiter(None):
            pass


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
