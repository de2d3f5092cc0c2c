"""The projector: applies the PostgreSQL outbox to Neo4j in the background of
every gateway process.

Gateways share the outbox through `FOR UPDATE SKIP LOCKED`, so any number can
run a projector. It wakes on the outbox NOTIFY, when its listener's connection is
lost, on `wake()`, and every `idle_poll_s` (at most a second while it cannot
listen). When a store is down it logs once, backs off and leaves the rows pending;
nothing is lost and the loop never ends on an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from stores import GraphStore, PostgresStore, StoreRefused, StoreUnavailable
from stores.graph import projection
from stores.postgres.outbox import (
    OutboxEvent,
    OutboxListener,
    claim_batch,
    low_watermark,
    unprocessed,
)
from workers._loop import BackgroundLoop

logger = logging.getLogger(__name__)

_NEO4J = "neo4j"
_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
# How often `wait_for` re-reads PostgreSQL, for rows another gateway applies.
_RECHECK_S = 0.25
_LISTEN_RETRY_S = 5.0
# The idle poll while no listener is connected to wake the loop.
_UNHEARD_POLL_S = 1.0
# While Neo4j is down: how often to probe it for its return.
_OUTAGE_PROBE_S = 1.0
_MIN_PROBE_GAP_S = 0.25
# Tombstones are kept well past the point where no older event can arrive, and
# pruning them is cheap but not free: once an hour is plenty.
_TOMBSTONE_PRUNE_EVERY_S = 3600.0
_TOMBSTONE_MIN_AGE_S = 3600.0


class Projector(BackgroundLoop):
    """Applies outbox rows to Neo4j, `batch_size` at a time, until stopped.

    A batch cancelled by `stop()` stays pending and is applied again; applying is
    idempotent.
    """

    def __init__(
        self,
        postgres: PostgresStore,
        graph: GraphStore,
        *,
        batch_size: int = 200,
        # Claims queue outbox rows without a NOTIFY (see `claim_statement`): this
        # poll is what applies them.
        idle_poll_s: float = 1.0,
        stop_timeout_s: float = 5.0,
        min_backoff_s: float = _MIN_BACKOFF_S,
        max_backoff_s: float = _MAX_BACKOFF_S,
        also_wake: Sequence[Callable[[], None]] = (),
    ) -> None:
        """`also_wake` are called with the projector's own wake-up on each outbox
        NOTIFY: other loops that read what writes queue (event sink delivery) share
        its listener rather than poll."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if idle_poll_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("idle_poll_s and stop_timeout_s must be positive")
        super().__init__(what="projector", stop_timeout_s=stop_timeout_s)
        self._postgres = postgres
        self._graph = graph
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max(min_backoff_s, max_backoff_s)
        self._also_wake = tuple(also_wake)
        self._listener: OutboxListener | None = None
        self._next_listen_at = 0.0
        self._next_prune_at = 0.0
        self._waiters: dict[int, set[_Waiter]] = {}
        self._down: set[str] = set()
        # Probe Neo4j before the first claim: against a server that is down, a
        # write transaction would hold its rows through the driver's 30 s of retries.
        self._probe_graph = True
        # Its constraints keep MERGE from duplicating nodes: a Neo4j that was down
        # when the gateway started is migrated before anything is projected into it.
        self._graph_migrated = False
        # For metrics: rows this process applied and the batches they came in (their
        # ratio is the batch size a NOTIFY brings), attempts that failed (retried, rows
        # kept pending), rows Neo4j refused and that were skipped.
        self.applied = 0
        self.batches = 0
        self.failed = 0
        self.skipped = 0

    async def run_once(self) -> int:
        """Claim, apply and mark one batch; returns how many rows it applied."""
        async with claim_batch(self._postgres, self._batch_size) as claimed:
            if claimed:
                try:
                    await projection.apply(self._graph, claimed)
                except StoreRefused:
                    await self._apply_one_by_one(claimed)
        self._settle(event.id for event in claimed)
        self.applied += len(claimed)
        self.batches += 1 if claimed else 0
        return len(claimed)

    @property
    def graph_unavailable(self) -> bool:
        """True while this projector's last attempt found Neo4j down: a mutation then
        answers `projected: false` at once instead of waiting for nothing."""
        return _NEO4J in self._down

    async def wait_for(self, outbox_id: int, timeout: float) -> bool:  # noqa: ASYNC109
        """`wait_for_all` for one row."""
        return await self.wait_for_all([outbox_id], timeout)

    # A timeout argument rather than asyncio.timeout(): running out is an answer
    # (False), not an error.
    async def wait_for_all(self, outbox_ids: Collection[int], timeout: float) -> bool:  # noqa: ASYNC109
        """True once every row of `outbox_ids` is applied (by any gateway), False if
        that does not happen within `timeout` seconds. Mutations use it to read their
        own writes from the graph."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = _Waiter(set(outbox_ids), loop.create_future())
        if not waiter.remaining:
            return True
        # Registered before the first check, so a batch finishing in between is not missed.
        for outbox_id in waiter.remaining:
            self._waiters.setdefault(outbox_id, set()).add(waiter)
        self.wake()
        try:
            while True:
                with suppress(StoreUnavailable):
                    # Rows another gateway applied are seen only in PostgreSQL.
                    waiter.remaining &= await unprocessed(self._postgres, waiter.remaining)
                    if not waiter.remaining:
                        return True
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    return False
                with suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(waiter.done), min(remaining_s, _RECHECK_S)
                    )
                    return True
        finally:
            for outbox_id in outbox_ids:
                waiters = self._waiters.get(outbox_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[outbox_id]
            waiter.done.cancel()

    async def _run(self) -> None:
        # A failed step is retried after a pause that doubles each time, up to
        # `max_backoff_s`; a step that succeeds starts the next one's count afresh.
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self._min_backoff_s, max=self._max_backoff_s),
            sleep=self._pause,
            before_sleep=self._failed,
            reraise=True,
        )
        try:
            while not self._stopping.is_set():
                applied: int = await retrying(self._step)
                if applied < self._batch_size and not self._stopping.is_set():
                    await self._idle()
        finally:
            listener, self._listener = self._listener, None
            if listener is not None:
                await listener.aclose()

    async def _step(self) -> int:
        """One batch; returns how many rows it applied. Raises when a store fails."""
        if self._stopping.is_set():
            return 0
        await self._listen()
        if self._probe_graph and not await self._graph_answers():
            raise StoreUnavailable(_NEO4J, "did not answer a probe")
        self._probe_graph = False
        if not self._graph_migrated:
            migrations = await self._graph.migrate()
            if migrations:
                logger.info("GraphStore: applied migrations %s", ", ".join(migrations))
            self._graph_migrated = True
        applied = await self.run_once()
        self._recovered()
        if applied < self._batch_size:
            await self._prune_tombstones()
        return applied

    def _failed(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        self.failed += 1
        if isinstance(failure, StoreUnavailable):
            self._outage(failure)
        else:
            # A bug or a refused statement: retried after a pause, rows stay pending.
            logger.error("projecting the outbox failed; the rows stay pending", exc_info=failure)

    async def _apply_one_by_one(self, events: list[OutboxEvent]) -> None:
        # Neo4j refused the batch, and would refuse it on every retry: find the
        # event at fault and skip it rather than stall the outbox behind it.
        for event in events:
            try:
                await projection.apply(self._graph, [event])
            except StoreRefused as exc:
                self.skipped += 1
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
            for waiter in self._waiters.pop(outbox_id, ()):
                waiter.remaining.discard(outbox_id)
                if not waiter.remaining and not waiter.done.done():
                    waiter.done.set_result(None)

    async def _listen(self) -> None:
        if self._listener is not None and self._listener.connected:
            return
        now = time.monotonic()
        if now < self._next_listen_at:
            return
        self._next_listen_at = now + _LISTEN_RETRY_S
        listener = self._listener or OutboxListener(self._postgres, self._heard)
        try:
            await listener.connect()
        except StoreUnavailable as exc:
            # Polling covers for it; a PostgreSQL outage is logged by the batch that fails.
            logger.debug("cannot listen for outbox notifications: %s", exc.reason)
        else:
            # Rows queued before it listened were not heard: this step reads them, and
            # the loops that share the listener look too.
            for wake in self._also_wake:
                wake()
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

    def _heard(self) -> None:
        self.wake()
        for wake in self._also_wake:
            wake()

    async def _idle(self) -> None:
        # A connected listener wakes the loop for every write that notifies and when it
        # is lost; without one, nothing does.
        listening = self._listener is not None and self._listener.connected
        poll_s = self._idle_poll_s if listening else min(self._idle_poll_s, _UNHEARD_POLL_S)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), poll_s)
        self._wakeup.clear()

    async def _pause(self, seconds: float) -> None:
        """Back off after a failure. While Neo4j is down, probe it every
        `_OUTAGE_PROBE_S` and when new rows arrive, and end the pause as soon as it
        answers, so projection resumes within about a second of its return; a probe
        is cheap, unlike a write transaction the driver would retry for 30 s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        probed_at = loop.time()
        while not self._stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    _first_of(self._stopping, self._wakeup), min(remaining, _OUTAGE_PROBE_S)
                )
            if self._stopping.is_set():
                return
            if _NEO4J not in self._down or loop.time() - probed_at < _MIN_PROBE_GAP_S:
                continue
            probed_at = loop.time()
            if await self._graph_answers():
                self._probe_graph = False
                return


@dataclass(eq=False, slots=True)
class _Waiter:
    """One `wait_for_all` call: the rows it still waits for, resolved when none are left."""

    remaining: set[int]
    done: asyncio.Future[None]


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
