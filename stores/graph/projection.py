"""Applies outbox events to the Neo4j projection.

Projectors in several gateways share the outbox, so events can reach Neo4j out
of order, and a batch applied just before a crash is applied again. Every write
therefore compares versions: a node or relationship remembers in `outbox_id`
the newest event applied to it and ignores older ones, and a deletion leaves a
`:Tombstone {key, outbox_id}` so that an older upsert or relate arriving after
it cannot bring the deleted thing back. That makes the order of events, and of
kinds within a batch, irrelevant to the result.

Relationship events create missing endpoints as bare stubs (id only, no
`outbox_id`); the endpoint's own upsert fills them in when it arrives.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import neo4j
from neo4j import AsyncManagedTransaction

from stores import roundtrips
from stores.graph import tracing
from stores.graph.queries import translate_errors
from stores.postgres.outbox import OutboxEvent

if TYPE_CHECKING:
    from stores.graph.store import GraphStore

logger = logging.getLogger(__name__)

_STORE = "neo4j"
_AGENT_EDGE_TYPES = ("COLLABORATES_WITH", "DELEGATES_TO")
_KNOWLEDGE_EDGE_TYPES = ("RELATES_TO", "SUPPORTS", "CONTRADICTS")
_TOMBSTONE_PRUNE_CHUNK = 5000

Row = dict[str, Any]


class NodeLabel(enum.StrEnum):
    """The labels the projection owns and a rebuild may remove nodes from."""

    AGENT = "Agent"
    TASK = "Task"
    WORKFLOW = "Workflow"
    KNOWLEDGE = "Knowledge"


@dataclass(frozen=True, slots=True)
class ProjectedPage:
    """One page of projected nodes of a label, as a rebuild sees them."""

    ids: list[str]
    # Nodes and outgoing relationships the projection holds at a version below the
    # rebuild's horizon: the rebuild did not confirm them, so they may be gone.
    stale_nodes: list[str]
    stale_edges: list[tuple[str, str, str]]  # (type, source id, target id)


async def apply(graph: GraphStore, events: Sequence[OutboxEvent]) -> None:
    """Apply a batch in one write transaction: one statement per kind, over all of
    that kind's events (UNWIND). Malformed or unknown events are logged and skipped,
    so one bad row cannot hold the outbox up forever."""
    statements = _statements_for(events)
    if not statements:
        return
    timeout = graph.query_timeout
    with tracing.span("project", "; ".join(text for text, _ in statements)):
        async with graph.session() as session, translate_errors(timeout):
            work = neo4j.unit_of_work(timeout=timeout)(_run_all)
            await session.execute_write(work, statements)
    roundtrips.record(_STORE, len(statements))


async def page_projection(
    graph: GraphStore,
    label: NodeLabel,
    *,
    below: int,
    after: str = "",
    among: Sequence[str] | None = None,
    limit: int = 1000,
) -> ProjectedPage:
    """Nodes of `label` ordered by id (those with ids after `after`, or just those in
    `among`), flagging what sits at a version below `below`."""
    text = _PAGE_AMONG[label] if among is not None else _PAGE_AFTER[label]
    rows = await _run_one(
        graph, text, {"below": below, "after": after, "among": list(among or []), "limit": limit}
    )
    return ProjectedPage(
        ids=[row["id"] for row in rows],
        stale_nodes=[row["id"] for row in rows if row["stale"]],
        stale_edges=[(t, row["id"], target) for row in rows for t, target in row["edges"]],
    )


async def prune_tombstones(
    graph: GraphStore,
    *,
    below: int,
    subjects: Sequence[str] | None = None,
    older_than_s: float = 0.0,
) -> int:
    """Delete tombstones older than outbox id `below` (and `older_than_s` seconds);
    safe once no event below `below` can still be applied. `subjects` limits it to
    the tombstones of those ids. Returns how many went."""
    params = {"below": below, "age": older_than_s, "subjects": list(subjects or [])}
    if subjects is not None:
        rows = await _run_one(graph, _PRUNE_TOMBSTONES_OF, params)
        return int(rows[0]["deleted"])
    total = 0
    while True:
        rows = await _run_one(graph, _PRUNE_TOMBSTONES, {**params, "chunk": _TOMBSTONE_PRUNE_CHUNK})
        deleted = int(rows[0]["deleted"])
        total += deleted
        if deleted < _TOMBSTONE_PRUNE_CHUNK:
            return total


async def clear_projection(graph: GraphStore, *, subjects: Sequence[str] | None = None) -> int:
    """Delete every projected node and tombstone (or only those of `subjects`), before
    a rebuild after a restore: the graph may hold versions newer than the restored
    outbox, which a rebuild would otherwise keep. Returns how many nodes went."""
    if subjects is not None:
        rows = await _run_one(graph, _CLEAR_SUBJECTS, {"subjects": list(subjects)})
        return int(rows[0]["deleted"])
    total = 0
    while True:
        rows = await _run_one(graph, _CLEAR_ALL, {"chunk": _TOMBSTONE_PRUNE_CHUNK})
        deleted = int(rows[0]["deleted"])
        total += deleted
        if deleted < _TOMBSTONE_PRUNE_CHUNK:
            return total


async def _run_all(tx: AsyncManagedTransaction, statements: list[tuple[str, list[Row]]]) -> None:
    for text, rows in statements:
        result = await tx.run(text, rows=rows)
        await result.consume()


async def _fetch_all(
    tx: AsyncManagedTransaction, text: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    result = await tx.run(text, params)
    return await result.data()


async def _run_one(graph: GraphStore, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    timeout = graph.query_timeout
    roundtrips.record(_STORE)
    with tracing.span("write", text):
        async with graph.session() as session, translate_errors(timeout):
            work = neo4j.unit_of_work(timeout=timeout)(_fetch_all)
            return await session.execute_write(work, text, params)


def _statements_for(events: Sequence[OutboxEvent]) -> list[tuple[str, list[Row]]]:
    rows_by_kind: dict[str, list[Row]] = {}
    for event in sorted(events, key=lambda e: e.id):
        builder = _ROW_BUILDERS.get(event.kind)
        if builder is None:
            logger.warning("outbox row %d has unknown kind %r; skipped", event.id, event.kind)
            continue
        try:
            row = builder(event.payload)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.error(
                "outbox row %d (%s) is malformed and was skipped: %r", event.id, event.kind, exc
            )
            continue
        row["oid"] = event.id
        rows_by_kind.setdefault(event.kind, []).append(row)
    return [(_STATEMENTS[kind], rows_by_kind[kind]) for kind in _STATEMENTS if kind in rows_by_kind]


# Payload -> statement parameters. Ids are normalised through UUID so that the
# same id always projects to the same string, whoever wrote the payload.


def _id(value: object) -> str:
    return str(UUID(str(value)))


def _optional_id(value: object) -> str | None:
    return None if value is None else _id(value)


def _key(kind: str, *ids: str) -> str:
    """Tombstone key: the node kind or relationship type, then the ids."""
    return ":".join((kind, *ids))


def _optional_key(kind: str, entity_id: str | None) -> str | None:
    return None if entity_id is None else _key(kind, entity_id)


def _agent_row(p: dict[str, Any]) -> Row:
    agent_id, parent_id = _id(p["id"]), _optional_id(p.get("parent_id"))
    return {
        "id": agent_id,
        "key": _key("agent", agent_id),
        "name": str(p["name"]),
        "role": str(p["role"]),
        "status": str(p["status"]),
        "parent_id": parent_id,
        "parent_key": _optional_key("agent", parent_id),
    }


def _task_row(p: dict[str, Any]) -> Row:
    task_id, assignee_id = _id(p["id"]), _optional_id(p.get("assignee_id"))
    return {
        "id": task_id,
        "key": _key("task", task_id),
        "title": str(p["title"]),
        "status": str(p["status"]),
        "priority": int(p["priority"]),
        "assignee_id": assignee_id,
        "assignee_key": _optional_key("agent", assignee_id),
    }


def _workflow_row(p: dict[str, Any]) -> Row:
    workflow_id = _id(p["id"])
    steps = [
        {
            "id": str(step["id"]),
            "key": f"{workflow_id}:{step['id']}",
            "name": None if step.get("name") is None else str(step["name"]),
            "estimate": float(step.get("estimate") or 0.0),
        }
        for step in p.get("steps") or []
    ]
    edges = [
        {"from": f"{workflow_id}:{edge['from']}", "to": f"{workflow_id}:{edge['to']}"}
        for edge in p.get("edges") or []
    ]
    return {
        "id": workflow_id,
        "key": _key("workflow", workflow_id),
        "name": str(p["name"]),
        "status": str(p["status"]),
        "steps": steps,
        "step_ids": [step["id"] for step in steps],
        "edges": edges,
    }


def _deleted_row(kind: str) -> Callable[[dict[str, Any]], Row]:
    def build(p: dict[str, Any]) -> Row:
        entity_id = _id(p["id"])
        return {"id": entity_id, "key": _key(kind, entity_id)}

    return build


def _relation_row(p: dict[str, Any]) -> Row:
    source, target, edge_type = _id(p["source_id"]), _id(p["target_id"]), str(p["type"])
    if edge_type not in _AGENT_EDGE_TYPES:
        raise ValueError(f"relationship type {edge_type!r} is not projected")
    return {
        "source_id": source,
        "target_id": target,
        "type": edge_type,
        "weight": float(p.get("weight", 1.0)),
        "key": _key(edge_type, source, target),
        "endpoint_keys": [_key("agent", source), _key("agent", target)],
    }


def _dependency_row(p: dict[str, Any]) -> Row:
    task, depends_on = _id(p["task_id"]), _id(p["depends_on_id"])
    return {
        "task_id": task,
        "depends_on_id": depends_on,
        "key": _key("DEPENDS_ON", task, depends_on),
        "endpoint_keys": [_key("task", task), _key("task", depends_on)],
    }


def _knowledge_row(p: dict[str, Any]) -> Row:
    item_id = _id(p["id"])
    return {
        "id": item_id,
        "key": _key("knowledge", item_id),
        "title": str(p["title"]),
        "source": str(p.get("source") or ""),
        "tags": [str(tag) for tag in p.get("tags") or []],
    }


def _knowledge_relation_row(p: dict[str, Any]) -> Row:
    source, target, edge_type = _id(p["source_id"]), _id(p["target_id"]), str(p["type"])
    if edge_type not in _KNOWLEDGE_EDGE_TYPES:
        raise ValueError(f"knowledge relationship type {edge_type!r} is not projected")
    return {
        "source_id": source,
        "target_id": target,
        "type": edge_type,
        "key": _key(edge_type, source, target),
        "endpoint_keys": [_key("knowledge", source), _key("knowledge", target)],
    }


def _negotiation_row(p: dict[str, Any]) -> Row:
    negotiation_id = _id(p["id"])
    return {
        "id": negotiation_id,
        "key": _key("negotiation", negotiation_id),
        "title": str(p["title"]),
        "resolution": str(p.get("resolution") or ""),
        "agents": [
            {"id": agent_id, "key": _key("agent", agent_id)}
            for agent_id in (_id(a) for a in p.get("agent_ids") or [])
        ],
        "tasks": [
            {"id": task_id, "key": _key("task", task_id)}
            for task_id in (_id(t) for t in p.get("task_ids") or [])
        ],
    }


_ROW_BUILDERS: dict[str, Callable[[dict[str, Any]], Row]] = {
    "agent.upserted": _agent_row,
    "task.upserted": _task_row,
    "workflow.upserted": _workflow_row,
    "agent.related": _relation_row,
    "task.dependency_added": _dependency_row,
    "agent.unrelated": _relation_row,
    "task.dependency_removed": _dependency_row,
    "agent.deleted": _deleted_row("agent"),
    "task.deleted": _deleted_row("task"),
    "workflow.deleted": _deleted_row("workflow"),
    "knowledge.upserted": _knowledge_row,
    "knowledge.related": _knowledge_relation_row,
    "knowledge.unrelated": _knowledge_relation_row,
    "knowledge.deleted": _deleted_row("knowledge"),
    "negotiation.resolved": _negotiation_row,
}

# Raise a tombstone to this event's version (never lower it).
_BURY = """
    MERGE (gone:Tombstone {key: row.key})
    SET gone.subject = coalesce(row.id, row.source_id, row.task_id),
        gone.at = datetime(),
        gone.outbox_id = CASE WHEN coalesce(gone.outbox_id, -1) < row.oid
                         THEN row.oid ELSE gone.outbox_id END
