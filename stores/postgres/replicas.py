"""Read replicas: which one may serve a read, and how far behind each one is.

Only reads made inside `replica_reads(...)` may go to a replica (the gateway opens
that scope for query operations); everything else, writes and the reads a write
depends on, stays on the primary.

A client never misses its own write: the gateway notes the primary's WAL position
after each of a principal's mutations, and that principal's reads go to a replica
only once the replica has replayed that position (otherwise to the primary). That
costs nothing when nobody wrote recently, unlike a fixed "primary for N seconds
after a write" window, which sends every writer to the primary for the whole
window even when the replica caught up within milliseconds.

A replica that does not answer, is not in recovery, or lags more than `max_lag_s`
is skipped until a later check finds it usable again. Lag is measured in time, not
bytes: each check samples the primary's WAL position, and a replica's lag is the
age of the oldest sample it has not replayed yet (0 when it has them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from stores._pg_pool import PgPool
from stores.errors import StoreError, StoreOverloaded, StoreTimeout, StoreUnavailable
from stores.health import PoolUsage, ProbeResult
from stores.postgres.options import PgConnection

logger = logging.getLogger(__name__)

# The position after everything written so far, as a byte offset into the WAL.
# `pg_current_wal_insert_lsn()` can sit a page header past the end of the last
# record, so it errs high: a reader goes to the primary rather than miss a write.
WRITE_POSITION = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"
# For lag samples: the end of what was written out, in the same terms as a replica's
# replay position, so an idle replica that has everything shows no lag.
PRIMARY_POSITION = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
_REPLAY_POSITION = (
    "SELECT pg_is_in_recovery() AS in_recovery,"
    " pg_last_wal_replay_lsn() - '0/0'::pg_lsn AS replayed"
)


class ReadScope:
    """Reads in this scope tolerate lag, down to the reader's own last write, which
    `floor()` finds (once per scope, shared by concurrent reads)."""

    __slots__ = ("_floor", "_found")

    def __init__(self, floor: Callable[[], Awaitable[int | None]]) -> None:
        self._floor = floor
        self._found: asyncio.Future[int | None] | None = None

    async def floor(self) -> int | None:
        """The WAL position a replica must have replayed to serve these reads (None:
        any); raises when it cannot be found out, and the reads go to the primary."""
        if self._found is None:
            self._found = asyncio.ensure_future(self._floor())
        return await asyncio.shield(self._found)


_scope: ContextVar[ReadScope | None] = ContextVar("polygraph_replica_reads", default=None)


@contextmanager
def replica_reads(floor: Callable[[], Awaitable[int | None]]) -> Iterator[None]:
    """Let the reads inside go to a replica that has replayed `floor()`."""
    token = _scope.set(ReadScope(floor))
    try:
        yield
    finally:
        _scope.reset(token)


def current_scope() -> ReadScope | None:
    return _scope.get()


@dataclass
class Replica:
    """One replica's pool and what its last check found."""

    name: str
    pool: PgPool
    replayed: int | None = None
    lag_s: float | None = None
    # time.monotonic() of the last check that reached it.
    checked_at: float | None = None
    error: str | None = "not checked yet"
    check_ms: float = 0.0
    version: str | None = field(default=None)

    def usable(self, *, max_lag_s: float, stale_after_s: float) -> bool:
        return (
            self.error is None
            and self.lag_s is not None
            and self.lag_s <= max_lag_s
            and self.checked_at is not None
            and time.monotonic() - self.checked_at <= stale_after_s
        )

    def mark_down(self, reason: str) -> None:
        """Skip it until the next check reaches it (a read that failed on it)."""
        if self.error is None:
            logger.warning("%s skipped for reads: %s", self.name, reason)
        self.error = reason


