"""Rebuild the Neo4j projection from PostgreSQL (`polygraph graph rebuild`).

The rebuild replays PostgreSQL's current rows as if they were outbox events
carrying the horizon's outbox id, so it goes through the same versioned writes
as the projector and can run while projectors do:

1. Horizon: wait for every transaction writing the outbox to finish, then take
   the newest outbox id, H. Every event up to H is now committed.
2. Export, in one REPEATABLE READ snapshot taken after that: agents, tasks,
   workflows, then relationships and dependencies, in keyset pages. What the
   graph holds at a version below H is overwritten; anything newer is kept.
3. Prune: whatever the export did not confirm (still below H) and PostgreSQL no
   longer has is deleted, again as versioned events at H.
4. Outbox rows up to H are marked processed, and tombstones up to H dropped.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from stores import GraphStore, PostgresStore, StoreUnavailable
from stores.graph import projection
from stores.graph.projection import NodeLabel
from stores.postgres.options import PgConnection
from stores.postgres.outbox import OutboxEvent, mark_processed_through

Progress = Callable[[str, int, int], None]

# gen_random_uuid() never yields the nil UUID, so it sorts before every real id.
_NIL = UUID(int=0)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    horizon: int
    agents: int
    relationships: int
    tasks: int
    dependencies: int
    workflows: int
    removed_nodes: int
    removed_edges: int
    outbox_marked: int
    tombstones_pruned: int
    seconds: float
    knowledge: int = 0
    knowledge_links: int = 0


async def rebuild(
    postgres: PostgresStore,
    graph: GraphStore,
    *,
    progress: Progress | None = None,
    batch_size: int = 1000,
    lock_timeout_s: float = 5.0,
    prune_only: Collection[UUID] | None = None,
) -> RebuildReport:
    """Make the graph agree with PostgreSQL; safe to run while projectors run.

    `progress(phase, done, total)` is called after every page (total is 0 where it is
    not known in advance). `prune_only` limits deletions (of stale nodes, edges and
    tombstones) to those ids, for a Neo4j that other data shares, such as a test
    server; the export and the outbox marking are unaffected.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    report = _Counts()
    say = progress or _silent
    horizon = await _horizon(postgres, lock_timeout_s)
    async with (
        postgres.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        for table in _TABLES:
            exported = await _export(conn, graph, table, horizon, batch_size, say)
            setattr(report, table.phase, exported)
    scope = None if prune_only is None else sorted(str(i) for i in prune_only)
    for target in _PRUNE_TARGETS:
        await _prune(postgres, graph, target, horizon, batch_size, scope, report, say)
    marked = await mark_processed_through(postgres, horizon)
    tombstones = await projection.prune_tombstones(graph, below=horizon + 1, subjects=scope)
    return RebuildReport(
        horizon=horizon,
        agents=report.agents,
        relationships=report.agent_relationships,
        tasks=report.tasks,
        dependencies=report.task_dependencies,
        workflows=report.workflows,
        removed_nodes=report.removed_nodes,
        removed_edges=report.removed_edges,
        outbox_marked=marked,
        tombstones_pruned=tombstones,
        seconds=round(time.perf_counter() - started, 3),
        knowledge=report.knowledge_items,
        knowledge_links=report.knowledge_relations,
    )


@dataclass
class _Counts:
    agents: int = 0
    agent_relationships: int = 0
    tasks: int = 0
    task_dependencies: int = 0
    workflows: int = 0
    removed_nodes: int = 0
    removed_edges: int = 0
    knowledge_items: int = 0
    knowledge_relations: int = 0


def _silent(phase: str, done: int, total: int) -> None:
    pass


async def _horizon(postgres: PostgresStore, lock_timeout_s: float) -> int:
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


@dataclass(frozen=True)
class _Table:
    phase: str
    kind: str
    count: str
    page: str
    start: tuple[Any, ...]
    cursor: Callable[[asyncpg.Record], tuple[Any, ...]]
    payload: Callable[[asyncpg.Record], dict[str, Any]]


def _workflow_payload(row: asyncpg.Record) -> dict[str, Any]:
    # Definitions are stored normalised: {"steps": [{id, name, estimate}], "edges": [{from, to}]}.
    definition = row["definition"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "status": row["status"],
        "steps": definition.get("steps", []),
        "edges": definition.get("edges", []),
    }


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


# Nodes first, so relationships find their endpoints instead of creating stubs.
_TABLES: tuple[_Table, ...] = (
    _Table(
        "agents",
        "agent.upserted",
        "SELECT count(*) FROM agents",
        "SELECT id, name, role, status, parent_id FROM agents WHERE id > $1 ORDER BY id LIMIT $2",
        (_NIL,),
        lambda r: (r["id"],),
        lambda r: {
            "id": str(r["id"]),
            "name": r["name"],
            "role": r["role"],
            "status": r["status"],
            "parent_id": _text(r["parent_id"]),
        },
    ),
    _Table(
        "tasks",
        "task.upserted",
        "SELECT count(*) FROM tasks",
        "SELECT id, title, status, priority, assignee_id, workflow_id FROM tasks"
        " WHERE id > $1 ORDER BY id LIMIT $2",
        (_NIL,),
        lambda r: (r["id"],),
        lambda r: {
            "id": str(r["id"]),
            "title": r["title"],
            "status": r["status"],
            "priority": r["priority"],
            "assignee_id": _text(r["assignee_id"]),
            "workflow_id": _text(r["workflow_id"]),
        },
    ),
    _Table(
        "workflows",
        "workflow.upserted",
        "SELECT count(*) FROM workflows",
        "SELECT id, name, status, definition FROM workflows WHERE id > $1 ORDER BY id LIMIT $2",
        (_NIL,),
        lambda r: (r["id"],),
        _workflow_payload,
    ),
    _Table(
        "agent_relationships",
        "agent.related",
        "SELECT count(*) FROM agent_relationships",
        "SELECT source_id, target_id, type, weight FROM agent_relationships"
        " WHERE (source_id, target_id, type) > ($1, $2, $3)"
        " ORDER BY source_id, target_id, type LIMIT $4",
        (_NIL, _NIL, ""),
        lambda r: (r["source_id"], r["target_id"], r["type"]),
        lambda r: {
            "source_id": str(r["source_id"]),
            "target_id": str(r["target_id"]),
            "type": r["type"],
            "weight": r["weight"],
        },
    ),
    _Table(
        "task_dependencies",
        "task.dependency_added",
        "SELECT count(*) FROM task_dependencies",
        "SELECT task_id, depends_on_id FROM task_dependencies"
        " WHERE (task_id, depends_on_id) > ($1, $2) ORDER BY task_id, depends_on_id LIMIT $3",
        (_NIL, _NIL),
        lambda r: (r["task_id"], r["depends_on_id"]),
        lambda r: {"task_id": str(r["task_id"]), "depends_on_id": str(r["depends_on_id"])},
    ),
    _Table(
        "knowledge_items",
        "knowledge.upserted",
        "SELECT count(*) FROM knowledge_items",
        "SELECT id, title, source, tags FROM knowledge_items WHERE id > $1 ORDER BY id LIMIT $2",
        (_NIL,),
        lambda r: (r["id"],),
        lambda r: {
            "id": str(r["id"]),
            "title": r["title"],
            "source": r["source"],
            "tags": list(r["tags"]),
        },
    ),
    _Table(
        "knowledge_relations",
        "knowledge.related",
        "SELECT count(*) FROM knowledge_relations",
        "SELECT source_id, target_id, type FROM knowledge_relations"
        " WHERE (source_id, target_id, type) > ($1, $2, $3)"
        " ORDER BY source_id, target_id, type LIMIT $4",
        (_NIL, _NIL, ""),
        lambda r: (r["source_id"], r["target_id"], r["type"]),
        lambda r: {
            "source_id": str(r["source_id"]),
            "target_id": str(r["target_id"]),
            "type": r["type"],
        },
    ),
)


async def _export(
    conn: PgConnection,
    graph: GraphStore,
    table: _Table,
    horizon: int,
    batch_size: int,
    say: Progress,
) -> int:
    # Workflow definitions can be large; keep their pages small.
    limit = max(1, batch_size // 10) if table.kind == "workflow.upserted" else batch_size
    total: int = await conn.fetchval(table.count)
    done = 0
    cursor = table.start
    while True:
        rows = await conn.fetch(table.page, *cursor, limit)
        if not rows:
            return done
        now = datetime.now(UTC)
        events = [OutboxEvent(horizon, table.kind, table.payload(r), now) for r in rows]
        await projection.apply(graph, events)
        done += len(rows)
        say(table.phase, done, total)
        cursor = table.cursor(rows[-1])


@dataclass(frozen=True)
class _PruneTarget:
    label: NodeLabel
    delete_kind: str
    exists: str
    edges: str | None = None
    edge_kind: str | None = None
    edge_payload: Callable[[str, str, str], dict[str, Any]] | None = None


_PRUNE_TARGETS: tuple[_PruneTarget, ...] = (
    _PruneTarget(
        NodeLabel.AGENT,
        "agent.deleted",
        "SELECT id FROM agents WHERE id = ANY($1::uuid[])",
        "SELECT type, source_id, target_id FROM agent_relationships"
        " WHERE source_id = ANY($1::uuid[])",
        "agent.unrelated",
        lambda t, s, d: {"type": t, "source_id": s, "target_id": d},
    ),
    _PruneTarget(
        NodeLabel.TASK,
        "task.deleted",
        "SELECT id FROM tasks WHERE id = ANY($1::uuid[])",
        "SELECT 'DEPENDS_ON' AS type, task_id AS source_id, depends_on_id AS target_id"
        " FROM task_dependencies WHERE task_id = ANY($1::uuid[])",
        "task.dependency_removed",
        lambda t, s, d: {"task_id": s, "depends_on_id": d},
    ),
    _PruneTarget(
        NodeLabel.WORKFLOW,
        "workflow.deleted",
        "SELECT id FROM workflows WHERE id = ANY($1::uuid[])",
    ),
    _PruneTarget(
        NodeLabel.KNOWLEDGE,
        "knowledge.deleted",
        "SELECT id FROM knowledge_items WHERE id = ANY($1::uuid[])",
        "SELECT type, source_id, target_id FROM knowledge_relations"
        " WHERE source_id = ANY($1::uuid[])",
        "knowledge.unrelated",
        lambda t, s, d: {"type": t, "source_id": s, "target_id": d},
    ),
)


async def _pages(
    graph: GraphStore, label: NodeLabel, horizon: int, batch_size: int, scope: Sequence[str] | None
) -> AsyncIterator[projection.ProjectedPage]:
    if scope is not None:
        for start in range(0, len(scope), batch_size):
            chunk = scope[start : start + batch_size]
            yield await projection.page_projection(
                graph, label, below=horizon, among=chunk, limit=batch_size
            )
        return
    after = ""
    while True:
        page = await projection.page_projection(
            graph, label, below=horizon, after=after, limit=batch_size
        )
        if not page.ids:
            return
        yield page
        after = page.ids[-1]


async def _prune(
    postgres: PostgresStore,
    graph: GraphStore,
    target: _PruneTarget,
    horizon: int,
    batch_size: int,
    scope: Sequence[str] | None,
    report: _Counts,
    say: Progress,
) -> None:
    # Checked against PostgreSQL as it is now, not the export's snapshot: a node
    # created since then is not stale, its own (newer) event is on its way.
    checked = 0
    async for page in _pages(graph, target.label, horizon, batch_size, scope):
        sources = {source for _, source, _ in page.stale_edges}
        candidates = {i: _uuid(i) for i in {*page.stale_nodes, *sources}}
        async with postgres.connection() as conn:
            rows = await conn.fetch(target.exists, [u for u in candidates.values() if u])
            present = {str(r["id"]) for r in rows}
            kept: set[tuple[str, str, str]] = set()
            if target.edges is not None and page.stale_edges:
                source_ids = [u for s in sources if (u := candidates[s])]
                edge_rows = await conn.fetch(target.edges, source_ids)
                kept = {(r["type"], str(r["source_id"]), str(r["target_id"])) for r in edge_rows}
        now = datetime.now(UTC)
        # Ids that are not UUIDs were never written by the projection; leave them be.
        gone = [i for i in page.stale_nodes if i not in present and candidates[i] is not None]
        events = [OutboxEvent(horizon, target.delete_kind, {"id": i}, now) for i in gone]
        stale_edges = [e for e in page.stale_edges if e[1] in present and e not in kept]
        if target.edge_kind is not None and target.edge_payload is not None:
            events += [
                OutboxEvent(horizon, target.edge_kind, target.edge_payload(*e), now)
                for e in stale_edges
            ]
        await projection.apply(graph, events)
        report.removed_nodes += len(gone)
        report.removed_edges += len(stale_edges)
        checked += len(page.ids)
        say(f"prune {target.label.value}", checked, 0)


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None