"""

_AGENT_UPSERTED = """
    UNWIND $rows AS row
    OPTIONAL MATCH (gone:Tombstone {key: row.key})
    WITH row, gone WHERE gone IS NULL OR gone.outbox_id < row.oid
    MERGE (a:Agent {id: row.id})
    WITH a, row WHERE coalesce(a.outbox_id, -1) < row.oid
    SET a.name = row.name, a.role = row.role, a.status = row.status, a.outbox_id = row.oid
    WITH a, row
    CALL (a) {
        MATCH (:Agent)-[old:PARENT_OF]->(a)
        DELETE old
    }
    CALL (a, row) {
        WITH a, row WHERE row.parent_id IS NOT NULL
            AND NOT EXISTS { MATCH (:Tombstone {key: row.parent_key}) }
        MERGE (p:Agent {id: row.parent_id})
        MERGE (p)-[:PARENT_OF]->(a)
    }
"""

# Assignment is projected as (:Agent)-[:ASSIGNED_TO]->(:Task), part of the task's state.
_TASK_UPSERTED = """
    UNWIND $rows AS row
    OPTIONAL MATCH (gone:Tombstone {key: row.key})
    WITH row, gone WHERE gone IS NULL OR gone.outbox_id < row.oid
    MERGE (t:Task {id: row.id})
    WITH t, row WHERE coalesce(t.outbox_id, -1) < row.oid
    SET t.title = row.title, t.status = row.status, t.priority = row.priority,
        t.outbox_id = row.oid
    WITH t, row
    CALL (t) {
        MATCH (:Agent)-[old:ASSIGNED_TO]->(t)
        DELETE old
    }
    CALL (t, row) {
        WITH t, row WHERE row.assignee_id IS NOT NULL
            AND NOT EXISTS { MATCH (:Tombstone {key: row.assignee_key}) }
        MERGE (a:Agent {id: row.assignee_id})
        MERGE (a)-[:ASSIGNED_TO]->(t)
    }
