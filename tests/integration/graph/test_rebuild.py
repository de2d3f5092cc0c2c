"""The rebuild runs against this package's own PostgreSQL database, but Neo4j is
shared with every other worker: each rebuild here passes `prune_only`, so it can
only delete the test's own nodes."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from stores import GraphStore, PostgresStore, StoreUnavailable
from stores.graph import projection
from stores.postgres.outbox import enqueue, pending_count
from tests.integration.graph.conftest import Events, Ids, Seed, agent, forget, graph_state, related
from workers.graph_rebuild import rebuild
from workers.projector import Projector


async def drain(projector: Projector) -> None:
    while await projector.run_once():
        pass


async def run(graph: GraphStore, query: str, **params: Any) -> list[dict[str, Any]]:
    async with graph.session() as session:
        result = await session.run(query, params)
        return await result.data()


async def build_world(seed: Seed) -> dict[str, UUID]:
    boss, _ = await seed.agent()
    worker, _ = await seed.agent(parent=boss)
    helper, _ = await seed.agent(status="busy")
    await seed.relate(worker, helper, "COLLABORATES_WITH", 0.25)
    await seed.relate(boss, worker, "DELEGATES_TO", 3.0)
    build, _ = await seed.task(assignee=worker)
    ship, _ = await seed.task()
    await seed.depend(ship, build)
    flow, _ = await seed.workflow(
        [{"id": "plan", "name": "Plan", "estimate": 2}, {"id": "do", "name": "Do", "estimate": 3}],
        [{"from": "plan", "to": "do"}],
    )
    return {
        "boss": boss,
        "worker": worker,
        "helper": helper,
        "build": build,
        "ship": ship,
        "flow": flow,
    }


async def test_rebuild_gives_the_graph_incremental_projection_gives(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids
) -> None:
    await build_world(seed)
    await drain(Projector(pg, graph))
    incremental = await graph_state(graph, ids.all, versions=False)
    assert len(incremental.nodes) == 8  # 3 agents, 2 tasks, a workflow and its 2 steps

    await forget(graph, ids.all)
    assert await graph_state(graph, ids.all) != incremental
    seen: list[tuple[str, int, int]] = []
    report = await rebuild(pg, graph, prune_only=ids.all, progress=lambda *p: seen.append(p))

    assert await graph_state(graph, ids.all, versions=False) == incremental
    assert report.agents >= 3 and report.relationships >= 2 and report.workflows >= 1
    assert ("agents", report.agents, report.agents) in seen
    # A second rebuild over an up-to-date graph changes nothing.
    await rebuild(pg, graph, prune_only=ids.all)
    assert await graph_state(graph, ids.all, versions=False) == incremental


async def test_rebuild_removes_what_postgres_no_longer_has(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids, events: Events
) -> None:
    world = await build_world(seed)
    await drain(Projector(pg, graph))
    before = await graph_state(graph, ids.all, versions=False)
    # Written to Neo4j behind PostgreSQL's back, as a lost event or a bug would leave it.
    ghost, ghost_task = ids.new(), ids.new()
    await projection.apply(
        graph,
        [
            events("agent.upserted", agent(ghost)),
            events("agent.related", related(ghost, world["worker"], "DELEGATES_TO")),
            events("agent.related", related(world["helper"], world["boss"], "COLLABORATES_WITH")),
            events("task.upserted", {**_task(ghost_task)}),
        ],
    )

    report = await rebuild(pg, graph, prune_only=ids.all)

    assert await graph_state(graph, [ghost, ghost_task]) == await graph_state(graph, [])
    assert await graph_state(graph, ids.all, versions=False) == before
    assert report.removed_nodes == 2 and report.removed_edges == 1


async def test_rebuild_leaves_nodes_outside_its_prune_scope_alone(
    pg: PostgresStore, graph: GraphStore, ids: Ids, events: Events
) -> None:
    outsider = ids.new()
    await projection.apply(graph, [events("agent.upserted", agent(outsider))])

    await rebuild(pg, graph, prune_only=[])

    assert await run(graph, "MATCH (a:Agent {id: $id}) RETURN a.id AS id", id=str(outsider))


async def test_rebuild_marks_the_outbox_processed_up_to_its_horizon(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids
) -> None:
    world = await build_world(seed)
    assert await pending_count(pg) > 0

    report = await rebuild(pg, graph, prune_only=ids.all)

    assert await pending_count(pg) == 0
    assert report.outbox_marked >= 9
    async with pg.connection() as conn:
        assert report.horizon == await conn.fetchval("SELECT max(id) FROM outbox")
    assert (await graph.queries.parents_of([world["worker"]]))[world["worker"]] == world["boss"]


async def test_rebuild_keeps_what_a_newer_event_already_wrote(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids, events: Events
) -> None:
    agent_id, _ = await seed.agent()
    await drain(Projector(pg, graph))
    # As if a projector had applied an event newer than the rebuild's horizon.
    await projection.apply(
        graph, [events("agent.upserted", agent(agent_id, "renamed since"), oid=2**40)]
    )

    await rebuild(pg, graph, prune_only=ids.all)

    rows = await run(graph, "MATCH (a:Agent {id: $id}) RETURN a.name AS name", id=str(agent_id))
    assert rows == [{"name": "renamed since"}]


async def test_rebuild_does_not_resurrect_a_deletion_newer_than_its_horizon(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids, events: Events
) -> None:
    agent_id, _ = await seed.agent()
    await drain(Projector(pg, graph))
    await projection.apply(graph, [events("agent.deleted", {"id": str(agent_id)}, oid=2**40)])

    await rebuild(pg, graph, prune_only=ids.all)

    assert not await run(graph, "MATCH (a:Agent {id: $id}) RETURN a", id=str(agent_id))


async def test_rebuild_waits_for_outbox_writers_in_flight(
    pg: PostgresStore, graph: GraphStore, ids: Ids
) -> None:
    async with pg.connection() as conn:
        writer = conn.transaction()
        await writer.start()
        in_flight = await enqueue(conn, "agent.deleted", {"id": str(ids.new())})
        # Its id is handed out but not committed: the horizon cannot be taken past it.
        with pytest.raises(StoreUnavailable, match="outbox writers did not finish"):
            await rebuild(pg, graph, prune_only=ids.all, lock_timeout_s=0.2)

        rebuilding = asyncio.create_task(rebuild(pg, graph, prune_only=ids.all))
        await asyncio.sleep(0.2)
        assert not rebuilding.done()
        await writer.commit()
        report = await rebuilding

    assert report.horizon >= in_flight


def _task(task_id: UUID) -> dict[str, Any]:
    return {
        "id": str(task_id),
        "title": "ghost",
        "status": "pending",
        "priority": 1,
        "assignee_id": None,
        "workflow_id": None,
    }
