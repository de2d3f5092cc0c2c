from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from starlette.requests import HTTPConnection

from gateway.settings import Settings
from resolvers.auth import ANONYMOUS
from resolvers.context import RequestContext, Stores
from resolvers.loaders import build_loaders
from resolvers.writes import await_projection
from stores import GraphOptions, GraphStore, PostgresStore, RedisStore, roundtrips
from stores.graph import projection
from stores.postgres.outbox import claim_batch, enqueue, is_processed, pending_count
from stores.postgres.writes import write_audit
from tests.integration.graph.conftest import (
    Events,
    Ids,
    Seed,
    agent,
    depends,
    graph_state,
    related,
    task,
)
from tests.support.gate import Gate
from tests.support.waiting import until
from workers.projector import Projector


async def drain(projector: Projector) -> int:
    applied = 0
    while (count := await projector.run_once()) > 0:
        applied += count
    return applied


async def fetch(graph: GraphStore, query: str, **params: Any) -> list[dict[str, Any]]:
    async with graph.session() as session:
        result = await session.run(query, params)
        return await result.data()


async def agent_node(graph: GraphStore, agent_id: UUID) -> dict[str, Any] | None:
    rows = await fetch(
        graph, "MATCH (a:Agent {id: $id}) RETURN properties(a) AS a", id=str(agent_id)
    )
    return rows[0]["a"] if rows else None


async def test_projects_agents_tasks_and_workflows_from_the_outbox(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids
) -> None:
    boss, _ = await seed.agent()
    worker, _ = await seed.agent(parent=boss, status="busy")
    await seed.relate(worker, boss, "COLLABORATES_WITH", 0.5)
    await seed.relate(boss, worker, "DELEGATES_TO", 2.0)
    build, _ = await seed.task(assignee=worker)
    ship, _ = await seed.task()
    await seed.depend(ship, build)
    flow, _ = await seed.workflow(
        [{"id": "a", "name": "A", "estimate": 1}, {"id": "b", "name": "B", "estimate": 2.5}],
        [{"from": "a", "to": "b"}],
    )

    await drain(Projector(pg, graph))

    state = await graph_state(graph, ids.all, versions=False)
    edges = {(t, s, d) for t, s, d, _ in state.edges}
    assert edges == {
        ("PARENT_OF", str(boss), str(worker)),
        ("COLLABORATES_WITH", str(worker), str(boss)),
        ("DELEGATES_TO", str(boss), str(worker)),
        ("ASSIGNED_TO", str(worker), str(build)),
        ("DEPENDS_ON", str(ship), str(build)),
        ("HAS_STEP", str(flow), f"{flow}:a"),
        ("HAS_STEP", str(flow), f"{flow}:b"),
        ("PRECEDES", f"{flow}:a", f"{flow}:b"),
    }
    node = await agent_node(graph, worker)
    assert node is not None
    assert (node["name"], node["status"]) == (f"agent-{worker}", "busy")
    steps = await fetch(
        graph,
        "MATCH (:Workflow {id: $id})-[:HAS_STEP]->(s) RETURN s.id AS id, s.estimate AS e ORDER BY id",
        id=str(flow),
    )
    assert steps == [{"id": "a", "e": 1.0}, {"id": "b", "e": 2.5}]


async def test_applying_the_same_batch_twice_changes_nothing(
    graph: GraphStore, ids: Ids, events: Events
) -> None:
    a, b, c = ids.many(3)
    t1, t2 = ids.many(2)
    batch = [
        events("agent.upserted", agent(a)),
        events("agent.upserted", agent(b, parent=a)),
        events("agent.upserted", agent(c)),
        events("agent.related", related(a, b, "COLLABORATES_WITH", 3.0)),
        events("agent.related", related(b, c, "DELEGATES_TO")),
        events("agent.unrelated", related(b, c, "DELEGATES_TO")),
        events("task.upserted", task(t1, assignee=a)),
        events("task.upserted", task(t2)),
        events("task.dependency_added", depends(t2, t1)),
        events("agent.deleted", {"id": str(c)}),
    ]
    await projection.apply(graph, batch)
    first = await graph_state(graph, ids.all)

    await projection.apply(graph, batch)

    assert await graph_state(graph, ids.all) == first
    assert len(first.nodes) == 4  # a, b, t1, t2; c was deleted
    assert {e[0] for e in first.edges} == {
        "PARENT_OF",
        "COLLABORATES_WITH",
        "ASSIGNED_TO",
        "DEPENDS_ON",
    }


