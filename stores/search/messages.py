"""Conversation messages, searched by meaning, by words or both, within the
conversations a reader may see. Messages are written by
`stores.postgres.conversations` with their embedding pending; the background
filler computes it (workers/embeddings.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from asyncpg import Record

from stores.embeddings import Vector
from stores.postgres.conversation_records import Message, Reader
from stores.postgres.conversations import MESSAGE_COLUMNS, message_from_row, reader_condition
from stores.postgres.pagination import Params
from stores.search.knowledge import _fill
from stores.search.ranking import Ranked, ranked_page
from stores.search.records import SearchHit, SearchMode, SearchPage

if TYPE_CHECKING:
    from stores.search.store import SearchStore

_TARGET = Ranked("messages", "m", MESSAGE_COLUMNS)


@dataclass(frozen=True, slots=True)
class MessageSearch:
    """`reader` None searches every conversation; `conversation_id` narrows to one."""

    mode: SearchMode
    reader: Reader | None
    text: str | None = None
    vector: Vector | None = None
    conversation_id: UUID | None = None
    first: int = 10
    offset: int = 0


class MessageRepository:
    __slots__ = ("_search",)

    def __init__(self, search: SearchStore) -> None:
        self._search = search

    async def search(self, request: MessageSearch) -> SearchPage[Message]:
        params = Params()
        where: list[str] = []
        if request.conversation_id is not None:
            where.append(f"m.conversation_id = {params(request.conversation_id)}::uuid")
        if request.reader is not None:
            where.append(reader_condition(request.reader, params, "m.conversation_id"))
        return await ranked_page(
            self._search,
            _TARGET,
            mode=request.mode,
            where=where,
            params=params,
            text=request.text,
            vector=request.vector,
            first=request.first,
            offset=request.offset,
            hit=_hit,
        )

    async def pending(self, limit: int, *, after: UUID | None = None) -> list[tuple[UUID, str]]:
        async with self._search.postgres.connection() as conn:
            rows = await conn.fetch(
                "SELECT id, content FROM messages"
                " WHERE embedding_pending AND id > $1 ORDER BY id LIMIT $2",
                after or UUID(int=0),
                limit,
            )
        return [(row["id"], row["content"]) for row in rows]

    async def count_pending(self) -> int:
        async with self._search.postgres.connection() as conn:
            total: int = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE embedding_pending"
            )
        return total

    async def fill(self, vectors: Sequence[tuple[UUID, str, Vector]]) -> int:
        return await _fill(self._search, "messages", "t.content", vectors)


def _hit(row: Record) -> SearchHit[Message]:
    return SearchHit(
        message_from_row(row), float(row["score"]), row["semantic_rank"], row["keyword_rank"]
    )
