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
from stores.embeddings import Embedder, EmbeddingUnavailable, Vector
from stores.postgres.advisory import JobAlreadyRunning
from stores.search import EmbeddingSpace, SearchStore, move_space
from stores.search.knowledge import KnowledgeRepository
from stores.search.memories import MemoryRepository
from stores.search.messages import MessageRepository
from stores.search.tasks import TaskSearchRepository
from workers._loop import BackgroundLoop

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

_MIN_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0
# Texts (and their vectors: 1.5 KB each at 384 dimensions) one fill remembers.
_MAX_REMEMBERED = 20_000


@dataclass(frozen=True, slots=True)
class FillReport:
    knowledge: int
    memories: int
    tasks: int = 0
    messages: int = 0


async def fill_pending(
    search: SearchStore,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> FillReport:
    """Embed every pending knowledge item, memory, task and message, `batch_size` rows
    at a time.

    Each distinct text is embedded once per call (up to `_MAX_REMEMBERED` texts): seeded
    and templated rows (a hundred thousand tasks with a few hundred titles) cost a few
    hundred embeddings, not one each.

    Raises `EmbeddingUnavailable` when the embedder fails; what was filled stays filled.
    """
    counts: list[int] = []
    remembered: dict[str, Vector] = {}
    tables: tuple[
        tuple[
            str,
            KnowledgeRepository | MemoryRepository | TaskSearchRepository | MessageRepository,
        ],
        ...,
    ] = (
        ("knowledge items", search.knowledge),
        ("memories", search.memories),
        ("tasks", search.tasks),
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
            missing = list(dict.fromkeys(text for _, text in rows if text not in remembered))
            fresh = (
                dict(zip(missing, await embedder.embed(missing), strict=True)) if missing else {}
            )
            await repository.fill(
                [(item_id, text, remembered.get(text) or fresh[text]) for item_id, text in rows]
            )
            if len(remembered) < _MAX_REMEMBERED:
                remembered.update(fresh)
            done += len(rows)
            after = rows[-1][0]
            if progress:
                progress(f"embedding {label}", done, max(total, done))
        counts.append(done)
    return FillReport(knowledge=counts[0], memories=counts[1], tasks=counts[2], messages=counts[3])


REEMBED_JOB = "reembed"
FILLER_JOB = "embedding filler"


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
            if report.knowledge or report.memories or report.tasks or report.messages:
                logger.info(
                    "filled %d pending knowledge, %d memory, %d task and %d message embeddings",
                    report.knowledge,
                    report.memories,
                    report.tasks,
                    report.messages,
                )
            await self._sleep(self._idle_poll_s, wakeable=True)

    async def _fill(self) -> FillReport | None:
        """One pass over what is pending; None once stopping. One filler at a time per
        database: every gateway worker and replica runs one, and two would embed the
        same rows. The others find the pass taken and wait for their next turn."""
        if self._stopping.is_set():
            return None
        self._wakeup.clear()
        try:
            async with self._search.postgres.exclusive_job(FILLER_JOB):
                return await fill_pending(self._search, self._embedder, batch_size=self._batch_size)
        except JobAlreadyRunning:
            return FillReport(knowledge=0, memories=0)

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