async def test_a_batch_takes_one_round_trip_per_kind_whatever_its_size(
    graph: GraphStore, ids: Ids, events: Events
) -> None:
    agents, tasks = ids.many(40), ids.many(40)
    batch = [
        *(events("agent.upserted", agent(a)) for a in agents),
        *(events("task.upserted", task(t)) for t in tasks),
        *(
            events("agent.related", related(a, b, "COLLABORATES_WITH"))
            for a, b in itertools.pairwise(agents)
        ),
    ]
    with roundtrips.counting() as counter:
        await projection.apply(graph, batch)
    assert counter["neo4j"] == 3
    assert len((await graph_state(graph, ids.all)).nodes) == 80


async def test_an_older_event_applied_after_a_newer_one_is_ignored(
    graph: GraphStore, ids: Ids, events: Events
) -> None:
    a, b, gone, flow = ids.many(4)
    await projection.apply(
        graph,
        [
            events("agent.upserted", agent(a, "new"), oid=20),
            events("agent.upserted", agent(b), oid=21),
            events("agent.related", related(a, b, "DELEGATES_TO", 2.0), oid=30),
            events("agent.unrelated", related(a, b, "COLLABORATES_WITH"), oid=40),
            events("agent.deleted", {"id": str(gone)}, oid=50),
            events(
                "workflow.upserted",
                {"id": str(flow), "name": "v2", "status": "active", "steps": [], "edges": []},
                oid=60,
            ),
        ],
    )
    # Each of these is older than what the graph already shows.
    await projection.apply(
        graph,
        [
            events("agent.upserted", agent(a, "old"), oid=10),
            events("agent.related", related(a, b, "DELEGATES_TO", 1.0), oid=25),
            events("agent.related", related(a, b, "COLLABORATES_WITH"), oid=35),
            events("agent.upserted", agent(gone), oid=45),
            events(
                "workflow.upserted",
                {
                    "id": str(flow),
                    "name": "v1",
                    "status": "draft",
                    "steps": [{"id": "x", "name": "X", "estimate": 1}],
                    "edges": [],
                },
                oid=55,
            ),
        ],
    )

    node = await agent_node(graph, a)
    assert node is not None and (node["name"], node["outbox_id"]) == ("new", 20)
    assert await agent_node(graph, gone) is None
    edges = await fetch(
        graph,
        "MATCH (:Agent {id: $a})-[r]->(:Agent {id: $b}) RETURN type(r) AS t, r.weight AS w",
        a=str(a),
        b=str(b),
    )
    assert edges == [{"t": "DELEGATES_TO", "w": 2.0}]
    workflow = await fetch(
        graph,
        "MATCH (w:Workflow {id: $id}) RETURN w.name AS name, COUNT { (w)-[:HAS_STEP]->() } AS steps",
        id=str(flow),
    )
    assert workflow == [{"name": "v2", "steps": 0}]


async def test_a_relationship_arriving_before_its_agents_is_kept_and_filled_in(
    graph: GraphStore, ids: Ids, events: Events
) -> None:
    a, b = ids.many(2)
    await projection.apply(
        graph, [events("agent.related", related(a, b, "COLLABORATES_WITH"), oid=9)]
    )
    stub = await agent_node(graph, a)
    assert stub is not None and "name" not in stub

    await projection.apply(
        graph,
        [events("agent.upserted", agent(a), oid=3), events("agent.upserted", agent(b), oid=4)],
    )

    node = await agent_node(graph, a)
    assert node is not None and node["name"] == f"agent-{a}"
    assert (await graph.queries.collaborators_of([a], first=10))[a][0].agent_id == b


