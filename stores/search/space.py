"""The embedding space: which model made the stored vectors, and how long they are.

A gateway whose settings name another model or dimension refuses to start:
mixing vectors of two models makes every similarity meaningless.
`polygraph reembed` moves the database to the configured space (altering the
columns when the dimension changes) and recomputes every vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stores.errors import StoreRefused
from stores.search.records import EmbeddingSpace

if TYPE_CHECKING:
    from stores.search.store import SearchStore

# (table, HNSW index) pairs whose vectors live in the space.
VECTOR_TABLES = (
    ("knowledge_items", "knowledge_items_embedding"),
    ("agent_memories", "agent_memories_embedding"),
    ("tasks", "tasks_embedding"),
    ("messages", "messages_embedding"),
)


class EmbeddingSpaceMismatch(StoreRefused):
    def __init__(self, stored: EmbeddingSpace, configured: EmbeddingSpace) -> None:
        super().__init__(
            f"the database holds embeddings of {stored.model} ({stored.dimension} dimensions) "
            f"but the settings ask for {configured.model} ({configured.dimension} dimensions); "
            "run `polygraph reembed` to recompute them, or set POLYGRAPH_EMBEDDING_MODEL and "
            "POLYGRAPH_EMBEDDING_DIMENSION back"
        )
        self.stored = stored
        self.configured = configured


async def stored_space(search: SearchStore) -> EmbeddingSpace | None:
    async with search.postgres.connection() as conn:
        row = await conn.fetchrow("SELECT model, dimension FROM embedding_space")
    return None if row is None else EmbeddingSpace(row["model"], row["dimension"])


async def ensure_space(search: SearchStore, configured: EmbeddingSpace) -> None:
    """Record `configured` on a database that has no space yet (when its columns
    have that dimension); refuse with `EmbeddingSpaceMismatch` when it differs."""
    async with search.postgres.connection() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT model, dimension FROM embedding_space FOR UPDATE")
        if row is not None:
            stored = EmbeddingSpace(row["model"], row["dimension"])
            if stored != configured:
                raise EmbeddingSpaceMismatch(stored, configured)
            return
        columns = await _column_dimension(conn)
        if columns != configured.dimension:
            raise EmbeddingSpaceMismatch(EmbeddingSpace("(none yet)", columns), configured)
        await conn.execute(
            "INSERT INTO embedding_space (model, dimension) VALUES ($1, $2)"
            " ON CONFLICT (singleton) DO NOTHING",
            configured.model,
            configured.dimension,
        )


async def move_space(search: SearchStore, configured: EmbeddingSpace, *, reindex: bool) -> bool:
    """Make `configured` the space and mark every vector pending, in one transaction;
    returns False when it already was the space (and `reindex` was not asked for).
    A new dimension retypes the columns, dropping their vectors; the HNSW indexes
    are rebuilt with the current `m` and `ef_construction`."""
    options = search.options
    async with search.postgres.connection() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT model, dimension FROM embedding_space FOR UPDATE")
        stored = None if row is None else EmbeddingSpace(row["model"], row["dimension"])
        columns = await _column_dimension(conn)
        if stored == configured and columns == configured.dimension and not reindex:
            return False
        # DDL takes no parameters: every number below is a validated int from settings.
        dimension = int(configured.dimension)
        for table, index in VECTOR_TABLES:
            await conn.execute(f"DROP INDEX IF EXISTS {index}")
            if columns != dimension:
                await conn.execute(
                    f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({dimension})"
                    " USING NULL"
                )
            if stored != configured or columns != dimension:
                await conn.execute(f"UPDATE {table} SET embedding_pending = true")
            await conn.execute(
                f"CREATE INDEX {index} ON {table} USING hnsw (embedding vector_cosine_ops)"
                f" WITH (m = {int(options.m)}, ef_construction = {int(options.ef_construction)})"
            )
        await conn.execute(
            "INSERT INTO embedding_space (model, dimension) VALUES ($1, $2)"
            " ON CONFLICT (singleton) DO UPDATE SET model = excluded.model,"
            " dimension = excluded.dimension, recorded_at = now()",
            configured.model,
            configured.dimension,
        )
    return True


async def _column_dimension(conn: object) -> int:
    # pgvector keeps a column's dimension as its type modifier.
    dimension: int = await conn.fetchval(  # type: ignore[attr-defined]
        "SELECT atttypmod FROM pg_attribute"
        " WHERE attrelid = 'knowledge_items'::regclass AND attname = 'embedding'"
    )
    return dimension
