"""The lease sweep: claimed tasks whose lease lapsed go back to the queue.

Every gateway runs one. A sweep statement locks the lapsed rows it takes with
`SKIP LOCKED`, so replicas sweeping at once split the rows between them and none
returns a task twice; a row is lapsed only while its lease lies in the past, so a
sweep that comes second finds nothing left to do (stores/postgres/task_claims.py).
The sweeper sleeps until the next lease is due, at most `interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress

from stores import PostgresStore, StoreUnavailable
from stores.postgres.records import Task, WriteContext
from workers._loop import BackgroundLoop

logger = logging.getLogger(__name__)

# Told of every task a sweep changed, after its transaction committed.
OnExpired = Callable[[Sequence[Task]], Awaitable[None]]


class LeaseSweeper(BackgroundLoop):
    def __init__(
        self,
        postgres: PostgresStore,
        *,
        on_expired: OnExpired | None = None,
        interval_s: float = 5.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("interval_s and stop_timeout_s must be positive")
        super().__init__(what="lease sweeper", stop_timeout_s=stop_timeout_s)
        self._postgres = postgres
        self._on_expired = on_expired
        self._interval_s = interval_s
        self._failing = False
        self.returned = 0

    async def sweep(self) -> list[Task]:
        """Return every lapsed lease's task now; what this call changed."""
        changed: list[Task] = []
        ctx = WriteContext(actor_id=None, request_id="lease-sweep")
        while batch := await self._postgres.claims.expire_leases(ctx):
            changed.extend(batch)
            if self._on_expired is not None:
                await self._on_expired(batch)
        self.returned += len(changed)
        return changed

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            pause = self._interval_s
            try:
                changed = await self.sweep()
                due = await self._postgres.claims.next_expiry_s()
            except StoreUnavailable as exc:
                if not self._failing:
                    logger.warning("the lease sweep waits for PostgreSQL: %s", exc)
                self._failing = True
            except Exception:
                logger.exception("the lease sweep failed; trying again later")
            else:
                self._failing = False
                if changed:
                    logger.info("lease sweep: %d task(s) whose lease lapsed", len(changed))
                if due is not None:
                    # A little past the lease, so that it has lapsed on the database's clock.
                    pause = min(pause, due + 0.05)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), pause)