"""

# Steps and their order are part of the workflow's state: replaced as a whole.
_WORKFLOW_UPSERTED = """
    UNWIND $rows AS row
    OPTIONAL MATCH (gone:Tombstone {key: row.key})
    WITH row, gone WHERE gone IS NULL OR gone.outbox_id < row.oid
    MERGE (w:Workflow {id: row.id})
    WITH w, row WHERE coalesce(w.outbox_id, -1) < row.oid
    SET w.name = row.name, w.status = row.status, w.outbox_id = row.oid
    WITH w, row
    CALL (w, row) {
        MATCH (w)-[:HAS_STEP]->(s:Step)
        WHERE NOT s.id IN row.step_ids
        DETACH DELETE s
    }
    CALL (w, row) {
        UNWIND row.steps AS step
        MERGE (s:Step {key: step.key})
        SET s.id = step.id, s.name = step.name, s.estimate = step.estimate,
            s.workflow_id = row.id, s.outbox_id = row.oid
        MERGE (w)-[:HAS_STEP]->(s)
    }
    CALL (w) {
        MATCH (w)-[:HAS_STEP]->(:Step)-[old:PRECEDES]->(:Step)
        DELETE old
    }
    CALL (w, row) {
        UNWIND row.edges AS edge
        MATCH (a:Step {key: edge.from}), (b:Step {key: edge.to})
        MERGE (a)-[:PRECEDES]->(b)
    }
