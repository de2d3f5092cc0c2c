"""Fixtures for the projection tests.

The outbox needs a database of its own: a gateway started by other tests in the
same worker runs a projector over the worker's database and would take rows
from under these tests. Neo4j is shared by every worker, so each test keys its
data by fresh UUIDs and deletes only those nodes afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import GraphStore, PostgresOptions, PostgresStore
from stores.postgres.outbox import OutboxEvent, enqueue


@pytest.fixture(scope="session")
def outbox_dsn(profile: Profile, settings: Settings, stack_up: None) -> Iterator[str]:
    name = f"polygraph_graph_{secrets.token_hex(4)}"

    async def create() -> None:
        admin = await asyncpg.connect(profile.postgres_dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        async with PostgresStore(PostgresOptions(dsn=profile.postgres_dsn(name))) as store:
            await store.migrate()
        async with GraphStore(settings.graph_options()) as graph:
            await graph.migrate()

    async def drop() -> None:
        admin = await asyncpg.connect(profile.postgres_dsn())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield profile.postgres_dsn(name)
    asyncio.run(drop())


@pytest.fixture
async def pg(outbox_dsn: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(PostgresOptions(dsn=outbox_dsn, min_size=1, max_size=6)) as store:
        yield store


@pytest.fixture
async def ids(graph: GraphStore) -> AsyncIterator[Ids]:
    made = Ids()
    yield made
    await forget(graph, made.all)


@dataclass
class Ids:
    """Fresh ids for one test; the graph forgets them when the test ends."""

    all: list[UUID] = field(default_factory=list)

    def new(self) -> UUID:
        made = uuid4()
        self.all.append(made)
        return made

    def many(self, count: int) -> list[UUID]:
        return [self.new() for _ in range(count)]


async def forget(graph: GraphStore, ids: Sequence[UUID]) -> None:
    """Delete these ids' nodes, steps and tombstones, and nothing else."""
    async with graph.session() as session:
        result = await session.run(
            """
            UNWIND $ids AS id
            CALL (id) { MATCH (n:Agent {id: id}) DETACH DELETE n }
            CALL (id) { MATCH (n:Task {id: id}) DETACH DELETE n }
            CALL (id) {
                MATCH (n:Workflow {id: id})
                OPTIONAL MATCH (n)-[:HAS_STEP]->(s:Step)
                DETACH DELETE s, n
            }
            CALL (id) { MATCH (t:Tombstone {subject: id}) DELETE t }
            """,
            ids=[str(i) for i in ids],
        )
        await result.consume()


class Events:
    """Outbox events made by hand, with ids the test chooses, for `projection.apply`."""

    def __init__(self) -> None:
        self._next = 1

    def __call__(
        self, kind: str, payload: dict[str, Any], *, oid: int | None = None
    ) -> OutboxEvent:
        if oid is None:
            oid, self._next = self._next, self._next + 1
        return OutboxEvent(oid, kind, payload, datetime.now(UTC))


def agent(
    agent_id: UUID, name: str = "", *, parent: UUID | None = None, status: str = "idle"
) -> dict[str, Any]:
    return {
        "id": str(agent_id),
        "name": name or f"agent-{agent_id}",
        "role": "worker",
        "status": status,
        "parent_id": None if parent is None else str(parent),
    }


def task(task_id: UUID, *, status: str = "pending", assignee: UUID | None = None) -> dict[str, Any]:
    return {
        "id": str(task_id),
        "title": f"task-{task_id}",
        "status": status,
        "priority": 5,
        "assignee_id": None if assignee is None else str(assignee),
        "workflow_id": None,
    }


def related(source: UUID, target: UUID, edge: str, weight: float = 1.0) -> dict[str, Any]:
    return {"source_id": str(source), "target_id": str(target), "type": edge, "weight": weight}


def depends(task_id: UUID, on: UUID) -> dict[str, Any]:
    return {"task_id": str(task_id), "depends_on_id": str(on)}


