"""Tasks searched by meaning and by words, with the `tasks` list's filters.

The task row is written first, `embedding_pending`; its vector comes from the
background filler (workers/embeddings.py) or, when a client asks for possible
duplicates at creation, from that request (`fill`). A new title or description
marks the row pending again (a trigger, migration 0010) and keeps the old vector
for searches until the new one is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from asyncpg import Record

from stores.embeddings import Vector
from stores.errors import InvalidInput
from stores.postgres.inputs import TaskFilter
from stores.postgres.pagination import Params
from stores.postgres.records import Task
from stores.postgres.task_events import ROW, task_from_row
from stores.postgres.tasks import task_conditions
from stores.search.knowledge import _fill
from stores.search.ranking import Ranked, page_bounds, ranked_page, search_settings
from stores.search.records import SearchHit, SearchMode, SearchPage

if TYPE_CHECKING:
    from stores.search.store import SearchStore

_COLUMNS = ", ".join(f"t.{column}" for column in ROW.split(", "))
_TARGET = Ranked("tasks", "t", _COLUMNS)
# The text embedded for a task, as `records.embedding_text` builds it.
_TASK_TEXT = "t.title || E'\\n' || t.description"
# Work not yet finished: what a new task may duplicate.
OPEN_STATUSES = ("pending", "assigned", "in_progress")
MAX_DUPLICATES = 20


class TaskSearchRepository:
    __slots__ = ("_search",)

    def __init__(self, search: SearchStore) -> None:
        self._search = search

    async def search(
        self,
        *,
        mode: SearchMode,
        text: str | None,
        vector: Vector | None,
        filter: TaskFilter,
        first: int,
        offset: int,
    ) -> SearchPage[Task]:
        """One page of ranked tasks; see `stores.search.ranking` for the modes."""
        params = Params()
        return await ranked_page(
            self._search,
            _TARGET,
            mode=mode,
            where=task_conditions(filter, params, "t"),
            params=params,
            text=text,
            vector=vector,
            first=first,
            offset=offset,
            hit=_hit,
        )

    async def similar(
        self, task_id: UUID, first: int, filter: TaskFilter | None = None
    ) -> list[SearchHit[Task]]:
        """The nearest tasks to `task_id` by meaning; empty while its embedding is pending."""
        first, _ = page_bounds(first, 0)
        params = Params([task_id, first])
        where = task_conditions(filter or TaskFilter(), params, "t")
        return await self._nearest(
            "(SELECT embedding FROM tasks WHERE id = $1)", where, params, first, min_score=None
        )

    async def duplicates(
        self, task_id: UUID, vector: Vector, *, first: int, min_score: float
    ) -> list[SearchHit[Task]]:
        """Open tasks other than `task_id` at least `min_score` similar to `vector`."""
        if not 0 <= first <= MAX_DUPLICATES:
            raise InvalidInput("first", f"must be between 0 and {MAX_DUPLICATES}, got {first}")
        params = Params([task_id, first])
        source = f"(SELECT {params(vector)}::vector AS embedding)"
        where = [params.any_of("t.status", OPEN_STATUSES, "text")]
        return await self._nearest(source, where, params, first, min_score=min_score)

    async def _nearest(
        self,
        source: str,
        where: list[str],
        params: Params,
        first: int,
        *,
        min_score: float | None,
    ) -> list[SearchHit[Task]]:
        # $1 is the task to leave out, $2 how many to return.
        # A source whose own embedding is pending has no neighbours yet (and no distances).
        conditions = " AND ".join(
            ["src.embedding IS NOT NULL", "t.embedding IS NOT NULL", "t.id <> $1", *where]
        )
        floor = "true" if min_score is None else f"1 - hit._distance >= {params(min_score)}"
        async with (
            self._search.postgres.connection() as conn,
            conn.transaction(readonly=True),
        ):
            await search_settings(conn, self._search.ef_search_for(first + 1))
            rows = await conn.fetch(
                f"""
                SELECT hit.*, 1 - hit._distance AS score,
                       row_number() OVER (ORDER BY hit._distance, hit.id) AS semantic_rank,
                       NULL::bigint AS keyword_rank
                FROM (
                    SELECT {_COLUMNS}, t.embedding <=> src.embedding AS _distance
                    FROM tasks t, {source} src
                    WHERE {conditions}
                    ORDER BY t.embedding <=> src.embedding
                    LIMIT $2
                ) hit
                WHERE {floor}
                ORDER BY hit._distance, hit.id""",
                *params.values,
            )
        return [_hit(row) for row in rows]

    async def pending(self, limit: int, *, after: UUID | None = None) -> list[tuple[UUID, str]]:
        """Tasks waiting for an embedding, by id, with the text to embed."""
        async with self._search.postgres.connection() as conn:
            rows = await conn.fetch(
                f"SELECT t.id, {_TASK_TEXT} AS text FROM tasks t"
                " WHERE t.embedding_pending AND t.id > $1 ORDER BY t.id LIMIT $2",
                after or UUID(int=0),
                limit,
            )
        return [(row["id"], row["text"]) for row in rows]

    async def count_pending(self) -> int:
        async with self._search.postgres.connection() as conn:
            total: int = await conn.fetchval("SELECT count(*) FROM tasks WHERE embedding_pending")
        return total

    async def fill(self, vectors: Sequence[tuple[UUID, str, Vector]]) -> int:
        """Store computed embeddings for tasks whose text is still the text embedded."""
        return await _fill(self._search, "tasks", _TASK_TEXT, vectors)


def _hit(row: Record) -> SearchHit[Task]:
    return SearchHit(
        task_from_row(row), float(row["score"]), row["semantic_rank"], row["keyword_rank"]
    )
