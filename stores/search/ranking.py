"""The SQL of a ranked search, shared by knowledge items and memories.

SEMANTIC ranks by cosine similarity to the query vector. KEYWORD finds, through
the GIN index, every item holding any of the query's terms (`stores.search.terms`)
and ranks it by the share of the terms it holds, then by `ts_rank` (how often they
occur, titles first; `ts_rank_cd`'s proximity cost five times as much per row on
questions); `score` is that share. HYBRID takes the best
`candidates` rows by meaning and the best by words, where words means the whole
query in web search syntax (every term, phrases as phrases), and scores each
candidate on both:

    score = w * cosine similarity + (1 - w) * (1 if it holds every term, else 0)

Meaning finds the candidates; words confirm them. Partial matches are left to
KEYWORD: in HYBRID they were noise more often than help (a question shares a word
or two with items on other subjects), so fusing them, by Reciprocal Rank Fusion
or by the share of terms held, ranked questions below SEMANTIC alone
(bench/results/search.md), while lifting full matches puts the items that use the
query's own terms first without disturbing the rest.

Every mode returns the caller's columns plus `score`, `semantic_rank` and
`keyword_rank` (1-based; None when the item was not among that side's
candidates), in the order `order_by` names. Filters are SQL conditions with
placeholders from the caller's `Params`; they apply inside each search, so the
HNSW scan (iterative, see `search_settings`) keeps going until it has enough rows
that pass them. Excluded terms (`-word`) filter every side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from asyncpg import Record

from stores.embeddings import Vector
from stores.errors import InvalidInput
from stores.postgres.options import PgConnection
from stores.postgres.pagination import Params
from stores.search.options import SearchOptions
from stores.search.records import SearchHit, SearchMode, SearchPage
from stores.search.terms import QueryTerms, split_terms

MAX_FIRST = 100
MAX_OFFSET = 1000
TEXT_SEARCH_CONFIG = "english"


if TYPE_CHECKING:
    from stores.search.store import SearchStore

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ranked:
    """Where and what to search: `alias.embedding`, `alias.search_text`, `alias.id`."""

    table: str
    alias: str
    columns: str


def order_by(mode: SearchMode, alias: str) -> str:
    """The order of `ranked_sql`'s rows, for a caller that wraps them."""
    if mode is SearchMode.SEMANTIC:
        return f"{alias}.semantic_rank"
    if mode is SearchMode.KEYWORD:
        return f"{alias}.keyword_rank"
    return f"{alias}.score DESC, {alias}.id"


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
    options: SearchOptions,
) -> str:
    a = target.alias
    lim, off = params(limit), params(offset)
    if mode is SearchMode.SEMANTIC:
        assert vector is not None
        cond = " AND ".join(where) if where else "true"
        v = f"{params(vector)}::vector"
        window = params(offset + limit)
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
    terms = split_terms(text)
    query = _query_cte(text, terms, params)
    if terms.excluded:
        where = [*where, f"NOT ({a}.search_text @@ (SELECT excluded FROM _query))"]
    cond = " AND ".join(where) if where else "true"
    matched = _matched(a, len(terms.included))
    if mode is SearchMode.KEYWORD:
        window = params(offset + limit)
        # Ranked on ids and sort keys alone; the page's rows are read afterwards.
        return f"""
            WITH {query}
            SELECT {target.columns}, hit._matched::float8 / greatest(cardinality(_q.terms), 1)
                       AS score,
                   NULL::bigint AS semantic_rank,
                   row_number() OVER (
                       ORDER BY hit._matched DESC, hit._text_rank DESC, hit.id
                   ) AS keyword_rank
            FROM (
                SELECT {a}.id, {matched} AS _matched,
                       ts_rank({a}.search_text, _q.any_q) AS _text_rank
                FROM {target.table} {a} CROSS JOIN _query _q
                WHERE {a}.search_text @@ _q.any_q AND {cond}
                ORDER BY _matched DESC, _text_rank DESC, {a}.id
                LIMIT {window}
            ) hit
                JOIN {target.table} {a} ON {a}.id = hit.id
                CROSS JOIN _query _q
            ORDER BY hit._matched DESC, hit._text_rank DESC, hit.id
            LIMIT {lim} OFFSET {off}"""
    assert vector is not None
    v = f"{params(vector)}::vector"
    pool = params(max(options.hybrid_candidates, offset + limit))
    weight = f"{params(options.semantic_weight)}::float8"
    return f"""
        WITH {query},
        semantic AS (
            SELECT s.id, row_number() OVER (ORDER BY s._distance, s.id) AS rank
            FROM (
                SELECT {a}.id, {a}.embedding <=> {v} AS _distance
                FROM {target.table} {a}
                WHERE {a}.embedding IS NOT NULL AND {cond}
                ORDER BY {a}.embedding <=> {v}
                LIMIT {pool}
            ) s
        ), keyword AS (
            SELECT w.id, row_number() OVER (ORDER BY w._text_rank DESC, w.id) AS rank
            FROM (
                SELECT {a}.id, ts_rank({a}.search_text, _q.all_q) AS _text_rank
                FROM {target.table} {a} CROSS JOIN _query _q
                WHERE {a}.search_text @@ _q.all_q AND {cond}
                ORDER BY _text_rank DESC, {a}.id
                LIMIT {pool}
            ) w
        ), fused AS (
            SELECT {target.columns}, s.rank AS semantic_rank, w.rank AS keyword_rank,
                   ({weight} * coalesce(1 - ({a}.embedding <=> {v}), 0)
                    + (1 - {weight}) * ({a}.search_text @@ _q.all_q)::int)::float8 AS score
            FROM semantic s
                FULL JOIN keyword w ON w.id = s.id
                JOIN {target.table} {a} ON {a}.id = coalesce(s.id, w.id)
                CROSS JOIN _query _q
        )
        SELECT * FROM fused
        ORDER BY score DESC, id
        LIMIT {lim} OFFSET {off}"""