async def test_malformed_and_unknown_events_are_skipped_not_fatal(
    graph: GraphStore, ids: Ids, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    good = ids.new()
    with caplog.at_level(logging.WARNING, logger="stores.graph.projection"):
        await projection.apply(
            graph,
            [
                events("agent.upserted", {"id": "not-a-uuid", "name": "x"}),
                events("agent.related", related(good, good, "LIKES")),
                events("agent.renamed", {"id": str(good)}),
                events("agent.upserted", agent(good)),
            ],
        )
    assert await agent_node(graph, good) is not None
    assert len([r for r in caplog.records if r.name == "stores.graph.projection"]) == 3


async def test_an_event_neo4j_refuses_is_skipped_instead_of_stalling_the_outbox(
    pg: PostgresStore, graph: GraphStore, ids: Ids, caplog: pytest.LogCaptureFixture
) -> None:
    projector = Projector(pg, graph)
    await drain(projector)
    poison, good = ids.many(2)
    async with pg.connection() as conn:
        # Valid as a payload, but too large for Neo4j's index on agent names.
        await enqueue(conn, "agent.upserted", agent(poison, "x" * 40_000))
        last = await enqueue(conn, "agent.upserted", agent(good))

    with caplog.at_level(logging.ERROR, logger="workers.projector"):
        assert await projector.run_once() == 2

    assert await is_processed(pg, last)
    assert await agent_node(graph, good) is not None
    assert await agent_node(graph, poison) is None
    assert [r.name for r in caplog.records] == ["workers.projector"]


class _Crash(Exception):
    pass


async def test_a_projector_dying_between_apply_and_commit_loses_and_duplicates_nothing(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids
) -> None:
    projector = Projector(pg, graph)
    await drain(projector)
    a, _ = await seed.agent()
    b, _ = await seed.agent(parent=a)
    last = await seed.relate(a, b, "COLLABORATES_WITH", 1.5)

    # Applied to Neo4j, then the process dies before PostgreSQL commits.
    with pytest.raises(_Crash):
        async with claim_batch(pg, 100) as claimed:
            await projection.apply(graph, claimed)
            raise _Crash("killed")
    assert not await is_processed(pg, last)
    async with pg.connection() as conn:
        row = await conn.fetchrow("SELECT attempts, last_error FROM outbox WHERE id = $1", last)
    assert row is not None and row["attempts"] == 1 and "_Crash: killed" in row["last_error"]

    assert await drain(projector) == 3

    assert await is_processed(pg, last)
    counts = await fetch(
        graph,
        """
        UNWIND $ids AS id MATCH (n:Agent {id: id})
        RETURN count(n) AS nodes, sum(COUNT { (n)-->() }) AS edges
        """,
        ids=[str(a), str(b)],
    )
    assert counts == [{"nodes": 2, "edges": 2}]  # PARENT_OF and COLLABORATES_WITH, once each


async def test_two_projectors_apply_every_row_exactly_once(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids
) -> None:
    await drain(Projector(pg, graph))
    agents = [(await seed.agent())[0] for _ in range(30)]
    for source, target in itertools.pairwise(agents):
        await seed.relate(source, target, "DELEGATES_TO")
    assert await pending_count(pg) == 59

    async def work(projector: Projector) -> int:
        applied = 0
        while await pending_count(pg) > 0:
            applied += await projector.run_once()
            await asyncio.sleep(0)
        return applied

    one, two = await asyncio.gather(
        work(Projector(pg, graph, batch_size=4)), work(Projector(pg, graph, batch_size=4))
    )

    # A row applied by both would count twice.
    assert one + two == 59
    state = await graph_state(graph, agents)
    assert len(state.nodes) == 30
    assert sum(1 for e in state.edges if e[0] == "DELEGATES_TO") == 29


async def test_batches_are_counted_beside_the_rows_they_applied(
    pg: PostgresStore, graph: GraphStore, seed: Seed
) -> None:
    await drain(Projector(pg, graph))
    for _ in range(5):
        await seed.agent()
    projector = Projector(pg, graph, batch_size=2)
    assert await drain(projector) == 5
    # Two full batches and one of a single row; the last claim found none.
    assert (projector.applied, projector.batches) == (5, 3)


async def test_a_running_projector_wakes_on_notify_and_serves_wait_for(
    pg: PostgresStore, graph: GraphStore, seed: Seed
) -> None:
    # Polling once a minute: only the NOTIFY (or wake()) can make this quick.
    projector = Projector(pg, graph, idle_poll_s=60)
    await projector.start()
    try:
        await asyncio.sleep(0.2)
        first, oid = await seed.agent()
        for _ in range(250):
            if await is_processed(pg, oid):
                break
            await asyncio.sleep(0.02)
        assert await agent_node(graph, first) is not None

        second, oid = await seed.agent()
        assert await projector.wait_for(oid, timeout=5)
        assert await agent_node(graph, second) is not None
        assert not await projector.wait_for(oid + 10_000, timeout=0.3)
    finally:
        await projector.stop()
    assert not projector.running


async def test_a_projector_whose_listener_is_cut_looks_at_the_outbox_at_once(
    pg: PostgresStore, graph: GraphStore, seed: Seed
) -> None:
    # Polling every five minutes while it listens, and nobody listening when the row is
    # written: the projector must notice the cut (the listener says so, or its next
    # step finds it closed) and poll until it listens again. `also_wake` is called
    # once the listener connects, and again when it hears or loses its connection.
    heard: list[None] = []
    projector = Projector(pg, graph, idle_poll_s=300, also_wake=[lambda: heard.append(None)])
    await projector.start()
    try:
        await until(lambda: len(heard) == 1)
        async with pg.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'polygraph-outbox-listener'"
                " AND datname = current_database()"
            )
        await until(lambda: len(heard) >= 2)
        # Written while nobody listens: found by the loop's short poll, or by the step
        # that follows the listener's return.
        agent_id, oid = await seed.agent()
        await until(lambda: is_processed(pg, oid))
        assert await agent_node(graph, agent_id) is not None
    finally:
        await projector.stop()