class Seed:
    """Writes rows to PostgreSQL with their outbox rows, in one transaction each,
    the way the repositories do (they are not used here on purpose: this package
    tests the projection, not them)."""

    def __init__(self, pg: PostgresStore, ids: Ids) -> None:
        self._pg = pg
        self._ids = ids

    async def agent(self, *, parent: UUID | None = None, status: str = "idle") -> tuple[UUID, int]:
        agent_id = self._ids.new()
        name = f"agent-{agent_id}"
        async with self._pg.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO agents (id, name, status, parent_id) VALUES ($1, $2, $3, $4)",
                agent_id,
                name,
                status,
                parent,
            )
            oid = await enqueue(
                conn, "agent.upserted", agent(agent_id, name, parent=parent, status=status)
            )
        return agent_id, oid

    async def rename_agent(self, agent_id: UUID, name: str) -> int:
        async with self._pg.connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE agents SET name = $2 WHERE id = $1 RETURNING status, parent_id",
                agent_id,
                name,
            )
            assert row is not None
            return await enqueue(
                conn,
                "agent.upserted",
                agent(agent_id, name, parent=row["parent_id"], status=row["status"]),
            )

    async def delete_agent(self, agent_id: UUID) -> int:
        async with self._pg.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM agents WHERE id = $1", agent_id)
            return await enqueue(conn, "agent.deleted", {"id": str(agent_id)})

    async def relate(self, source: UUID, target: UUID, edge: str, weight: float = 1.0) -> int:
        async with self._pg.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO agent_relationships (source_id, target_id, type, weight)"
                " VALUES ($1, $2, $3, $4)",
                source,
                target,
                edge,
                weight,
            )
            return await enqueue(conn, "agent.related", related(source, target, edge, weight))

    async def task(
        self, *, status: str = "pending", assignee: UUID | None = None
    ) -> tuple[UUID, int]:
        task_id = self._ids.new()
        async with self._pg.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tasks (id, title, status, assignee_id) VALUES ($1, $2, $3, $4)",
                task_id,
                f"task-{task_id}",
                status,
                assignee,
            )
            oid = await enqueue(
                conn, "task.upserted", task(task_id, status=status, assignee=assignee)
            )
        return task_id, oid

    async def depend(self, task_id: UUID, on: UUID) -> int:
        async with self._pg.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO task_dependencies (task_id, depends_on_id) VALUES ($1, $2)",
                task_id,
                on,
            )
            return await enqueue(conn, "task.dependency_added", depends(task_id, on))

    async def workflow(
        self, steps: list[dict[str, Any]], edges: list[dict[str, str]]
    ) -> tuple[UUID, int]:
        workflow_id = self._ids.new()
        definition = {"steps": steps, "edges": edges}
        async with self._pg.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO workflows (id, name, definition) VALUES ($1, $2, $3)",
                workflow_id,
                f"workflow-{workflow_id}",
                definition,
            )
            oid = await enqueue(
                conn,
                "workflow.upserted",
                {
                    "id": str(workflow_id),
                    "name": f"workflow-{workflow_id}",
                    "status": "draft",
                    **definition,
                },
            )
        return workflow_id, oid


@pytest.fixture
async def seed(pg: PostgresStore, ids: Ids) -> AsyncIterator[Seed]:
    yield Seed(pg, ids)
    # A rebuild exports the whole database: what earlier tests left would be
    # projected again, after their own clean-up, and linger in the shared graph.
    async with pg.connection() as conn, conn.transaction():
        await conn.execute("UPDATE outbox SET processed_at = now() WHERE processed_at IS NULL")
        for table in ("tasks", "workflows", "agents"):
            await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::uuid[])", ids.all)


@pytest.fixture
def events() -> Events:
    return Events()


@dataclass(frozen=True)
class GraphState:
    nodes: frozenset[tuple[str, tuple[tuple[str, Any], ...]]]
    edges: frozenset[tuple[str, str, str, tuple[tuple[str, Any], ...]]]


async def graph_state(
    graph: GraphStore, ids: Sequence[UUID], *, versions: bool = True
) -> GraphState:
    """Everything the graph holds about these ids: their nodes (and workflow steps)
    with properties, and the relationships leaving them."""
    async with graph.session() as session:
        result = await session.run(
            """
            UNWIND $ids AS id
            CALL (id) {
                MATCH (n:Agent {id: id}) RETURN n
                UNION
                MATCH (n:Task {id: id}) RETURN n
                UNION
                MATCH (n:Workflow {id: id}) RETURN n
                UNION
                MATCH (:Workflow {id: id})-[:HAS_STEP]->(n:Step) RETURN n
            }
            OPTIONAL MATCH (n)-[r]->(m)
            RETURN labels(n) AS labels, properties(n) AS props,
                   collect(CASE WHEN r IS NULL THEN null
                           ELSE [type(r), coalesce(m.key, m.id), properties(r)] END) AS out
            """,
            ids=[str(i) for i in ids],
        )
        rows = [record async for record in result]

    def props(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted((k, v) for k, v in values.items() if versions or k != "outbox_id"))

    nodes = set()
    edges = set()
    for row in rows:
        own = row["props"].get("key") or row["props"]["id"]
        nodes.add((",".join(sorted(row["labels"])), props(row["props"])))
        for edge_type, target, edge_props in row["out"]:
            edges.add((edge_type, own, target, props(edge_props)))
    return GraphState(frozenset(nodes), frozenset(edges))
