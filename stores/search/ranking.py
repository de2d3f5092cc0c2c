"""The SQL of a ranked search, shared by knowledge items and memories.

Every mode returns the caller's columns plus `score`, `semantic_rank` and
`keyword_rank`. HYBRID runs both searches over `candidates` rows each and fuses
them with Reciprocal Rank Fusion, `sum(1 / (k + rank))`, all in one statement.
Filters are SQL conditions with placeholders from the caller's `Params`; they
apply inside each search, so the HNSW scan (iterative, see `search_settings`)
keeps going until it has enough rows that pass them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stores.embeddings import Vector
from stores.postgres.options import PgConnection
from stores.postgres.pagination import Params
from stores.search.records import SearchMode

# Reciprocal Rank Fusion's constant, from Cormack et al. (2009); it damps the
# difference between the top ranks of each list.
RRF_K = 60
MAX_OFFSET = 1000
TEXT_SEARCH_CONFIG = "english"


@dataclass(frozen=True, slots=True)
class Ranked:
    """Where and what to search: `alias.embedding`, `alias.search_text`, `alias.id`."""

    table: str
    alias: str
    columns: str


def vector_literal(vector: Vector) -> str:
    """pgvector's text form; sent as a text parameter and cast in SQL."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def ranked_sql(
    target: Ranked,
    *,
    mode: SearchMode,
    where: Sequence[str],
    params: Params,
    text: str | None,
    vector: Vector | None,
    limit: int,
    offset: int,
    candidates: int,
) -> str:
    a = target.alias
    cond = " AND ".join(where) if where else "true"
    lim, off = params(limit), params(offset)
    if mode is not SearchMode.HYBRID:
        window = params(offset + limit)
    if mode is SearchMode.SEMANTIC:
        assert vector is not None
        v = f"{params(vector_literal(vector))}::text::vector"
        return f"""
            SELECT hit.*, 1 - hit._distance AS score,
                   row_number() OVER (ORDER BY hit._distance, hit.id) AS semantic_rank,
                   NULL::bigint AS keyword_rank
            FROM (
                SELECT {target.columns}, {a}.embedding <=> {v} AS _distance
                FROM {target.table} {a}
                WHERE {a}.embedding IS NOT NULL AND {cond}
                ORDER BY {a}.embedding <=> {v}
                LIMIT {window}
            ) hit
            ORDER BY hit._distance, hit.id
            LIMIT {lim} OFFSET {off}"""
    assert text is not None
    q = f"websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', {params(text)})"
    if mode is SearchMode.KEYWORD:
        return f"""
            SELECT hit.*, hit._rank AS score, NULL::bigint AS semantic_rank,
                   row_number() OVER (ORDER BY hit._rank DESC, hit.id) AS keyword_rank
            FROM (
                SELECT {target.columns}, ts_rank_cd({a}.search_text, _q, 32)::float8 AS _rank
                FROM {target.table} {a}, (SELECT {q}) AS _query(_q)
                WHERE {a}.search_text @@ _q AND {cond}
                ORDER BY _rank DESC, {a}.id
                LIMIT {window}
            ) hit
            ORDER BY hit._rank DESC, hit.id
            LIMIT {lim} OFFSET {off}"""
    assert vector is not None
    v = f"{params(vector_literal(vector))}::text::vector"
    # The keyword side of a fusion matches any of the words (websearch syntax kept:
    # phrases and exclusions), so a question phrased in full still brings candidates;
    # RRF then rewards the items both sides agree on.
    q = f"replace({q}::text, ' & ', ' | ')::tsquery"
    pool = params(max(candidates, offset + limit))
    k = params(RRF_K)
    return f"""
        WITH semantic AS (
            SELECT s.id, row_number() OVER (ORDER BY s._distance, s.id) AS rank
            FROM (
                SELECT {a}.id, {a}.embedding <=> {v} AS _distance
                FROM {target.table} {a}
                WHERE {a}.embedding IS NOT NULL AND {cond}
                ORDER BY {a}.embedding <=> {v}
                LIMIT {pool}
            ) s
        ), keyword AS (
            SELECT w.id, row_number() OVER (ORDER BY w._rank DESC, w.id) AS rank
            FROM (
                SELECT {a}.id, ts_rank_cd({a}.search_text, _q, 32) AS _rank
                FROM {target.table} {a}, (SELECT {q}) AS _query(_q)
                WHERE {a}.search_text @@ _q AND {cond}
                ORDER BY _rank DESC, {a}.id
                LIMIT {pool}
            ) w
        ), fused AS (
            SELECT coalesce(s.id, w.id) AS fused_id, s.rank AS semantic_rank,
                   w.rank AS keyword_rank,
                   (coalesce(1.0 / ({k}::int + s.rank), 0)
                    + coalesce(1.0 / ({k}::int + w.rank), 0))::float8 AS score
            FROM semantic s FULL JOIN keyword w ON s.id = w.id
        )
        SELECT {target.columns}, f.score, f.semantic_rank, f.keyword_rank
        FROM fused f JOIN {target.table} {a} ON {a}.id = f.fused_id
        ORDER BY f.score DESC, {a}.id
        LIMIT {lim} OFFSET {off}"""


async def search_settings(conn: PgConnection, ef_search: int) -> None:
    """Inside the caller's transaction: the HNSW candidate list for this query, and
    pgvector 0.8's iterative scan, which keeps reading the index while filters
    reject rows, so a filtered search still fills its page."""
    await conn.execute(
        "SELECT set_config('hnsw.ef_search', $1, true),"
        " set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        str(ef_search),
    )
