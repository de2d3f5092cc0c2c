"""Agent memories: what an agent experienced (episodic), knows (semantic) or
knows how to do (procedural), recalled by meaning, by words or by both.

Memories are private to their agent and not part of any graph, so a write is
its rows plus an audit row; there is nothing to project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from asyncpg import Record

from stores.embeddings import Vector
from stores.errors import InvalidInput, NotFound
from stores.postgres.inputs import check_json_object
from stores.postgres.pagination import Params
from stores.postgres.records import WriteContext
from stores.postgres.writes import (
    claim_idempotency_key,
    settle_idempotency_key,
    to_json,
    write_audit,
    write_transaction,
)
from stores.search.knowledge import _fill
from stores.search.ranking import (
    Ranked,
    order_by,
    page_bounds,
    ranked_sql,
    search_settings,
)
from stores.search.records import MEMORY_KINDS, Memory, MemoryInput, SearchHit, SearchMode

if TYPE_CHECKING:
    from stores.search.store import SearchStore

_COLUMNS = (
    "m.id, m.agent_id, m.content, m.kind, m.importance, m.context, m.embedding_pending,"
    " m.created_at"
)
_TARGET = Ranked("agent_memories", "m", _COLUMNS)
MAX_CONTEXT_BYTES = 64 * 1024


class MemoryRepository:
    __slots__ = ("_search",)

    def __init__(self, search: SearchStore) -> None:
        self._search = search

    async def remember(
        self, ctx: WriteContext, data: MemoryInput, embedding: Vector | None
    ) -> Memory:
        if not data.content.strip() or len(data.content) > 100_000:
            raise InvalidInput("content", "must be 1 to 100,000 characters, not only spaces")
        if data.kind not in MEMORY_KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(MEMORY_KINDS)}")
        if not math.isfinite(data.importance) or not 0 <= data.importance <= 1:
            raise InvalidInput("importance", "must be between 0 and 1")
        check_json_object("context", data.context, MAX_CONTEXT_BYTES)
        memory_id = uuid4()
        refusals = {
            "agent_memories_agent_id_fkey": lambda: NotFound(
                "agent", data.agent_id, field="agentId"
            )
        }
        async with write_transaction(self._search.postgres, refusals) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, "memory.remember", {"id": str(memory_id)}
            )
            if replay is not None:
                found = await _by_ids(conn, [UUID(replay["id"])])
                if found:
                    return found[0]
                raise NotFound("memory", replay["id"], field="idempotencyKey")
            row = await conn.fetchrow(
                "INSERT INTO agent_memories AS m (id, agent_id, content, kind, importance, context,"
                " embedding, embedding_pending)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::vector, $7::vector IS NULL)"
                f" RETURNING {_COLUMNS}",
                memory_id,
                data.agent_id,
                data.content,
                data.kind,
                data.importance,
                data.context,
                embedding,
            )
            assert row is not None
            memory = _memory(row)
            await write_audit(conn, ctx, "create", "memory", memory.id, None, memory)
        return memory

    async def forget(self, ctx: WriteContext, memory_id: UUID) -> Memory:
        """Delete a memory; returns it as it was. A retry under the same idempotency key
        gets that again."""
        async with write_transaction(self._search.postgres) as conn:
            replay = await claim_idempotency_key(conn, ctx, f"memory.forget {memory_id}", {})
            if replay is not None:
                return _memory_from_json(replay["deleted"])
            row = await conn.fetchrow(
                f"DELETE FROM agent_memories AS m WHERE m.id = $1 RETURNING {_COLUMNS}", memory_id
            )
            if row is None:
                raise NotFound("memory", memory_id, field="id")
            memory = _memory(row)
            await write_audit(conn, ctx, "delete", "memory", memory_id, memory, None)
            await settle_idempotency_key(conn, ctx, {"deleted": to_json(memory)})
        return memory

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, Memory]:
        if not ids:
            return {}
        async with self._search.postgres.connection() as conn:
            found = await _by_ids(conn, ids)
        return {memory.id: memory for memory in found}

    async def recall(
        self,
        agent_ids: Sequence[UUID],
        *,
        mode: SearchMode,
        text: str | None,
        vector: Vector | None,
        first: int,
    ) -> dict[UUID, list[SearchHit[Memory]]]:
        """The best `first` memories of each agent, for all agents in one statement."""
        first, _ = page_bounds(first, 0)
        found: dict[UUID, list[SearchHit[Memory]]] = {agent_id: [] for agent_id in agent_ids}
        if not agent_ids or first == 0:
            return found
        params = Params([list(dict.fromkeys(agent_ids))])
        inner = ranked_sql(
            _TARGET,
            mode=mode,
            where=["m.agent_id = a.agent_id"],
            params=params,
            text=text,
            vector=vector,
            limit=first,
            offset=0,
            options=self._search.options,
        )
        sql = (
            "SELECT r.* FROM unnest($1::uuid[]) AS a(agent_id)"
            f" CROSS JOIN LATERAL ({inner}) AS r"
            f" ORDER BY r.agent_id, {order_by(mode, 'r')}"
        )
        async with self._search.postgres.connection() as conn, conn.transaction(readonly=True):
            await search_settings(conn, self._search.ef_search_for(first))
            rows = await conn.fetch(sql, *params.values)
        for row in rows:
            found[row["agent_id"]].append(
                SearchHit(
                    _memory(row), float(row["score"]), row["semantic_rank"], row["keyword_rank"]
                )
            )
        return found

    async def pending(self, limit: int, *, after: UUID | None = None) -> list[tuple[UUID, str]]:
        async with self._search.postgres.connection() as conn:
            rows = await conn.fetch(
                "SELECT id, content FROM agent_memories"
                " WHERE embedding_pending AND id > $1 ORDER BY id LIMIT $2",
                after or UUID(int=0),
                limit,
            )
        return [(row["id"], row["content"]) for row in rows]

    async def count_pending(self) -> int:
        async with self._search.postgres.connection() as conn:
            total: int = await conn.fetchval(
                "SELECT count(*) FROM agent_memories WHERE embedding_pending"
            )
        return total

    async def fill(self, vectors: Sequence[tuple[UUID, str, Vector]]) -> int:
        return await _fill(self._search, "agent_memories", "t.content", vectors)


async def _by_ids(conn: object, ids: Sequence[UUID]) -> list[Memory]:
    rows = await conn.fetch(  # type: ignore[attr-defined]
        f"SELECT {_COLUMNS} FROM agent_memories m WHERE m.id = ANY($1::uuid[])", list(ids)
    )
    return [_memory(row) for row in rows]


def _memory_from_json(data: dict[str, Any]) -> Memory:
    """A memory from its idempotency snapshot (see `to_json`)."""
    return Memory(
        id=UUID(data["id"]),
        agent_id=UUID(data["agent_id"]),
        content=data["content"],
        kind=data["kind"],
        importance=data["importance"],
        context=data["context"],
        embedding_pending=data["embedding_pending"],
        created_at=datetime.fromisoformat(data["created_at"]),
    )


def _memory(row: Record) -> Memory:
    return Memory(
        id=row["id"],
        agent_id=row["agent_id"],
        content=row["content"],
        kind=row["kind"],
        importance=float(row["importance"]),
        context=row["context"],
        embedding_pending=row["embedding_pending"],
        created_at=row["created_at"],
    )