"""


# A link is written only if neither it nor either end was deleted after it was queued.
_ENDPOINTS_ALIVE = """
    WITH row WHERE NOT EXISTS {
        MATCH (gone:Tombstone)
        WHERE (gone.key = row.key AND gone.outbox_id >= row.oid)
           OR gone.key IN row.endpoint_keys
    }"""


def _related(label: str, edge_types: tuple[str, ...], *, weighted: bool = False) -> str:
    weight = "r.weight = row.weight, " if weighted else ""
    branches = "".join(
        f"""
    CALL (a, b, row) {{
        WITH a, b, row WHERE row.type = '{edge_type}'
        MERGE (a)-[r:{edge_type}]->(b)
        WITH r, row WHERE coalesce(r.outbox_id, -1) < row.oid
        SET {weight}r.outbox_id = row.oid
    }}"""
        for edge_type in edge_types
    )
    return f"""
    UNWIND $rows AS row{_ENDPOINTS_ALIVE}
    MERGE (a:{label} {{id: row.source_id}})
    MERGE (b:{label} {{id: row.target_id}})
    WITH a, b, row{branches}
"""


def _unrelated(label: str, edge_types: tuple[str, ...]) -> str:
    branches = "".join(
        f"""
    CALL (row) {{
        WITH row WHERE row.type = '{edge_type}'
        MATCH (:{label} {{id: row.source_id}})-[r:{edge_type}]->(:{label} {{id: row.target_id}})
        WHERE coalesce(r.outbox_id, -1) < row.oid
        DELETE r
    }}"""
        for edge_type in edge_types
    )
    return f"""
    UNWIND $rows AS row
    {_BURY}
    WITH row{branches}
