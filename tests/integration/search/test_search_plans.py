"""Keyword matching stays index-backed: partial matches are found through the GIN
index on `search_text`, never by reading every row."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gateway.settings import Settings
from stores import PostgresStore
from stores.postgres.pagination import Params
from stores.search import SearchMode, SearchOptions
from stores.search.ranking import Ranked, ranked_sql
from stores.search.space import VECTOR_TABLES

TARGETS = (
    Ranked("knowledge_items", "k", "k.id"),
    Ranked("agent_memories", "m", "m.id"),
)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.table)
@pytest.mark.parametrize("mode", [SearchMode.KEYWORD, SearchMode.HYBRID], ids=lambda m: m.name)
async def test_keyword_matching_reads_the_gin_index(
    client: TestClient, postgres: PostgresStore, target: Ranked, mode: SearchMode
) -> None:
    params = Params()
    sql = ranked_sql(
        target,
        mode=mode,
        where=[],
        params=params,
        text='how do we retry "failed tasks" -incident',
        vector=[1.0] + [0.0] * 383,
        limit=10,
        offset=0,
        options=SearchOptions(),
    )
    async with postgres.connection() as conn, conn.transaction():
        # A test database is small enough that reading every row would win; forbid it
        # to see whether the index can serve the match at all.
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *params.values))
    assert f"Bitmap Index Scan on {target.table}_search_text" in plan, plan
    assert f"Seq Scan on {target.table}" not in plan, plan


async def test_migrated_hnsw_indexes_have_the_shape_a_rebuild_gives(
    client: TestClient, postgres: PostgresStore, settings: Settings
) -> None:
    # Migrations name the options literally; `polygraph reembed --all` builds from settings.
    options = settings.search_options()
    async with postgres.connection() as conn:
        rows = await conn.fetch(
            "SELECT c.relname, c.reloptions FROM pg_class AS c"
            " JOIN pg_am AS a ON a.oid = c.relam WHERE a.amname = 'hnsw'"
        )
    shape = sorted([f"m={options.m}", f"ef_construction={options.ef_construction}"])
    assert {row["relname"]: sorted(row["reloptions"]) for row in rows} == {
        index: shape for _, index in VECTOR_TABLES
    }
