"""The projector: applies the PostgreSQL outbox to Neo4j in the background of
every gateway process.

Gateways share the outbox through `FOR UPDATE SKIP LOCKED`, so any number can
run a projector. It wakes on the outbox NOTIFY, on `wake()` and every
`idle_poll_s`. When a store is down it logs once, backs off and leaves the rows
pending; nothing is lost and the loop never ends on an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import suppress

from stores import GraphStore, PostgresStore, StoreRefused, StoreUnavailable
from stores.graph import projection
from stores.postgres.outbox import (
    OutboxEvent,
    OutboxListener,
    claim_batch,
    is_processed,
    low_watermark,
)

logger = logging.getLogger(__name__)

_NEO4J = "neo4j"
_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
# How often `wait_for` re-reads PostgreSQL, for rows another gateway applies.
_RECHECK_S = 0.25
_LISTEN_RETRY_S = 5.0
# Tombstones are kept well past the point where no older event can arrive, and
# pruning them is cheap but not free: once an hour is plenty.
_TOMBSTONE_PRUNE_EVERY_S = 3600.0
_TOMBSTONE_MIN_AGE_S = 3600.0


class Projector:
    """Applies outbox rows to Neo4j, `batch_size` at a time, until stopped."""

    def __init__(
        self,
        postgres: PostgresStore,
        graph: GraphStore,
        *,
        batch_size: int = 200,
        idle_poll_s: float = 1.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if idle_poll_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("idle_poll_s and stop_timeout_s must be positive")
        self._postgres = postgres
        self._graph = graph
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._stop_timeout_s = stop_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listener: OutboxListener | None = None
        self._next_listen_at = 0.0
        self._next_prune_at = 0.0
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._down: set[str] = set()
        # Probe Neo4j before the first claim: against a server that is down, a
        # write transaction would hold its rows through the driver's 30 s of retries.
        self._probe_graph = True

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the projector is already started; stop() it first")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="polygraph-projector")

    async def stop(self) -> None:
        """Let the current batch finish for up to `stop_timeout_s`, then cancel it.

        A cancelled batch stays pending and is applied again; applying is idempotent.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wakeup.set()
        _, pending = await asyncio.wait({task}, timeout=self._stop_timeout_s)
        if pending:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll."""
        self._wakeup.set()

    async def run_once(self) -> int:
        """Claim, apply and mark one batch; returns how many rows it applied."""
        async with claim_batch(self._postgres, self._batch_size) as claimed:
            if claimed:
                try:
                    await projection.apply(self._graph, claimed)
                except StoreRefused:
                    await self._apply_one_by_one(claimed)
        self._settle(event.id for event in claimed)
        return len(claimed)

    # A timeout argument rather than asyncio.timeout(): running out is an answer
    # (False), not an error.
    async def wait_for(self, outbox_id: int, timeout: float) -> bool:  # noqa: ASYNC109
        """True once outbox row `outbox_id` is applied (by any gateway), False if that
        does not happen within `timeout` seconds. Mutations use it to read their own
        writes from the graph."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        applied: asyncio.Future[None] = loop.create_future()
        # Registered before the first check, so a batch finishing in between is not missed.
        self._waiters.setdefault(outbox_id, set()).add(applied)
        self.wake()
        try:
            while True:
                with suppress(StoreUnavailable):
                    if await is_processed(self._postgres, outbox_id):
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(applied), min(remaining, _RECHECK_S))
                    return True
        finally:
            waiters = self._waiters.get(outbox_id)
            if waiters is not None:
                waiters.discard(applied)
                if not waiters:
                    del self._waiters[outbox_id]
            applied.cancel()

    async def _run(self) -> None:
        backoff = _MIN_BACKOFF_S
        try:
            while not self._stopping.is_set():
                await self._listen()
                try:
                    if self._probe_graph and not await self._graph_answers():
                        raise StoreUnavailable(_NEO4J, "did not answer a probe")
                    self._probe_graph = False
                    applied = await self.run_once()
                    self._recovered()
                    if applied < self._batch_size:
                        await self._prune_tombstones()
                except StoreUnavailable as exc:
                    self._outage(exc)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                    continue
                except Exception:
                    # A bug or a refused statement: retried after a pause, rows stay pending.
                    logger.exception("projecting the outbox failed; the rows stay pending")
                    await self._pause(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                    continue
                backoff = _MIN_BACKOFF_S
                if applied < self._batch_size:
                    await self._idle()
        finally:
            listener, self._listener = self._listener, None
            if listener is not None:
                await listener.aclose()

    async def _apply_one_by_one(self, events: list[OutboxEvent]) -> None:
        # Neo4j refused the batch, and would refuse it on every retry: find the
        # event at fault and skip it rather than stall the outbox behind it.
        for event in events:
            try:
                await projection.apply(self._graph, [event])
            except StoreRefused as exc:
                logger.error(
                    "Neo4j refused outbox row %d (%s), which is skipped;"
                    " `polygraph graph rebuild` repairs the graph: %s",
                    event.id,
                    event.kind,
                    exc,
                )

    async def _graph_answers(self) -> bool:
        return (await self._graph.probe()).up

    def _outage(self, exc: StoreUnavailable) -> None:
        if exc.store == _NEO4J:
            self._probe_graph = True
        if exc.store not in self._down:
            self._down.add(exc.store)
            logger.warning(
                "%s is unavailable (%s); outbox rows stay pending until it answers",
                exc.store,
                exc.reason,
            )

    def _recovered(self) -> None:
        for store in sorted(self._down):
            logger.info("%s answers again; projecting the outbox resumed", store)
        self._down.clear()

    def _settle(self, ids: Iterable[int]) -> None:
        for outbox_id in ids:
            for applied in self._waiters.pop(outbox_id, ()):
                if not applied.done():
                    applied.set_result(None)

    async def _listen(self) -> None:
        if self._listener is not None and self._listener.connected:
            return
        now = time.monotonic()
        if now < self._next_listen_at:
            return
        self._next_listen_at = now + _LISTEN_RETRY_S
        listener = self._listener or OutboxListener(self._postgres, self.wake)
        try:
            await listener.connect()
        except StoreUnavailable as exc:
            # Polling covers for it; a PostgreSQL outage is logged by the batch that fails.
            logger.debug("cannot listen for outbox notifications: %s", exc.reason)
        self._listener = listener

    async def _prune_tombstones(self) -> None:
        now = time.monotonic()
        if now < self._next_prune_at:
            return
        self._next_prune_at = now + _TOMBSTONE_PRUNE_EVERY_S
        below = await low_watermark(self._postgres)
        pruned = await projection.prune_tombstones(
            self._graph, below=below, older_than_s=_TOMBSTONE_MIN_AGE_S
        )
        if pruned:
            logger.info("pruned %d graph tombstones below outbox id %d", pruned, below)

    async def _idle(self) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self._idle_poll_s)
        self._wakeup.clear()

    async def _pause(self, seconds: float) -> None:
        # Not cut short by wake(): during an outage every mutation wakes the projector.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