class ReplicaSet:
    """The replicas of one primary, checked every `check_interval_s` in the background."""

    def __init__(
        self,
        replicas: list[Replica],
        primary_position: Callable[[], Awaitable[int]],
        *,
        max_lag_s: float,
        check_interval_s: float,
    ) -> None:
        self.replicas = replicas
        self._primary_position = primary_position
        self.max_lag_s = max_lag_s
        self._interval = check_interval_s
        # A check older than this says nothing about now: the replica is skipped.
        self._stale_after_s = 3 * check_interval_s
        self._samples: deque[tuple[float, int]] = deque()
        self._turn = itertools.count()
        self._watching: asyncio.Task[None] | None = None
        # Checks completed; tests wait on it rather than on the clock.
        self.checks = 0

    async def open(self) -> None:
        for replica in self.replicas:
            await replica.pool.open()
        self._watching = asyncio.create_task(self._watch(), name="polygraph-replica-checks")

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        for replica in self.replicas:
            await replica.pool.aclose()

    def pick(self, floor: int | None) -> Replica | None:
        """A usable replica that has replayed `floor`, taking turns; None: the primary."""
        candidates = [
            replica
            for replica in self.replicas
            if replica.usable(max_lag_s=self.max_lag_s, stale_after_s=self._stale_after_s)
            and (floor is None or (replica.replayed is not None and replica.replayed >= floor))
        ]
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    def usage(self) -> list[tuple[str, PoolUsage]]:
        return [(replica.name, replica.pool.usage()) for replica in self.replicas]

    def probes(self) -> list[ProbeResult]:
        """Each replica as its last check found it: down, lagging past the bound, or
        serving reads. Health reads these rather than probing again."""
        results = []
        for replica in self.replicas:
            details = {}
            if replica.lag_s is not None:
                details["lag_s"] = f"{replica.lag_s:.3f}"
            error = replica.error
            if error is None and replica.lag_s is not None and replica.lag_s > self.max_lag_s:
                error = (
                    f"lagging {replica.lag_s:.1f}s behind the primary (bound"
                    f" {self.max_lag_s:g}s); reads go to the primary"
                )
            elif error is None and not replica.usable(
                max_lag_s=self.max_lag_s, stale_after_s=self._stale_after_s
            ):
                error = "not checked recently; reads go to the primary"
            results.append(
                ProbeResult(
                    replica.name, error is None, replica.check_ms, replica.version, details, error
                )
            )
        return results

    async def check(self) -> None:
        """Sample the primary's position, then find each replica's replay position."""
        now = time.monotonic()
        try:
            self._samples.append((now, await self._primary_position()))
        except StoreError as exc:
            logger.debug("primary WAL position not read: %s", exc)
        # Older samples cannot change a verdict: a replica behind them is past the bound.
        keep_after = now - self.max_lag_s - 2 * self._interval
        while len(self._samples) > 1 and self._samples[0][0] < keep_after:
            self._samples.popleft()
        await asyncio.gather(*(self._check_replica(replica) for replica in self.replicas))
        self.checks += 1

    async def _check_replica(self, replica: Replica) -> None:
        started = time.perf_counter()
        try:
            async with replica.pool.connection() as conn:
                row = await conn.fetchrow(
                    f"{_REPLAY_POSITION}, current_setting('server_version') AS version"
                )
        except StoreUnavailable as exc:
            replica.mark_down(exc.reason)
            return
        finally:
            replica.check_ms = round((time.perf_counter() - started) * 1000, 3)
        assert row is not None
        replica.version = row["version"]
        if not row["in_recovery"] or row["replayed"] is None:
            replica.mark_down("not a standby (pg_is_in_recovery() is false)")
            return
        checked_at = time.monotonic()
        replayed = int(row["replayed"])
        behind = [at for at, position in self._samples if position > replayed]
        replica.replayed = replayed
        replica.lag_s = checked_at - behind[0] if behind else 0.0
        replica.checked_at = checked_at
        if replica.error is not None:
            logger.info("%s serves reads again", replica.name)
        replica.error = None

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                logger.exception("replica check failed")
            await asyncio.sleep(self._interval)


@asynccontextmanager
async def replica_or_primary(
    replicas: ReplicaSet,
    scope: ReadScope,
    primary: Callable[[], contextlib.AbstractAsyncContextManager[PgConnection]],
) -> AsyncIterator[PgConnection]:
    """A connection to a replica that may serve `scope`'s reads, or to the primary."""
    try:
        floor = await scope.floor()
    except StoreError as exc:
        # Without the reader's last write position, only the primary is sure to have it.
        logger.debug("reads go to the primary: %s", exc)
        async with primary() as on_primary:
            yield on_primary
        return
    replica = replicas.pick(floor)
    async with contextlib.AsyncExitStack() as stack:
        conn: PgConnection | None = None
        if replica is not None:
            try:
                conn = await stack.enter_async_context(replica.pool.connection())
            except StoreOverloaded:
                pass  # busy, not broken: this read goes to the primary
            except StoreUnavailable as exc:
                replica.mark_down(exc.reason)
        if conn is None:
            replica = None
            conn = await stack.enter_async_context(primary())
        try:
            yield conn
        except StoreTimeout:
            raise
        except StoreUnavailable as exc:
            # The connection broke mid-read: later reads skip it until a check finds it.
            if replica is not None and exc.store == replica.name:
                replica.mark_down(exc.reason)
            raise