async def test_wait_for_sees_rows_another_gateway_applied(
    pg: PostgresStore, graph: GraphStore, seed: Seed
) -> None:
    here, elsewhere = Projector(pg, graph), Projector(pg, graph)
    await drain(here)
    _, oid = await seed.agent()
    waiting = asyncio.create_task(here.wait_for(oid, timeout=5))
    await asyncio.sleep(0.05)
    assert await elsewhere.run_once() == 1
    assert await waiting


async def test_the_projector_keeps_rows_pending_while_neo4j_is_down(
    pg: PostgresStore,
    graph: GraphStore,
    seed: Seed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await drain(Projector(pg, graph))
    nowhere = GraphOptions(
        uri="bolt://127.0.0.1:9", user="neo4j", password="unused", connect_timeout=0.5
    )
    agent_id, oid = await seed.agent()
    async with GraphStore(nowhere) as down:
        projector = Projector(pg, down, idle_poll_s=0.05)
        with caplog.at_level(logging.INFO, logger="workers.projector"):
            await projector.start()
            await asyncio.sleep(1.5)
            assert projector.running
            assert not await is_processed(pg, oid)
            async with asyncio.timeout(2):
                await projector.stop()
    outages = [
        r for r in caplog.records if r.name == "workers.projector" and "unavailable" in r.message
    ]
    assert len(outages) == 1

    await drain(Projector(pg, graph))
    assert await is_processed(pg, oid)
    assert await agent_node(graph, agent_id) is not None


async def test_stop_cancels_a_batch_that_does_not_finish(
    pg: PostgresStore, graph: GraphStore
) -> None:
    projector = Projector(pg, graph, stop_timeout_s=0.2)
    await projector.start()
    await projector.stop()
    await projector.stop()  # idempotent
    assert not projector.running


async def test_claimed_rows_are_skipped_by_other_claimers(pg: PostgresStore, ids: Ids) -> None:
    async with pg.connection() as conn:
        first = await enqueue(conn, "agent.deleted", {"id": str(ids.new())})
    async with claim_batch(pg, 1_000) as mine, claim_batch(pg, 1_000) as theirs:
        assert first in {e.id for e in mine}
        assert not {e.id for e in mine} & {e.id for e in theirs}
    assert await is_processed(pg, first)


def _request_context(
    pg: PostgresStore, graph: GraphStore, redis: RedisStore, projector: Projector, *, wait_s: float
) -> RequestContext:
    stores = Stores(pg, graph, redis, projector=projector)
    connection = HTTPConnection({"type": "http", "headers": [], "client": ("127.0.0.1", 1)})
    return RequestContext(
        stores=stores,
        connection=connection,
        request_id="test",
        principal=ANONYMOUS,
        loaders=build_loaders(stores),
        projection_wait_s=wait_s,
    )


async def test_a_writer_waits_for_its_own_rows_not_the_newest_one(
    pg: PostgresStore, graph: GraphStore, redis: RedisStore, ids: Ids
) -> None:
    projector = Projector(pg, graph)
    await drain(projector)
    ctx = _request_context(pg, graph, redis, projector, wait_s=0.3)
    mine, theirs = ids.new(), ids.new()
    async with pg.connection() as slow, slow.transaction():
        await write_audit(
            slow,
            ctx.write_context(),
            "create",
            "agent",
            mine,
            None,
            {"id": str(mine)},
            outbox=("agent.upserted", agent(mine, "mine")),
        )
        # A later row commits first and is applied while this one is still open.
        async with pg.connection() as fast:
            await enqueue(fast, "agent.upserted", agent(theirs, "theirs"))
        assert await projector.run_once() == 1
    assert len(ctx.outbox_ids) == 1
    # The newest row is applied; this writer's is not, and it must not say it is.
    assert not await await_projection(ctx, True)
    assert await agent_node(graph, mine) is None
    assert await projector.run_once() == 1
    assert await await_projection(ctx, True)
    assert await agent_node(graph, mine) is not None


async def test_the_projector_resumes_as_soon_as_neo4j_answers_again(
    pg: PostgresStore, graph: GraphStore, redis: RedisStore, settings: Settings, seed: Seed
) -> None:
    await drain(Projector(pg, graph))
    options = settings.graph_options()
    async with Gate("127.0.0.1", int(options.uri.rsplit(":", 1)[1])) as gate:
        gate.close()
        gated = replace(options, uri=f"bolt://127.0.0.1:{gate.port}", connect_timeout=1.0)
        async with GraphStore(gated) as through_gate:
            # A backoff far longer than the waits below: only noticing Neo4j's
            # return can end the outage in time.
            projector = Projector(pg, through_gate, min_backoff_s=600, idle_poll_s=0.05)
            await projector.start()
            try:
                agent_id, oid = await seed.agent()
                await until(lambda: projector.graph_unavailable)
                # While the projector knows Neo4j is down, a writer is told so at once.
                ctx = _request_context(pg, graph, redis, projector, wait_s=600)
                ctx.outbox_ids.append(oid)
                async with asyncio.timeout(60):
                    assert not await await_projection(ctx, True)
                gate.open()
                assert await projector.wait_for(oid, timeout=60)
                assert not projector.graph_unavailable
            finally:
                await projector.stop()
    assert await agent_node(graph, agent_id) is not None


class _CountingMigrations(GraphStore):
    """A real store that remembers each migration run that got through."""

    migrated = 0

    async def migrate(self) -> list[str]:
        applied = await super().migrate()
        self.migrated += 1
        return applied


async def test_a_neo4j_down_at_start_is_migrated_before_anything_is_projected_into_it(
    pg: PostgresStore, graph: GraphStore, settings: Settings, seed: Seed
) -> None:
    await drain(Projector(pg, graph))
    options = settings.graph_options()
    async with Gate("127.0.0.1", int(options.uri.rsplit(":", 1)[1])) as gate:
        gate.close()
        gated = replace(options, uri=f"bolt://127.0.0.1:{gate.port}", connect_timeout=1.0)
        counting = _CountingMigrations(gated)
        async with counting as through_gate:
            projector = Projector(pg, through_gate, min_backoff_s=600, idle_poll_s=0.05)
            await projector.start()
            try:
                agent_id, oid = await seed.agent()
                await until(lambda: projector.graph_unavailable)
                assert counting.migrated == 0
                gate.open()
                assert await projector.wait_for(oid, timeout=60)
                assert counting.migrated == 1
            finally:
                await projector.stop()
    assert await agent_node(graph, agent_id) is not None
