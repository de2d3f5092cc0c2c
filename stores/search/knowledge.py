"""Knowledge items and the typed links between them.

Every write changes its rows and appends an audit row and an outbox row in one
transaction; the knowledge graph in Neo4j follows from the outbox. A write
without an embedding (the embedder failed) is stored all the same, marked
pending, for the background filler or `polygraph reembed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import orjson
from asyncpg import Record

from stores.embeddings import Vector
from stores.errors import InvalidInput, NotFound
from stores.postgres.inputs import UNSET, check_text
from stores.postgres.outbox import OUTBOX_CHANNEL, wake_when_queued
from stores.postgres.pagination import Params
from stores.postgres.records import WriteContext
from stores.postgres.vectors import vector_array
from stores.postgres.writes import (
    check_version,
    claim_idempotency_key,
    settle_idempotency_key,
    to_json,
    write_audit,
    write_transaction,
)
from stores.search.ranking import (
    Ranked,
    page_bounds,
    ranked_page,
    search_settings,
)
from stores.search.records import (
    KNOWLEDGE_RELATION_TYPES,
    KnowledgeFilter,
    KnowledgeInput,
    KnowledgeItem,
    KnowledgePatch,
    KnowledgeRelation,
    SearchHit,
    SearchPage,
    SearchRequest,
)

if TYPE_CHECKING:
    from stores.search.store import SearchStore

_COLUMNS = (
    "k.id, k.title, k.content, k.source, k.tags, k.agent_id, k.embedding_pending,"
    " k.created_at, k.updated_at, k.version"
)
_TARGET = Ranked("knowledge_items", "k", _COLUMNS)
MAX_TAGS = 50


class KnowledgeRepository:
    """Knowledge items in PostgreSQL, the source of truth for the knowledge graph."""

    __slots__ = ("_search",)

    def __init__(self, search: SearchStore) -> None:
        self._search = search

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, KnowledgeItem]:
        if not ids:
            return {}
        async with self._search.postgres.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM knowledge_items k WHERE k.id = ANY($1::uuid[])",
                list(ids),
            )
        return {row["id"]: _item(row) for row in rows}

    async def create(
        self, ctx: WriteContext, data: KnowledgeInput, embedding: Vector | None
    ) -> KnowledgeItem:
        _check(data.title, data.content, data.source, data.tags)
        item_id = uuid4()
        async with write_transaction(self._search.postgres, _REFUSALS) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, "knowledge.create", {"id": str(item_id)}
            )
            if replay is not None:
                return await _get(conn, UUID(replay["id"]))
            row = await conn.fetchrow(
                "INSERT INTO knowledge_items AS k (id, title, content, source, tags, agent_id,"
                " embedding, embedding_pending)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::vector, $7::vector IS NULL)"
                f" RETURNING {_COLUMNS}",
                item_id,
                data.title,
                data.content,
                data.source,
                list(data.tags),
                data.agent_id,
                embedding,
            )
            assert row is not None
            item = _item(row)
            await write_audit(
                conn,
                ctx,
                "create",
                "knowledge",
                item.id,
                None,
                item,
                outbox=("knowledge.upserted", _upserted(item)),
            )
        return item

    async def update(
        self,
        ctx: WriteContext,
        item_id: UUID,
        patch: KnowledgePatch,
        embedding: Vector | None,
        *,
        expected_version: int | None,
    ) -> KnowledgeItem:
        """Change the given fields. When the text changes and `embedding` is None, the
        old vector is kept for searches until the filler replaces it."""
        given: dict[str, Any] = {
            name: value
            for name in ("title", "content", "source", "tags", "agent_id")
            if (value := getattr(patch, name)) is not UNSET
        }
        async with write_transaction(self._search.postgres, _REFUSALS) as conn:
            operation = f"knowledge.update {item_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"id": str(item_id)})
            if replay is not None:
                return await _get(conn, item_id)
            current = await _lock(conn, item_id, expected_version)
            merged = {
                "title": given.get("title", current.title),
                "content": given.get("content", current.content),
                "source": given.get("source", current.source),
                "tags": tuple(given.get("tags", current.tags)),
            }
            _check(merged["title"], merged["content"], merged["source"], merged["tags"])
            text_changed = (merged["title"], merged["content"]) != (current.title, current.content)
            params = Params([item_id])
            sets = [
                f"{name} = {params(list(v) if name == 'tags' else v)}" for name, v in given.items()
            ]
            if embedding is not None:
                sets.append(f"embedding = {params(embedding)}::vector")
                sets.append("embedding_pending = false")
            elif text_changed:
                sets.append("embedding_pending = true")
            row = await conn.fetchrow(
                f"UPDATE knowledge_items AS k SET {', '.join([*sets, 'version = version + 1'])},"
                f" updated_at = now() WHERE k.id = $1 RETURNING {_COLUMNS}",
                *params.values,
            )
            assert row is not None
            item = _item(row)
            await write_audit(
                conn,
                ctx,
                "update",
                "knowledge",
                item.id,
                current,
                item,
                outbox=("knowledge.upserted", _upserted(item)),
            )
        return item

    async def delete(
        self, ctx: WriteContext, item_id: UUID, *, expected_version: int | None
    ) -> KnowledgeItem:
        """Delete an item and its links; returns it as it was. A retry under the same
        idempotency key gets that again."""
        async with write_transaction(self._search.postgres) as conn:
            operation = f"knowledge.delete {item_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {})
            if replay is not None:
                return _item_from_json(replay["deleted"])
            current = await _lock(conn, item_id, expected_version)
            await conn.execute("DELETE FROM knowledge_items WHERE id = $1", item_id)
            await write_audit(
                conn,
                ctx,
                "delete",
                "knowledge",
                item_id,
                current,
                None,
                outbox=("knowledge.deleted", {"id": str(item_id)}),
            )
            await settle_idempotency_key(conn, ctx, {"deleted": to_json(current)})
        return current

    async def relate(
        self, ctx: WriteContext, source_id: UUID, target_id: UUID, type: str
    ) -> KnowledgeRelation:
        """Link two items; linking them again the same way changes nothing."""
        if type not in KNOWLEDGE_RELATION_TYPES:
            raise InvalidInput("type", f"must be one of {', '.join(KNOWLEDGE_RELATION_TYPES)}")
        if source_id == target_id:
            raise InvalidInput("targetId", "an item cannot be linked to itself")
        async with write_transaction(self._search.postgres, _REFUSALS) as conn:
            operation = f"knowledge.relate {source_id} {type} {target_id}"
            if await claim_idempotency_key(conn, ctx, operation, {}) is not None:
                found = await conn.fetchrow(
                    "SELECT source_id, target_id, type, created_at FROM knowledge_relations"
                    " WHERE (source_id, target_id, type) = ($1, $2, $3)",
                    source_id,
                    target_id,
                    type,
                )
                if found is None:
                    raise NotFound("knowledge link", f"{source_id} {type} {target_id}")
                return _relation(found)
            row = await conn.fetchrow(
                "WITH added AS (INSERT INTO knowledge_relations (source_id, target_id, type)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING *)"
                " SELECT source_id, target_id, type, created_at, true AS added FROM added"
                " UNION ALL SELECT source_id, target_id, type, created_at, false"
                " FROM knowledge_relations WHERE (source_id, target_id, type) = ($1, $2, $3)",
                source_id,
                target_id,
                type,
            )
            assert row is not None
            relation = _relation(row)
            if row["added"]:
                await write_audit(
                    conn,
                    ctx,
                    "relate",
                    "knowledge",
                    source_id,
                    None,
                    relation,
                    outbox=("knowledge.related", _related(relation)),
                )
        return relation

    async def unrelate(
        self, ctx: WriteContext, source_id: UUID, target_id: UUID, type: str
    ) -> bool:
        """Remove the link; False when there was none."""
        async with write_transaction(self._search.postgres) as conn:
            operation = f"knowledge.unrelate {source_id} {type} {target_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"removed": False})
            if replay is not None:
                return bool(replay["removed"])
            row = await conn.fetchrow(
                "DELETE FROM knowledge_relations WHERE source_id = $1 AND target_id = $2"
                " AND type = $3 RETURNING source_id, target_id, type, created_at",
                source_id,
                target_id,
                type,
            )
            if row is None:
                return False
            relation = _relation(row)
            await write_audit(
                conn,
                ctx,
                "unrelate",
                "knowledge",
                source_id,
                relation,
                None,
                outbox=("knowledge.unrelated", _related(relation)),
            )
            await settle_idempotency_key(conn, ctx, {"removed": True})
        return True

    async def search(self, request: SearchRequest) -> SearchPage[KnowledgeItem]:
        """One page of ranked items; see `stores.search.ranking` for the modes."""
        params = Params()
        return await ranked_page(
            self._search,
            _TARGET,
            mode=request.mode,
            where=_filter_conditions(request.filter, params),
            params=params,
            text=request.text,
            vector=request.vector,
            first=request.first,
            offset=request.offset,
            hit=_hit,
        )

    async def similar(
        self, item_id: UUID, first: int, filter: KnowledgeFilter | None = None
    ) -> list[SearchHit[KnowledgeItem]]:
        """The nearest items to `item_id` by meaning; empty while its embedding is pending."""
        first, _ = page_bounds(first, 0)
        params = Params([item_id, first])
        where = _filter_conditions(filter or KnowledgeFilter(), params)
        conditions = " AND ".join(["k.embedding IS NOT NULL", "k.id <> $1", *where])
        async with (
            self._search.postgres.read_connection() as conn,
            conn.transaction(readonly=True),
        ):
            await search_settings(conn, self._search.ef_search_for(first + 1))
            rows = await conn.fetch(
                f"""
                SELECT hit.*, 1 - hit._distance AS score,
                       row_number() OVER (ORDER BY hit._distance, hit.id) AS semantic_rank,
                       NULL::bigint AS keyword_rank
                FROM (
                    SELECT {_COLUMNS}, k.embedding <=> src.embedding AS _distance
                    FROM knowledge_items k,
                         (SELECT embedding FROM knowledge_items WHERE id = $1) src
                    WHERE {conditions}
                    ORDER BY k.embedding <=> src.embedding
                    LIMIT $2
                ) hit
                ORDER BY hit._distance, hit.id""",
                *params.values,
            )
        return [_hit(row) for row in rows]

    async def bulk_insert(
        self, rows: Sequence[tuple[UUID, KnowledgeInput, Vector]], *, project: bool = True
    ) -> int:
        """Load items with their vectors in one statement, for seeding and benchmarks:
        no audit rows, and existing ids are skipped. Each new item gets its outbox row
        in the same statement, as a client write does, so the graph follows; `project=False`
        leaves that to a later `polygraph graph rebuild`."""
        for _, data, _ in rows:
            _check(data.title, data.content, data.source, data.tags)
        async with self._search.postgres.connection() as conn:
            inserted: int = await conn.fetchval(
                "WITH inserted AS ("
                " INSERT INTO knowledge_items (id, title, content, source, tags, agent_id,"
                " embedding, embedding_pending)"
                " SELECT i.id, i.title, i.content, i.source,"
                " ARRAY(SELECT jsonb_array_elements_text(i.tags::jsonb)), i.agent_id,"
                " i.embedding, false"
                " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],"
                " $6::uuid[], $7::vector[])"
                " AS i(id, title, content, source, tags, agent_id, embedding)"
                " ON CONFLICT (id) DO NOTHING"
                " RETURNING id, title, source, tags"
                "), queued AS ("
                # The payload `_upserted` builds for a client write.
                " INSERT INTO outbox (kind, payload)"
                " SELECT 'knowledge.upserted', jsonb_build_object("
                " 'id', id, 'title', title, 'source', source, 'tags', tags)"
                " FROM inserted WHERE $8 ORDER BY id RETURNING id"
                ")"
                " SELECT count(*) FROM inserted"
                f" LEFT JOIN ({wake_when_queued('queued', '$9')}) AS woken ON true",
                [item_id for item_id, _, _ in rows],
                [data.title for _, data, _ in rows],
                [data.content for _, data, _ in rows],
                [data.source for _, data, _ in rows],
                # Arrays of arrays must be rectangular in SQL; JSON text is not.
                [orjson.dumps(list(data.tags)).decode() for _, data, _ in rows],
                [data.agent_id for _, data, _ in rows],
                vector_array(vector for _, _, vector in rows),
                project,
                OUTBOX_CHANNEL,
            )
        return inserted

    async def agent_ids(self, limit: int) -> list[UUID]:
        """Agents to attribute demo data to, oldest first."""
        async with self._search.postgres.connection() as conn:
            rows = await conn.fetch("SELECT id FROM agents ORDER BY created_at, id LIMIT $1", limit)
        return [row["id"] for row in rows]

    async def pending(self, limit: int, *, after: UUID | None = None) -> list[tuple[UUID, str]]:
        """Items waiting for an embedding, by id, with the text to embed."""
        async with self._search.postgres.connection() as conn:
            rows = await conn.fetch(
                f"SELECT t.id, {_KNOWLEDGE_TEXT} AS text FROM knowledge_items t"
                " WHERE t.embedding_pending AND t.id > $1 ORDER BY t.id LIMIT $2",
                after or UUID(int=0),
                limit,
            )
        return [(row["id"], row["text"]) for row in rows]

    async def count_pending(self) -> int:
        async with self._search.postgres.connection() as conn:
            total: int = await conn.fetchval(
                "SELECT count(*) FROM knowledge_items WHERE embedding_pending"
            )
        return total

    async def fill(self, vectors: Sequence[tuple[UUID, str, Vector]]) -> int:
        """Store computed embeddings for rows whose text is still the text embedded;
        returns how many rows took them."""
        return await _fill(self._search, "knowledge_items", _KNOWLEDGE_TEXT, vectors)


# The text embedded for an item, as `records.embedding_text` builds it.
_KNOWLEDGE_TEXT = "t.title || E'\\n' || t.content"


async def _fill(
    search: SearchStore, table: str, text_sql: str, vectors: Sequence[tuple[UUID, str, Vector]]
) -> int:
    if not vectors:
        return 0
    # A row edited since its text was read keeps `pending`, and is embedded again; so
    # does one another transaction holds: the filler never waits on a row lock, so it
    # can never deadlock with a writer locking several rows in another order (it did,
    # with batches in no order), and holds a writer up for one statement at most.
    async with search.postgres.connection() as conn:
        status: str = await conn.execute(
            f"UPDATE {table} AS t SET embedding = u.vector, embedding_pending = false"
            " FROM unnest($1::uuid[], $2::text[], $3::vector[]) AS u(id, text, vector)"
            f" WHERE t.id = u.id AND {text_sql} = u.text AND t.id IN"
            f" (SELECT id FROM {table} WHERE id = ANY($1::uuid[]) FOR UPDATE SKIP LOCKED)",
            [item_id for item_id, _, _ in vectors],
            [text for _, text, _ in vectors],
            vector_array(vector for _, _, vector in vectors),
        )
    return int(status.rsplit(" ", 1)[-1])


def _filter_conditions(filter: KnowledgeFilter, params: Params) -> list[str]:
    where: list[str] = []
    if filter.tags_any is not None:
        where.append(f"k.tags && {params(list(filter.tags_any))}::text[]")
    if filter.sources is not None:
        where.append(f"k.source = ANY({params(list(filter.sources))}::text[])")
    if filter.agent_ids is not None:
        where.append(f"k.agent_id = ANY({params(list(filter.agent_ids))}::uuid[])")
    if filter.created_after is not None:
        where.append(f"k.created_at >= {params(filter.created_after)}::timestamptz")
    if filter.created_before is not None:
        where.append(f"k.created_at < {params(filter.created_before)}::timestamptz")
    return where


def _check(title: str, content: str, source: str, tags: Sequence[str]) -> None:
    check_text("title", title, 500)
    if len(content) > 100_000:
        raise InvalidInput("content", "must be at most 100,000 characters")
    if len(source) > 500:
        raise InvalidInput("source", "must be at most 500 characters")
    if len(tags) > MAX_TAGS or any(not t.strip() or len(t) > 100 for t in tags):
        raise InvalidInput("tags", f"at most {MAX_TAGS} tags of 1 to 100 characters each")


async def _lock(conn: Any, item_id: UUID, expected_version: int | None) -> KnowledgeItem:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM knowledge_items k WHERE k.id = $1 FOR UPDATE", item_id
    )
    if row is None:
        raise NotFound("knowledge item", item_id, field="id")
    item = _item(row)
    check_version("knowledge item", item_id, item.version, expected_version)
    return item


async def _get(conn: Any, item_id: UUID) -> KnowledgeItem:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM knowledge_items k WHERE k.id = $1", item_id)
    if row is None:
        raise NotFound("knowledge item", item_id, field="id")
    return _item(row)


def _relation(row: Record) -> KnowledgeRelation:
    return KnowledgeRelation(row["source_id"], row["target_id"], row["type"], row["created_at"])


def _item_from_json(data: dict[str, Any]) -> KnowledgeItem:
    """An item from its idempotency snapshot (see `to_json`)."""
    return KnowledgeItem(
        id=UUID(data["id"]),
        title=data["title"],
        content=data["content"],
        source=data["source"],
        tags=tuple(data["tags"]),
        agent_id=None if data["agent_id"] is None else UUID(data["agent_id"]),
        embedding_pending=data["embedding_pending"],
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        version=data["version"],
    )


def _item(row: Record) -> KnowledgeItem:
    return KnowledgeItem(
        id=row["id"],
        title=row["title"],
        content=row["content"],
        source=row["source"],
        tags=tuple(row["tags"]),
        agent_id=row["agent_id"],
        embedding_pending=row["embedding_pending"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _hit(row: Record) -> SearchHit[KnowledgeItem]:
    return SearchHit(_item(row), float(row["score"]), row["semantic_rank"], row["keyword_rank"])


def _upserted(item: KnowledgeItem) -> dict[str, Any]:
    return {"id": str(item.id), "title": item.title, "source": item.source, "tags": list(item.tags)}


def _related(relation: KnowledgeRelation) -> dict[str, Any]:
    return {
        "source_id": str(relation.source_id),
        "target_id": str(relation.target_id),
        "type": relation.type,
    }


_REFUSALS = {
    "knowledge_items_agent_id_fkey": lambda: NotFound("agent", "given", field="agentId"),
    "knowledge_relations_source_id_fkey": lambda: NotFound(
        "knowledge item", "given", field="sourceId"
    ),
    "knowledge_relations_target_id_fkey": lambda: NotFound(
        "knowledge item", "given", field="targetId"
    ),
}
