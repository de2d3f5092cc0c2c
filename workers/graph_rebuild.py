"""Rebuild the Neo4j projection from PostgreSQL (`polygraph graph rebuild`).

The rebuild replays PostgreSQL's current rows as if they were outbox events
carrying the horizon's outbox id, so it goes through the same versioned writes
as the projector and can run while projectors do:

1. Horizon: wait for every transaction writing the outbox to finish, then take
   the newest outbox id, H. Every event up to H is now committed.
2. Export, in one REPEATABLE READ snapshot taken after that: agents, tasks,
   workflows, then relationships and dependencies, knowledge, and resolved
   negotiations, in keyset pages. What the
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
from typing import Any, Generic, TypeVar
from uuid import UUID

from stores import GraphStore, PostgresStore
from stores.graph import projection
from stores.graph.projection import NodeLabel
from stores.postgres import rebuild as source
from stores.postgres.outbox import OutboxEvent, mark_processed_through

Progress = Callable[[str, int, int], None]


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
    negotiations: int = 0


REBUILD_JOB = "graph rebuild"


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
    # Two at once would each prune what the other has not exported yet.
    async with postgres.exclusive_job(REBUILD_JOB):
        return await _rebuild(
            postgres,
            graph,
            say=progress or _silent,
            batch_size=batch_size,
            lock_timeout_s=lock_timeout_s,
            prune_only=prune_only,
        )


async def _rebuild(
    postgres: PostgresStore,
    graph: GraphStore,
    *,
    say: Progress,
    batch_size: int,
    lock_timeout_s: float,
    prune_only: Collection[UUID] | None,
) -> RebuildReport:
    started = time.perf_counter()
    report = _Counts()
    horizon = await source.outbox_horizon(postgres, lock_timeout_s)
    async with source.snapshot(postgres) as snapshot:
        for table in _TABLES:
            exported = await _export(snapshot, graph, table, horizon, batch_size, say)
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
        negotiations=report.negotiations,
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
    negotiations: int = 0


def _silent(phase: str, done: int, total: int) -> None:
    pass


R = TypeVar("R")


@dataclass(frozen=True)
class _Table(Generic[R]):
    phase: str
    kind: str
    export: source.Export[R]
    payload: Callable[[R], dict[str, Any]]


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _agent(r: source.AgentNode) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "role": r.role,
        "status": r.status,
        "parent_id": _text(r.parent_id),
    }


def _task(r: source.TaskNode) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "title": r.title,
        "status": r.status,
        "priority": r.priority,
        "assignee_id": _text(r.assignee_id),
        "workflow_id": _text(r.workflow_id),
    }


def _workflow(r: source.WorkflowNode) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "status": r.status,
        "steps": r.definition.get("steps", []),
        "edges": r.definition.get("edges", []),
    }


def _agent_edge(r: source.AgentEdge) -> dict[str, Any]:
    return {
        "source_id": str(r.source_id),
        "target_id": str(r.target_id),
        "type": r.type,
        "weight": r.weight,
    }


def _task_dependency(r: source.TaskDependencyEdge) -> dict[str, Any]:
    return {"task_id": str(r.task_id), "depends_on_id": str(r.depends_on_id)}


def _knowledge(r: source.KnowledgeNode) -> dict[str, Any]:
    return {"id": str(r.id), "title": r.title, "source": r.source, "tags": list(r.tags)}


def _knowledge_edge(r: source.KnowledgeEdge) -> dict[str, Any]:
    return {"source_id": str(r.source_id), "target_id": str(r.target_id), "type": r.type}


def _negotiation(r: source.NegotiationNode) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "title": r.title,
        "resolution": r.resolution,
        "agent_ids": [str(a) for a in r.agent_ids],
        "task_ids": [str(t) for t in r.task_ids],
    }


# Nodes first, so relationships find their endpoints instead of creating stubs.
_TABLES: tuple[_Table[Any], ...] = (
    _Table("agents", "agent.upserted", source.AGENTS, _agent),
    _Table("tasks", "task.upserted", source.TASKS, _task),
    _Table("workflows", "workflow.upserted", source.WORKFLOWS, _workflow),
    _Table("agent_relationships", "agent.related", source.AGENT_EDGES, _agent_edge),
    _Table(
        "task_dependencies",
        "task.dependency_added",
        source.TASK_DEPENDENCIES,
        _task_dependency,
    ),
    _Table("knowledge_items", "knowledge.upserted", source.KNOWLEDGE, _knowledge),
    _Table("knowledge_relations", "knowledge.related", source.KNOWLEDGE_EDGES, _knowledge_edge),
    # After agents and tasks: a resolution links to them. Resolutions are final, so
    # there is nothing of theirs to prune.
    _Table("negotiations", "negotiation.resolved", source.NEGOTIATIONS, _negotiation),
)


async def _export(
    snapshot: source.Snapshot,
    graph: GraphStore,
    table: _Table[Any],
    horizon: int,
    batch_size: int,
    say: Progress,
) -> int:
    total = await snapshot.count(table.export)
    done = 0
    async for rows in snapshot.pages(table.export, batch_size):
        now = datetime.now(UTC)
        events = [OutboxEvent(horizon, table.kind, table.payload(r), now) for r in rows]
        await projection.apply(graph, events)
        done += len(rows)
        say(table.phase, done, total)
    return done


@dataclass(frozen=True)
class _PruneTarget:
    label: NodeLabel
    delete_kind: str
    nodes: source.NodeTable
    edge_kind: str | None = None
    edge_payload: Callable[[str, str, str], dict[str, Any]] | None = None


_PRUNE_TARGETS: tuple[_PruneTarget, ...] = (
    _PruneTarget(
        NodeLabel.AGENT,
        "agent.deleted",
        source.AGENT_NODES,
        "agent.unrelated",
        lambda t, s, d: {"type": t, "source_id": s, "target_id": d},
    ),
    _PruneTarget(
        NodeLabel.TASK,
        "task.deleted",
        source.TASK_NODES,
        "task.dependency_removed",
        lambda t, s, d: {"task_id": s, "depends_on_id": d},
    ),
    _PruneTarget(NodeLabel.WORKFLOW, "workflow.deleted", source.WORKFLOW_NODES),
    _PruneTarget(
        NodeLabel.KNOWLEDGE,
        "knowledge.deleted",
        source.KNOWLEDGE_NODES,
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
        found = await source.existing(
            postgres,
            target.nodes,
            [u for u in candidates.values() if u],
            edges_from=[u for s in sources if (u := candidates[s])] if page.stale_edges else (),
        )
        present = {str(i) for i in found.ids}
        kept = {(t, str(s), str(d)) for t, s, d in found.edges}
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
