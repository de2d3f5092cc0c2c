"""The outbox: changes written in the same transaction as the rows they describe,
for the projector to apply to Neo4j later.

Kinds and payloads (ids are strings):

    agent.upserted           {id, name, role, status, parent_id}
    agent.deleted            {id}
    agent.related            {source_id, target_id, type, weight}
    agent.unrelated          {source_id, target_id, type}
    task.upserted            {id, title, status, priority, assignee_id, workflow_id}
    task.deleted             {id}
    task.dependency_added    {task_id, depends_on_id}
    task.dependency_removed  {task_id, depends_on_id}
    workflow.upserted        {id, name, status, steps: [{id, name, estimate}], edges: [{from, to}]}
    workflow.deleted         {id}
    knowledge.upserted       {id, title, source, tags}
    knowledge.deleted        {id}
    knowledge.related        {source_id, target_id, type: RELATES_TO | SUPPORTS | CONTRADICTS}
    knowledge.unrelated      {source_id, target_id, type}
    negotiation.resolved     {id, title, resolution, message_id, agent_ids, task_ids}
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stores.postgres.listen import ChannelListener
from stores.postgres.options import PgConnection
from stores.postgres.records import WriteContext

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

logger = logging.getLogger(__name__)

OUTBOX_CHANNEL = "polygraph_outbox"
_MAX_ERROR_LENGTH = 2000


def wake_when_queued(queued: str, channel: str) -> str:
    """The body of a CTE that wakes the projectors on commit, as `enqueue` does, once
    and only if the CTE `queued` (the statement's outbox rows) holds a row: a write
    that turns out to write nothing wakes nobody. `channel` is the placeholder of
    `OUTBOX_CHANNEL`; list the CTE in the final FROM so that it runs."""
    return f"SELECT pg_notify({channel}, '') FROM {queued} LIMIT 1"


async def enqueue(
    conn: PgConnection,
    kind: str,
    payload: dict[str, Any],
    ctx: WriteContext | None = None,
) -> int:
    """Add one change inside the caller's transaction; returns its outbox id, also
    appended to `ctx.outbox_ids` when a write context is given.

    The NOTIFY is delivered on commit, waking projectors in every gateway.
    """
    outbox_id: int = await conn.fetchval(
        "WITH row AS (INSERT INTO outbox (kind, payload) VALUES ($1, $2::jsonb) RETURNING id)"
        " SELECT id FROM row, pg_notify($3, '') AS notified",
        kind,
        payload,
        OUTBOX_CHANNEL,
    )
    if ctx is not None:
        ctx.outbox_ids.append(outbox_id)
    return outbox_id


async def enqueue_all(
    conn: PgConnection, kind: str, payloads: list[dict[str, Any]], ctx: WriteContext
) -> None:
    """`enqueue` for many changes of one kind, in one statement however many."""
    if not payloads:
        return
    outbox_ids = await conn.fetchval(
        "WITH rows AS (INSERT INTO outbox (kind, payload)"
        " SELECT $1, payload FROM unnest($2::jsonb[]) WITH ORDINALITY AS p(payload, n)"
        " ORDER BY n RETURNING id)"
        " SELECT array_agg(id ORDER BY id) FROM rows, pg_notify($3, '') AS notified",
        kind,
        payloads,
        OUTBOX_CHANNEL,
    )
    ctx.outbox_ids.extend(outbox_ids)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@asynccontextmanager
async def claim_batch(store: PostgresStore, limit: int) -> AsyncIterator[list[OutboxEvent]]:
    """Lock up to `limit` pending rows, oldest first, for the body to apply.

    Rows other claimers hold are skipped, so projectors in several gateways share
    the work. A clean exit marks the rows processed; an exception leaves them
    pending with `attempts` raised and `last_error` set, and propagates. A crash
    (or cancellation) after the body applied them but before the commit leaves them
    pending too: applying is idempotent, so the next claimer simply applies again.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    async with store.connection() as conn:
        transaction = conn.transaction()
        await transaction.start()
        ids: list[int] = []
        try:
            rows = await conn.fetch(
                "SELECT id, kind, payload, created_at FROM outbox"
                " WHERE processed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            events = [OutboxEvent(r["id"], r["kind"], r["payload"], r["created_at"]) for r in rows]
            ids = [event.id for event in events]
            yield events
            if ids:
                await conn.execute(
                    "UPDATE outbox SET processed_at = now() WHERE id = ANY($1::bigint[])", ids
                )
        except BaseException as exc:
            try:
                await transaction.rollback()
            except Exception:
                # A broken connection has rolled back already; the pool discards it.
                logger.debug("rollback of an outbox claim failed", exc_info=True)
            # Cancellation says nothing about the rows, so it is not counted against them.
            if ids and isinstance(exc, Exception):
                await _record_failure(conn, ids, exc)
            raise
        else:
            await transaction.commit()


async def _record_failure(conn: PgConnection, ids: list[int], exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH]
    try:
        await conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2"
            " WHERE id = ANY($1::bigint[]) AND processed_at IS NULL",
            ids,
            error,
        )
    except Exception:
        # The original error matters more; the rows stay pending either way.
        logger.warning("could not record the failure of outbox rows %s", ids, exc_info=True)


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    pending: int
    # Seconds since the oldest pending row was written; 0 when none is pending.
    oldest_age_s: float


async def backlog(store: PostgresStore) -> OutboxBacklog:
    """How much is waiting for Neo4j and for how long (for metrics): both read the
    partial index of pending rows."""
    async with store.connection() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM outbox WHERE processed_at IS NULL) AS pending,"
            " coalesce(extract(epoch FROM now() - (SELECT created_at FROM outbox"
            "   WHERE processed_at IS NULL ORDER BY id LIMIT 1)), 0)::float8 AS oldest"
        )
    assert row is not None
    return OutboxBacklog(int(row["pending"]), float(row["oldest"]))


