"""Embeddings left pending, filled in: in the background of every gateway, and by
`polygraph reembed` when the model or dimension changes.

A write whose embedding could not be computed is stored anyway, marked pending.
Filling is resumable by construction: what is done is no longer pending, and a
row edited while its text was being embedded stays pending for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from stores import StoreUnavailable
from stores.embeddings import Embedder, EmbeddingUnavailable
from stores.search import EmbeddingSpace, SearchStore, move_space
from stores.search.knowledge import KnowledgeRepository
from stores.search.memories import MemoryRepository
from stores.search.messages import MessageRepository
from workers._loop import BackgroundLoop

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

_MIN_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class FillReport:
    knowledge: int
    memories: int
    messages: int = 0


async def fill_pending(
    search: SearchStore,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> FillReport:
    """Embed every pending knowledge item, memory and message, `batch_size` rows at a time.

    Raises `EmbeddingUnavailable` when the embedder fails; what was filled stays filled.
    """
    counts: list[int] = []
    tables: tuple[tuple[str, KnowledgeRepository | MemoryRepository | MessageRepository], ...] = (
        ("knowledge items", search.knowledge),
        ("memories", search.memories),
        ("messages", search.messages),
    )
    for label, repository in tables:
        total = await repository.count_pending() if progress else 0
        done = 0
        after = None
        while True:
            rows = await repository.pending(batch_size, after=after)
            if not rows:
                break
            vectors = await embedder.embed([text for _, text in rows])
            await repository.fill(
                [
                    (item_id, text, vector)
                    for (item_id, text), vector in zip(rows, vectors, strict=True)
                ]
            )
            done += len(rows)
            after = rows[-1][0]
            if progress:
                progress(f"embedding {label}", done, max(total, done))
        counts.append(done)
    return FillReport(knowledge=counts[0], memories=counts[1], messages=counts[2])


REEMBED_JOB = "reembed"


async def reembed(
    search: SearchStore,
    embedder: Embedder,
    *,
    everything: bool = False,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> tuple[bool, FillReport]:
    """Move the database to `embedder`'s space when it differs (or when `everything`
    is asked for: all vectors recomputed, indexes rebuilt with the current HNSW
    settings), then fill every pending vector. Interrupted, it resumes where it
    stopped when run again. Returns whether the space was moved, and the counts."""
    # Two at once would both rebuild the indexes and embed the same rows.
    async with search.postgres.exclusive_job(REEMBED_JOB):
        moved = await move_space(
            search, EmbeddingSpace(embedder.model, embedder.dimension), reindex=everything
        )
        filled = await fill_pending(search, embedder, batch_size=batch_size, progress=progress)
    return moved, filled


class EmbeddingFiller(BackgroundLoop):
    """Fills pending embeddings in the background until stopped; wakes on `wake()`
    (a write just left a row pending) and every `idle_poll_s`. While the embedder or
    PostgreSQL is down it backs off and retries; the rows wait, nothing is lost."""

    def __init__(
        self,
        search: SearchStore,
        embedder: Embedder,
        *,
        batch_size: int = 64,
        idle_poll_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if batch_size < 1 or idle_poll_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("batch_size, idle_poll_s and stop_timeout_s must be positive")
        super().__init__(what="embedding filler", stop_timeout_s=stop_timeout_s)
        self._search = search
        self._embedder = embedder
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._failing = False

    async def _run(self) -> None:
        # A failed pass is retried after a pause that doubles each time, up to
        # _MAX_BACKOFF_S; a pass that succeeds starts the next one's count afresh.
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=_MIN_BACKOFF_S, max=_MAX_BACKOFF_S),
            sleep=self._back_off,
            before_sleep=self._failed,
            reraise=True,
        )
        while not self._stopping.is_set():
            report: FillReport | None = await retrying(self._fill)
            if report is None:
                return
            if self._failing:
                logger.info("embeddings are computed again")
            self._failing = False
            if report.knowledge or report.memories or report.messages:
                logger.info(
                    "filled %d pending knowledge, %d memory and %d message embeddings",
                    report.knowledge,
                    report.memories,
                    report.messages,
                )
            await self._sleep(self._idle_poll_s, wakeable=True)

    async def _fill(self) -> FillReport | None:
        """One pass over what is pending; None once stopping."""
        if self._stopping.is_set():
            return None
        self._wakeup.clear()
        return await fill_pending(self._search, self._embedder, batch_size=self._batch_size)

    def _failed(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, EmbeddingUnavailable | StoreUnavailable):
            if not self._failing:
                logger.warning("pending embeddings wait: %s", failure)
            self._failing = True
        else:
            logger.error("filling pending embeddings failed; retrying later", exc_info=failure)

    async def _back_off(self, seconds: float) -> None:
        await self._sleep(seconds, wakeable=False)

    async def _sleep(self, seconds: float, *, wakeable: bool) -> None:
        event = self._wakeup if wakeable else self._stopping
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