def _query_cte(text: str, terms: QueryTerms, params: Params) -> str:
    """`_query`: one row with `all_q` (the text in web search syntax: every term),
    `any_q` (any term), `terms` (each distinct term that is not only stop words) and
    `excluded` (any excluded term), each parsed once."""
    config = f"'{TEXT_SEARCH_CONFIG}'"
    excluded = (
        f"websearch_to_tsquery({config}, {params(' or '.join(terms.excluded))})"
        if terms.excluded
        else "NULL::tsquery"
    )
    return f"""_query AS MATERIALIZED (
            SELECT websearch_to_tsquery({config}, {params(text)}) AS all_q,
                   websearch_to_tsquery({config}, {params(" or ".join(terms.included))}) AS any_q,
                   ARRAY(
                       SELECT DISTINCT t
                       FROM unnest({params(list(terms.included))}::text[]) AS u(term),
                            websearch_to_tsquery({config}, u.term) AS t
                       WHERE numnode(t) > 0
                   ) AS terms,
                   {excluded} AS excluded
        )"""


def _matched(alias: str, count: int) -> str:
    """How many of the query's terms the row holds: one test per term, written out
    (at most `MAX_TERMS`) rather than a subquery per row. Past the end of
    `_q.terms` (terms that were only stop words, or stem alike) a test is NULL: 0."""
    if count == 0:
        return "0"
    tests = (
        f"coalesce(({alias}.search_text @@ _q.terms[{i}])::int, 0)" for i in range(1, count + 1)
    )
    return "(" + " + ".join(tests) + ")"


async def search_settings(conn: PgConnection, ef_search: int) -> None:
    """Inside the caller's transaction: the HNSW candidate list for this query, and
    pgvector 0.8's iterative scan, which keeps reading the index while filters
    reject rows, so a filtered search still fills its page."""
    await conn.execute(
        "SELECT set_config('hnsw.ef_search', $1, true),"
        " set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        str(ef_search),
    )


def page_bounds(first: int, offset: int) -> tuple[int, int]:
    if not 0 <= first <= MAX_FIRST:
        raise InvalidInput("first", f"must be between 0 and {MAX_FIRST}, got {first}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput("after", f"search pages end {MAX_OFFSET} results deep; refine the query")
    return first, offset


async def ranked_page(
    search: SearchStore,
    target: Ranked,
    *,
    mode: SearchMode,
    where: list[str],
    params: Params,
    text: str | None,
    vector: Vector | None,
    first: int,
    offset: int,
    hit: Callable[[Record], SearchHit[T]],
) -> SearchPage[T]:
    """One page of `target`'s rows matching `where`, ranked by `mode`; one more row is
    read than returned, to tell whether another page follows."""
    first, offset = page_bounds(first, offset)
    sql = ranked_sql(
        target,
        mode=mode,
        where=where,
        params=params,
        text=text,
        vector=vector,
        limit=first + 1,
        offset=offset,
        options=search.options,
    )
    async with search.postgres.read_connection() as conn, conn.transaction(readonly=True):
        await search_settings(conn, search.ef_search_for(offset + first + 1))
        rows = await conn.fetch(sql, *params.values)
    hits = [hit(row) for row in rows]
    return SearchPage(hits[:first], offset, len(hits) > first)