"""


_DEPENDENCY_ADDED = f"""
    UNWIND $rows AS row{_ENDPOINTS_ALIVE}
    MERGE (t:Task {{id: row.task_id}})
    MERGE (d:Task {{id: row.depends_on_id}})
    MERGE (t)-[r:DEPENDS_ON]->(d)
    WITH r, row WHERE coalesce(r.outbox_id, -1) < row.oid
    SET r.outbox_id = row.oid
"""

_DEPENDENCY_REMOVED = f"""
    UNWIND $rows AS row
    {_BURY}
    WITH row
    MATCH (:Task {{id: row.task_id}})-[r:DEPENDS_ON]->(:Task {{id: row.depends_on_id}})
    WHERE coalesce(r.outbox_id, -1) < row.oid
    DELETE r
"""


def _deleted(label: NodeLabel) -> str:
    # A workflow takes its steps with it.
    steps = "CALL (n) { MATCH (n)-[:HAS_STEP]->(s:Step) DETACH DELETE s }"
    if label is not NodeLabel.WORKFLOW:
        steps = ""
    return f"""
    UNWIND $rows AS row
    {_BURY}
    WITH row
    MATCH (n:{label.value} {{id: row.id}})
    WHERE coalesce(n.outbox_id, -1) < row.oid
    {steps}
    DETACH DELETE n
"""


_KNOWLEDGE_UPSERTED = """
    UNWIND $rows AS row
    OPTIONAL MATCH (gone:Tombstone {key: row.key})
    WITH row, gone WHERE gone IS NULL OR gone.outbox_id < row.oid
    MERGE (k:Knowledge {id: row.id})
    WITH k, row WHERE coalesce(k.outbox_id, -1) < row.oid
    SET k.title = row.title, k.source = row.source, k.tags = row.tags, k.outbox_id = row.oid
"""


# A resolution is final: the node and its links are written once (again on a replay),
# never changed. Agents and tasks deleted meanwhile (tombstoned) are not brought back.
_NEGOTIATION_RESOLVED = """
    UNWIND $rows AS row
    MERGE (n:Negotiation {id: row.id})
    WITH n, row WHERE coalesce(n.outbox_id, -1) < row.oid
    SET n.title = row.title, n.resolution = row.resolution, n.state = 'resolved',
        n.outbox_id = row.oid
    WITH n, row
    CALL (n, row) {
        UNWIND row.agents AS agent
        WITH n, agent WHERE NOT EXISTS { MATCH (:Tombstone {key: agent.key}) }
        MERGE (a:Agent {id: agent.id})
        MERGE (a)-[:AGREED_TO]->(n)
    }
    CALL (n, row) {
        UNWIND row.tasks AS task
        WITH n, task WHERE NOT EXISTS { MATCH (:Tombstone {key: task.key}) }
        MERGE (t:Task {id: task.id})
        MERGE (n)-[:CONCERNS]->(t)
    }
