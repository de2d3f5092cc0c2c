"""What a graph rebuild reads from PostgreSQL: the outbox horizon, the projected
tables in keyset pages from one snapshot, and which ids and edges still exist.

Records carry only the columns the projection uses (`stores/postgres/outbox.py`
lists the payloads they become).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

import asyncpg

from stores.errors import StoreUnavailable
from stores.postgres.options import PgConnection
from stores.postgres.records import JSON

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

# gen_random_uuid() never yields the nil UUID, so it sorts before every real id.
_NIL = UUID(int=0)


@dataclass(frozen=True, slots=True)
class AgentNode:
    id: UUID
    name: str
    role: str
    status: str
    parent_id: UUID | None


@dataclass(frozen=True, slots=True)
class TaskNode:
    id: UUID
    title: str
    status: str
    priority: int
    assignee_id: UUID | None
    workflow_id: UUID | None


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    id: UUID
    name: str
    status: str
    # Stored normalised: {"steps": [{id, name, estimate}], "edges": [{from, to}]}.
    definition: JSON


@dataclass(frozen=True, slots=True)
class KnowledgeNode:
    id: UUID
    title: str
    source: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NegotiationNode:
    """A resolved negotiation, with the agents that took part and the tasks it concerns."""

    id: UUID
    title: str
    resolution: str
    agent_ids: tuple[UUID, ...]
    task_ids: tuple[UUID, ...]


@dataclass(frozen=True, slots=True)
class AgentEdge:
    source_id: UUID
    target_id: UUID
    type: str
    weight: float


@dataclass(frozen=True, slots=True)
class TaskDependencyEdge:
    task_id: UUID
    depends_on_id: UUID


@dataclass(frozen=True, slots=True)
class KnowledgeEdge:
    source_id: UUID
    target_id: UUID
    type: str


R = TypeVar("R")


@dataclass(frozen=True)
class Export(Generic[R]):
    """One projected table, read in keyset order."""

    count_sql: str
    page_sql: str
    start: tuple[Any, ...]
    cursor: Callable[[R], tuple[Any, ...]]
    record: Callable[[asyncpg.Record], R]
    # Rows are large (workflow definitions): pages hold this fraction of a batch.
    page_share: int = 1


AGENTS: Export[AgentNode] = Export(
    "SELECT count(*) FROM agents",
    "SELECT id, name, role, status, parent_id FROM agents WHERE id > $1 ORDER BY id LIMIT $2",
    (_NIL,),
    lambda r: (r.id,),
    lambda row: AgentNode(**dict(row)),
)
TASKS: Export[TaskNode] = Export(
    "SELECT count(*) FROM tasks",
    "SELECT id, title, status, priority, assignee_id, workflow_id FROM tasks"
    " WHERE id > $1 ORDER BY id LIMIT $2",
    (_NIL,),
    lambda r: (r.id,),
    lambda row: TaskNode(**dict(row)),
)
WORKFLOWS: Export[WorkflowNode] = Export(
    "SELECT count(*) FROM workflows",
    "SELECT id, name, status, definition FROM workflows WHERE id > $1 ORDER BY id LIMIT $2",
    (_NIL,),
    lambda r: (r.id,),
    lambda row: WorkflowNode(**dict(row)),
    page_share=10,
)
AGENT_EDGES: Export[AgentEdge] = Export(
    "SELECT count(*) FROM agent_relationships",
    "SELECT source_id, target_id, type, weight FROM agent_relationships"
    " WHERE (source_id, target_id, type) > ($1, $2, $3)"
    " ORDER BY source_id, target_id, type LIMIT $4",
    (_NIL, _NIL, ""),
    lambda r: (r.source_id, r.target_id, r.type),
    lambda row: AgentEdge(**dict(row)),
)
TASK_DEPENDENCIES: Export[TaskDependencyEdge] = Export(
    "SELECT count(*) FROM task_dependencies",
    "SELECT task_id, depends_on_id FROM task_dependencies"
    " WHERE (task_id, depends_on_id) > ($1, $2) ORDER BY task_id, depends_on_id LIMIT $3",
    (_NIL, _NIL),
    lambda r: (r.task_id, r.depends_on_id),
    lambda row: TaskDependencyEdge(**dict(row)),
)
KNOWLEDGE: Export[KnowledgeNode] = Export(
    "SELECT count(*) FROM knowledge_items",
    "SELECT id, title, source, tags FROM knowledge_items WHERE id > $1 ORDER BY id LIMIT $2",
    (_NIL,),
    lambda r: (r.id,),
    lambda row: KnowledgeNode(row["id"], row["title"], row["source"], tuple(row["tags"])),
)
NEGOTIATIONS: Export[NegotiationNode] = Export(
    "SELECT count(*) FROM conversations WHERE state = 'resolved'",
    "SELECT c.id, c.title, coalesce(c.resolution, '') AS resolution,"
    " ARRAY(SELECT p.agent_id FROM conversation_participants AS p"
    "   WHERE p.conversation_id = c.id AND p.agent_id IS NOT NULL ORDER BY p.agent_id)"
    "   AS agent_ids,"
    " ARRAY(SELECT t.task_id FROM conversation_tasks AS t"
    "   WHERE t.conversation_id = c.id ORDER BY t.task_id) AS task_ids"
    " FROM conversations AS c WHERE c.state = 'resolved' AND c.id > $1 ORDER BY c.id LIMIT $2",
    (_NIL,),
    lambda r: (r.id,),
    lambda row: NegotiationNode(
        row["id"],
        row["title"],
        row["resolution"],
        tuple(row["agent_ids"]),
        tuple(row["task_ids"]),
    ),
)
KNOWLEDGE_EDGES: Export[KnowledgeEdge] = Export(
    "SELECT count(*) FROM knowledge_relations",
    "SELECT source_id, target_id, type FROM knowledge_relations"
    " WHERE (source_id, target_id, type) > ($1, $2, $3)"
    " ORDER BY source_id, target_id, type LIMIT $4",
    (_NIL, _NIL, ""),
    lambda r: (r.source_id, r.target_id, r.type),
    lambda row: KnowledgeEdge(**dict(row)),
)


async def outbox_horizon(postgres: PostgresStore, lock_timeout_s: float) -> int:
    """The newest outbox id, once every transaction writing the outbox has finished:
    every event up to it is then committed (or rolled back)."""
    # SHARE conflicts with the ROW EXCLUSIVE lock every outbox writer holds until it
    # commits, so taking it waits out the writers in flight; ids handed out before
    # the max() below are then all committed (or rolled back). New writers queue
    # behind the lock only for that wait, bounded by lock_timeout.
    async with postgres.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('lock_timeout', $1, true)", f"{int(lock_timeout_s * 1000)}ms"
        )
        try:
            await conn.execute("LOCK TABLE outbox IN SHARE MODE")
        except asyncpg.LockNotAvailableError as exc:
            raise StoreUnavailable(
                "postgres",
                f"outbox writers did not finish within {lock_timeout_s:g}s; retry the rebuild",
            ) from exc
        horizon: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    return horizon


class Snapshot:
    """The projected tables as of one moment: a read-only REPEATABLE READ transaction."""

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    async def count(self, export: Export[Any]) -> int:
        total: int = await self._conn.fetchval(export.count_sql)
        return total

    async def pages(self, export: Export[R], batch_size: int) -> AsyncIterator[list[R]]:
        """Every row of `export`, `batch_size` at a time (fewer for large rows)."""
        limit = max(1, batch_size // export.page_share)
        cursor = export.start
        while True:
            rows = await self._conn.fetch(export.page_sql, *cursor, limit)
            if not rows:
                return
            records = [export.record(row) for row in rows]
            yield records
            cursor = export.cursor(records[-1])


@asynccontextmanager
async def snapshot(postgres: PostgresStore) -> AsyncIterator[Snapshot]:
    async with (
        postgres.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        yield Snapshot(conn)


@dataclass(frozen=True)
class NodeTable:
    """Where a projected node, and the edges it starts, live in PostgreSQL."""

    exists_sql: str
    edges_sql: str | None = None


AGENT_NODES = NodeTable(
    "SELECT id FROM agents WHERE id = ANY($1::uuid[])",
    "SELECT type, source_id, target_id FROM agent_relationships WHERE source_id = ANY($1::uuid[])",
)
TASK_NODES = NodeTable(
    "SELECT id FROM tasks WHERE id = ANY($1::uuid[])",
    "SELECT 'DEPENDS_ON' AS type, task_id AS source_id, depends_on_id AS target_id"
    " FROM task_dependencies WHERE task_id = ANY($1::uuid[])",
)
WORKFLOW_NODES = NodeTable("SELECT id FROM workflows WHERE id = ANY($1::uuid[])")
KNOWLEDGE_NODES = NodeTable(
    "SELECT id FROM knowledge_items WHERE id = ANY($1::uuid[])",
    "SELECT type, source_id, target_id FROM knowledge_relations WHERE source_id = ANY($1::uuid[])",
)


@dataclass(frozen=True, slots=True)
class Existing:
    """Of the ids asked about, those PostgreSQL has now, and the edges they start."""

    ids: frozenset[UUID]
    # (type, source_id, target_id)
    edges: frozenset[tuple[str, UUID, UUID]]


async def existing(
    postgres: PostgresStore,
    nodes: NodeTable,
    ids: Collection[UUID],
    edges_from: Collection[UUID] = (),
) -> Existing:
    """Which of `ids` exist, and (when the table has edges and `edges_from` is given)
    every edge starting at one of `edges_from`; read as PostgreSQL is now."""
    async with postgres.connection() as conn:
        rows = await conn.fetch(nodes.exists_sql, list(ids))
        edges: frozenset[tuple[str, UUID, UUID]] = frozenset()
        if nodes.edges_sql is not None and edges_from:
            edge_rows = await conn.fetch(nodes.edges_sql, list(edges_from))
            edges = frozenset((r["type"], r["source_id"], r["target_id"]) for r in edge_rows)
    return Existing(frozenset(row["id"] for row in rows), edges)
