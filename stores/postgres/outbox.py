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
"""

from __future__ import annotations

from typing import Any

from stores.postgres.options import PgConnection

OUTBOX_CHANNEL = "polygraph_outbox"


async def enqueue(conn: PgConnection, kind: str, payload: dict[str, Any]) -> int:
    """Add one change inside the caller's transaction; returns its outbox id.

    The NOTIFY is delivered on commit, waking projectors in every gateway.
    """
    outbox_id: int = await conn.fetchval(
        "WITH row AS (INSERT INTO outbox (kind, payload) VALUES ($1, $2::jsonb) RETURNING id)"
        " SELECT id FROM row, pg_notify($3, '') AS notified",
        kind,
        payload,
        OUTBOX_CHANNEL,
    )
    return outbox_id