"""


# In this order within a batch: not needed for correctness (versions decide), but
# upserting nodes before relating them avoids creating stubs.
_STATEMENTS: dict[str, str] = {
    "agent.upserted": _AGENT_UPSERTED,
    "task.upserted": _TASK_UPSERTED,
    "workflow.upserted": _WORKFLOW_UPSERTED,
    "agent.related": _related("Agent", _AGENT_EDGE_TYPES, weighted=True),
    "task.dependency_added": _DEPENDENCY_ADDED,
    "agent.unrelated": _unrelated("Agent", _AGENT_EDGE_TYPES),
    "task.dependency_removed": _DEPENDENCY_REMOVED,
    "agent.deleted": _deleted(NodeLabel.AGENT),
    "task.deleted": _deleted(NodeLabel.TASK),
    "workflow.deleted": _deleted(NodeLabel.WORKFLOW),
    "knowledge.upserted": _KNOWLEDGE_UPSERTED,
    "knowledge.related": _related("Knowledge", _KNOWLEDGE_EDGE_TYPES),
    "knowledge.unrelated": _unrelated("Knowledge", _KNOWLEDGE_EDGE_TYPES),
    "knowledge.deleted": _deleted(NodeLabel.KNOWLEDGE),
    "negotiation.resolved": _NEGOTIATION_RESOLVED,
}

_OUTGOING: dict[NodeLabel, str] = {
    NodeLabel.AGENT: "COLLABORATES_WITH|DELEGATES_TO",
    NodeLabel.TASK: "DEPENDS_ON",
    NodeLabel.KNOWLEDGE: "|".join(_KNOWLEDGE_EDGE_TYPES),
}


def _page(label: NodeLabel, *, among: bool) -> str:
    select = (
        f"UNWIND $among AS id MATCH (n:{label.value} {{id: id}})"
        if among
        else f"MATCH (n:{label.value}) WHERE n.id > $after"
    )
    edges = (
        f"""CALL (n) {{
            MATCH (n)-[r:{_OUTGOING[label]}]->(m:{label.value})
            WHERE coalesce(r.outbox_id, -1) < $below
            RETURN collect([type(r), m.id]) AS edges
        }}"""
        if label in _OUTGOING
        else "WITH n, [] AS edges"
    )
    return f"""
        {select}
        WITH n ORDER BY n.id LIMIT $limit
        {edges}
        RETURN n.id AS id, coalesce(n.outbox_id, -1) < $below AS stale, edges
    """


_PAGE_AFTER = {label: _page(label, among=False) for label in NodeLabel}
_PAGE_AMONG = {label: _page(label, among=True) for label in NodeLabel}

_PRUNE_TOMBSTONES = """
    MATCH (t:Tombstone)
    WHERE t.outbox_id < $below AND t.at <= datetime() - duration({seconds: $age})
    WITH t LIMIT $chunk
    DELETE t
    RETURN count(*) AS deleted
"""

_CLEAR_ALL = """
    MATCH (n)
    WHERE n:Agent OR n:Task OR n:Workflow OR n:Step OR n:Knowledge OR n:Negotiation
       OR n:Tombstone
    WITH n LIMIT $chunk
    DETACH DELETE n
    RETURN count(*) AS deleted
"""
_CLEAR_SUBJECTS = """
    UNWIND $subjects AS subject
    CALL (subject) {
        MATCH (n:Agent {id: subject}) RETURN n
        UNION MATCH (n:Task {id: subject}) RETURN n
        UNION MATCH (n:Workflow {id: subject}) RETURN n
        UNION MATCH (n:Knowledge {id: subject}) RETURN n
        UNION MATCH (n:Negotiation {id: subject}) RETURN n
        UNION MATCH (n:Tombstone {subject: subject}) RETURN n
    }
    CALL (n) { MATCH (n)-[:HAS_STEP]->(s:Step) DETACH DELETE s }
    DETACH DELETE n
    RETURN count(*) AS deleted
"""

_PRUNE_TOMBSTONES_OF = """
    UNWIND $subjects AS subject
    MATCH (t:Tombstone {subject: subject})
    WHERE t.outbox_id < $below AND t.at <= datetime() - duration({seconds: $age})
    DELETE t
    RETURN count(*) AS deleted
"""
