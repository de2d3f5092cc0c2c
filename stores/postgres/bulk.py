"""Bulk loading through COPY, for seeding demo and benchmark data.

Each call runs in one transaction. Task rows get their `created` event in the
same transaction, so the event-sourcing invariant (a task's row equals the replay
of its events) holds for seeded tasks too. Bulk loads do not go through the
outbox: `polygraph graph rebuild` projects them into Neo4j afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from stores.postgres.records import Agent, AgentRelationship, Task
from stores.postgres.store import PostgresStore
from stores.postgres.task_events import TASK_COLUMNS

_AGENT_COLUMNS = (
    "id", "name", "role", "status", "capabilities", "tags", "notes", "metadata", "parent_id",
    "created_at", "updated_at", "version",
)  # fmt: skip
_TASK_COLUMNS = ("id", *TASK_COLUMNS, "created_at", "updated_at", "version")


async def copy_agents(store: PostgresStore, agents: Sequence[Agent]) -> int:
    """Parents must come before their children in `agents` (the foreign key checks each row)."""
    rows = [
        (
            a.id,
            a.name,
            a.role,
            a.status,
            list(a.capabilities),
            list(a.tags),
            a.notes,
            a.metadata,
            a.parent_id,
            a.created_at,
            a.updated_at,
            a.version,
        )
        for a in agents
    ]
    async with store.connection() as conn, conn.transaction():
        await conn.copy_records_to_table("agents", records=rows, columns=_AGENT_COLUMNS)
    return len(rows)


async def copy_relationships(store: PostgresStore, links: Sequence[AgentRelationship]) -> int:
    rows = [(r.source_id, r.target_id, r.type, r.weight, r.created_at) for r in links]
    async with store.connection() as conn, conn.transaction():
        await conn.copy_records_to_table(
            "agent_relationships",
            records=rows,
            columns=("source_id", "target_id", "type", "weight", "created_at"),
        )
    return len(rows)


async def copy_tasks(store: PostgresStore, tasks: Sequence[Task]) -> int:
    """Tasks with version 1 and their `created` events, which hold every column."""
    rows = [tuple(getattr(task, column) for column in _TASK_COLUMNS) for task in tasks]
    async with store.connection() as conn, conn.transaction():
        await conn.copy_records_to_table("tasks", records=rows, columns=_TASK_COLUMNS)
        await conn.execute(
            "INSERT INTO task_events (task_id, version, type, data, actor_id, created_at)"
            " SELECT t.id, t.version, 'created',"
            " (SELECT jsonb_object_agg(key, value) FROM jsonb_each(to_jsonb(t))"
            "  WHERE key = ANY($2::text[])),"
            " t.creator_id, t.created_at"
            " FROM tasks t WHERE t.id = ANY($1::uuid[])",
            [task.id for task in tasks],
            list(TASK_COLUMNS),
        )
    return len(rows)


async def copy_dependencies(store: PostgresStore, edges: Sequence[tuple[object, object]]) -> int:
    """`(task_id, depends_on_id)` pairs; the caller guarantees they form a DAG."""
    async with store.connection() as conn, conn.transaction():
        await conn.copy_records_to_table(
            "task_dependencies", records=list(edges), columns=("task_id", "depends_on_id")
        )
    return len(edges)


async def table_counts(store: PostgresStore) -> dict[str, int]:
    async with store.connection() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM agents) AS agents,"
            " (SELECT count(*) FROM tasks) AS tasks,"
            " (SELECT count(*) FROM agent_relationships) AS relationships,"
            " (SELECT count(*) FROM task_dependencies) AS dependencies"
        )
    assert row is not None
    return dict(row)


async def agent_ids(store: PostgresStore) -> list[UUID]:
    """Every agent's id, in id order: the agents seeded metric points are drawn for."""
    async with store.connection() as conn:
        rows = await conn.fetch("SELECT id FROM agents ORDER BY id")
    return [row["id"] for row in rows]