async def pending_count(store: PostgresStore) -> int:
    async with store.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL")
    return count


async def is_processed(store: PostgresStore, outbox_id: int) -> bool:
    """False for a pending row and for an id that does not exist (yet)."""
    return not await unprocessed(store, [outbox_id])


async def unprocessed(store: PostgresStore, outbox_ids: Collection[int]) -> set[int]:
    """Those of `outbox_ids` not applied yet, including ids that do not exist (yet)."""
    async with store.connection() as conn:
        rows = await conn.fetch(
            "SELECT id FROM outbox WHERE id = ANY($1::bigint[]) AND processed_at IS NOT NULL",
            list(outbox_ids),
        )
    return set(outbox_ids) - {row["id"] for row in rows}


async def pending_through(store: PostgresStore, limit: int) -> list[int] | None:
    """The ids of committed rows still pending, oldest first; None when there are more
    than `limit` of them (a backlog no bounded wait would see through)."""
    async with store.connection() as conn:
        rows = await conn.fetch(
            "SELECT id FROM outbox WHERE processed_at IS NULL ORDER BY id LIMIT $1", limit + 1
        )
    if len(rows) > limit:
        return None
    return [row["id"] for row in rows]


async def low_watermark(store: PostgresStore) -> int:
    """The oldest pending id, or one past the newest id when nothing is pending:
    no event below it can still be applied."""
    async with store.connection() as conn:
        mark: int = await conn.fetchval(
            "SELECT coalesce("
            " (SELECT min(id) FROM outbox WHERE processed_at IS NULL),"
            " (SELECT max(id) + 1 FROM outbox), 1)"
        )
    return mark


async def mark_processed_through(store: PostgresStore, outbox_id: int) -> int:
    """Mark every pending row up to `outbox_id` processed (after a rebuild has covered
    them); returns how many. Rows a projector holds are waited for, not skipped."""
    async with store.connection() as conn:
        status: str = await conn.execute(
            "UPDATE outbox SET processed_at = now() WHERE id <= $1 AND processed_at IS NULL",
            outbox_id,
        )
    return int(status.rsplit(" ", 1)[-1])


class OutboxListener(ChannelListener):
    """Calls `on_notify()` for each NOTIFY on the outbox channel, and when its
    connection is lost: either way there may be rows to look at."""

    __slots__ = ()

    def __init__(self, store: PostgresStore, on_notify: Callable[[], None]) -> None:
        super().__init__(
            store,
            OUTBOX_CHANNEL,
            lambda _payload: on_notify(),
            application_name="polygraph-outbox-listener",
            on_lost=on_notify,
        )
