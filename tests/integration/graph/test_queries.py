from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, replace
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import pytest

from gateway.settings import Settings
from stores import GraphStore, roundtrips
from stores.errors import InvalidInput
from stores.graph import (
    AgentDegree,
    AgentEdge,
    Collaborator,
    CriticalPath,
    NeighbourEdge,
    NeighbourNode,
    projection,
)
from tests.integration.graph.conftest import Events, Ids, agent, depends, related, task
from tests.support.gate import Gate
from tests.support.waiting import until

COLLAB, DELEG, PARENT = AgentEdge.COLLABORATES_WITH, AgentEdge.DELEGATES_TO, AgentEdge.PARENT_OF


@dataclass
class Agents:
    """P is the parent of A and E.  C -collab-> A -collab-> B,  A -delegates-> D -collab-> F,
    E -delegates-> A."""

    a: UUID
    b: UUID
    c: UUID
    d: UUID
    e: UUID
    f: UUID
    p: UUID


@pytest.fixture
async def agents(graph: GraphStore, ids: Ids, events: Events) -> Agents:
    g = Agents(*ids.many(7))
    await projection.apply(
        graph,
        [
            events("agent.upserted", agent(g.p)),
            events("agent.upserted", agent(g.a, parent=g.p)),
            events("agent.upserted", agent(g.e, parent=g.p)),
            *(events("agent.upserted", agent(x)) for x in (g.b, g.c, g.d, g.f)),
            events("agent.related", related(g.a, g.b, COLLAB, 0.5)),
            events("agent.related", related(g.c, g.a, COLLAB, 2.0)),
            events("agent.related", related(g.a, g.d, DELEG, 1.0)),
            events("agent.related", related(g.e, g.a, DELEG, 4.0)),
            events("agent.related", related(g.d, g.f, COLLAB, 1.0)),
        ],
    )
    return g


async def test_collaborators_of_counts_collaboration_both_ways_and_delegation_outgoing(
    graph: GraphStore, agents: Agents
) -> None:
    missing = uuid4()
    found = await graph.queries.collaborators_of([agents.a, agents.b, missing, agents.a], first=10)
    assert found == {
        agents.a: [
            Collaborator(agents.c, 2.0, COLLAB),
            Collaborator(agents.d, 1.0, DELEG),
            Collaborator(agents.b, 0.5, COLLAB),
        ],
        agents.b: [Collaborator(agents.a, 0.5, COLLAB)],
        missing: [],
    }
    heaviest = await graph.queries.collaborators_of([agents.a, agents.b], first=2)
    assert heaviest == {
        agents.a: [Collaborator(agents.c, 2.0, COLLAB), Collaborator(agents.d, 1.0, DELEG)],
        agents.b: [Collaborator(agents.a, 0.5, COLLAB)],
    }
    with roundtrips.counting() as counter:
        assert await graph.queries.collaborators_of([agents.a], first=0) == {agents.a: []}
    assert counter["neo4j"] == 0


async def test_a_read_whose_connection_the_network_dropped_is_retried(
    settings: Settings, agents: Agents
) -> None:
    # Reads run auto-commit (one exchange with the server); a connection found dead
    # on the way gets the managed transaction's retries, not an error.
    bolt = urlsplit(settings.neo4j_uri)
    assert bolt.hostname is not None and bolt.port is not None
    async with Gate(bolt.hostname, bolt.port) as gate:
        options = replace(settings.graph_options(), uri=f"bolt://127.0.0.1:{gate.port}")
        async with GraphStore(options) as behind_gate:
            first = await behind_gate.queries.collaborators_of([agents.a], first=10)
            assert first[agents.a]
            gate.close()  # the pooled connections end; new ones go through
            gate.open()
            with roundtrips.counting() as trips:
                again = await behind_gate.queries.collaborators_of([agents.a], first=10)
            assert again == first
            assert trips["neo4j"] == 1


async def test_parents_and_children(graph: GraphStore, agents: Agents) -> None:
    missing = uuid4()
    assert await graph.queries.parents_of([agents.a, agents.e, agents.p, missing]) == {
        agents.a: agents.p,
        agents.e: agents.p,
        agents.p: None,
        missing: None,
    }
    children = await graph.queries.children_of([agents.p, agents.a], first=10)
    assert children == {agents.p: sorted([agents.a, agents.e], key=str), agents.a: []}
    # At most `first` per agent, the first by name (then id), none without a round trip.
    first_one = await graph.queries.children_of([agents.p, agents.a], first=1)
    assert first_one == {agents.p: sorted([agents.a, agents.e], key=str)[:1], agents.a: []}
    with roundtrips.counting() as counter:
        assert await graph.queries.children_of([agents.p], first=0) == {agents.p: []}
    assert counter["neo4j"] == 0


async def test_neighbourhood_by_depth_and_type(graph: GraphStore, agents: Agents) -> None:
    g = agents
    near = await graph.queries.neighbourhood(g.a, depth=1)
    assert {(n.agent_id, n.distance) for n in near.nodes} == {
        (g.a, 0),
        (g.b, 1),
        (g.c, 1),
        (g.d, 1),
        (g.e, 1),
        (g.p, 1),
    }
    assert near.nodes[0] == NeighbourNode(g.a, 0)
    assert {(e.source, e.target, e.type) for e in near.edges} == {
        (g.a, g.b, COLLAB),
        (g.c, g.a, COLLAB),
        (g.a, g.d, DELEG),
        (g.e, g.a, DELEG),
        (g.p, g.a, PARENT),
        (g.p, g.e, PARENT),
    }
    assert NeighbourEdge(g.p, g.a, PARENT, None) in near.edges

    collaborators = await graph.queries.neighbourhood(g.a, depth=3, types=["COLLABORATES_WITH"])
    assert {(n.agent_id, n.distance) for n in collaborators.nodes} == {(g.a, 0), (g.b, 1), (g.c, 1)}

    working = await graph.queries.neighbourhood(g.a, depth=2, types=[COLLAB, DELEG])
    assert {(n.agent_id, n.distance) for n in working.nodes} == {
        (g.a, 0),
        (g.b, 1),
        (g.c, 1),
        (g.d, 1),
        (g.e, 1),
        (g.f, 2),
    }
    assert (g.d, g.f, COLLAB) in {(e.source, e.target, e.type) for e in working.edges}
    assert [n.distance for n in working.nodes] == sorted(n.distance for n in working.nodes)

    nobody = await graph.queries.neighbourhood(uuid4(), depth=2)
    assert (nobody.nodes, nobody.edges) == ([], [])


async def test_neighbourhood_refuses_bad_depth_and_unknown_types(
    graph: GraphStore, agents: Agents
) -> None:
    with pytest.raises(InvalidInput) as depth:
        await graph.queries.neighbourhood(agents.a, depth=6)
    assert depth.value.field == "depth"
    with pytest.raises(InvalidInput) as types:
        await graph.queries.neighbourhood(agents.a, depth=1, types=["KNOWS) DETACH DELETE (n"])
    assert types.value.field == "types"


async def test_shortest_path(graph: GraphStore, agents: Agents) -> None:
    g = agents
    assert await graph.queries.shortest_path(g.b, g.f) == [g.b, g.a, g.d, g.f]
    # Without delegation F cannot be reached from B.
    assert await graph.queries.shortest_path(g.b, g.f, types=[COLLAB, PARENT]) is None
    assert await graph.queries.shortest_path(g.b, g.f, max_depth=2) is None
    assert await graph.queries.shortest_path(g.b, g.e, types=[COLLAB, PARENT]) == [
        g.b,
        g.a,
        g.p,
        g.e,
    ]
    assert await graph.queries.shortest_path(g.a, g.a) == [g.a]
    assert await graph.queries.shortest_path(g.a, uuid4()) is None


async def test_most_connected(graph: GraphStore, ids: Ids, events: Events) -> None:
    hub, pair = ids.new(), ids.new()
    spokes = ids.many(12)
    await projection.apply(
        graph,
        [
            *(events("agent.upserted", agent(x)) for x in (hub, pair, *spokes)),
            *(events("agent.related", related(hub, s, DELEG)) for s in spokes),
            *(events("agent.related", related(pair, s, COLLAB)) for s in spokes[:6]),
        ],
    )
    mine = {hub, pair}

    def only_mine(ranking: list[AgentDegree]) -> list[AgentDegree]:
        return [entry for entry in ranking if entry.agent_id in mine]

    everything = await graph.queries.most_connected(first=1000)
    assert only_mine(everything) == [AgentDegree(hub, 12), AgentDegree(pair, 6)]
    assert [d.degree for d in everything] == sorted((d.degree for d in everything), reverse=True)
    delegation = await graph.queries.most_connected(first=1000, types=[DELEG])
    assert only_mine(delegation) == [AgentDegree(hub, 12)]
    with pytest.raises(InvalidInput):
        await graph.queries.most_connected(first=0)


@dataclass
class Tasks:
    """t1 -> t2 -> t3 (completed) -> t4;  t1 -> t5 (cancelled);  t6 -> t1;
    t7 -> t8 -> t10,  t7 -> t9 (completed)."""

    t1: UUID
    t2: UUID
    t3: UUID
    t4: UUID
    t5: UUID
    t6: UUID
    t7: UUID
    t8: UUID
    t9: UUID
    t10: UUID


@pytest.fixture
async def tasks(graph: GraphStore, ids: Ids, events: Events) -> Tasks:
    t = Tasks(*ids.many(10))
    done = {t.t3: "completed", t.t5: "cancelled", t.t9: "completed"}
    await projection.apply(
        graph,
        [
            *(
                events("task.upserted", task(x, status=done.get(x, "pending")))
                for x in vars(t).values()
            ),
            *(
                events("task.dependency_added", depends(a, b))
                for a, b in [
                    (t.t1, t.t2),
                    (t.t2, t.t3),
                    (t.t3, t.t4),
                    (t.t1, t.t5),
                    (t.t6, t.t1),
                    (t.t7, t.t8),
                    (t.t8, t.t10),
                    (t.t7, t.t9),
                ]
            ),
        ],
    )
    return t


async def test_blockers_are_transitive_and_skip_finished_tasks(
    graph: GraphStore, tasks: Tasks
) -> None:
    t, missing = tasks, uuid4()
    assert await graph.queries.blockers_of([t.t1, t.t2, t.t4, missing], first=10) == {
        t.t1: sorted([t.t2, t.t4]),
        t.t2: [t.t4],
        t.t4: [],
        missing: [],
    }
    # At most `first` per task, in id order; none without a round trip.
    assert await graph.queries.blockers_of([t.t1, t.t2], first=1) == {
        t.t1: sorted([t.t2, t.t4])[:1],
        t.t2: [t.t4],
    }
    with roundtrips.counting() as counter:
        assert await graph.queries.blockers_of([t.t1], first=0) == {t.t1: []}
    assert counter["neo4j"] == 0


async def test_dependents(graph: GraphStore, tasks: Tasks) -> None:
    t, queries = tasks, graph.queries
    assert await queries.dependents_of(t.t4, first=10) == sorted([t.t3, t.t2, t.t1, t.t6])
    assert await queries.dependents_of(t.t4, first=10, transitive=False) == [t.t3]
    assert await queries.dependents_of(t.t6, first=10) == []
    # At most `first`, in id order; none without a round trip.
    assert await queries.dependents_of(t.t4, first=2) == sorted([t.t3, t.t2, t.t1, t.t6])[:2]
    with roundtrips.counting() as counter:
        assert await queries.dependents_of(t.t4, first=0) == []
    assert counter["neo4j"] == 0


async def test_task_critical_path_follows_unfinished_tasks_only(
    graph: GraphStore, tasks: Tasks
) -> None:
    t = tasks
    assert await graph.queries.task_critical_path(t.t7) == [t.t10, t.t8]
    # t3 is completed, so the chain below t1 stops at t2.
    assert await graph.queries.task_critical_path(t.t6) == [t.t2, t.t1]
    assert await graph.queries.task_critical_path(t.t4) == []
    assert await graph.queries.task_critical_path(uuid4()) == []


async def test_critical_path_is_the_heaviest_chain_not_the_longest(
    graph: GraphStore, ids: Ids, events: Events
) -> None:
    flow, empty = ids.new(), ids.new()
    steps = {"a": 1, "b": 5, "c": 1, "d": 1, "e": 1, "x": 1, "y": 1}
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "x"), ("x", "y"), ("y", "e"), ("d", "e")]
    await projection.apply(
        graph,
        [
            events(
                "workflow.upserted",
                {
                    "id": str(flow),
                    "name": "release",
                    "status": "active",
                    "steps": [
                        {"id": k, "name": k.upper(), "estimate": v} for k, v in steps.items()
                    ],
                    "edges": [{"from": a, "to": b} for a, b in edges],
                },
            ),
            events(
                "workflow.upserted",
                {"id": str(empty), "name": "empty", "status": "draft", "steps": [], "edges": []},
            ),
        ],
    )

    assert await graph.queries.critical_path(flow) == CriticalPath(["a", "b", "d", "e"], 8.0)
    assert await graph.queries.critical_path(empty) == CriticalPath([], 0.0)
    assert await graph.queries.critical_path(uuid4()) is None


async def test_batch_queries_take_one_round_trip_whatever_the_number_of_ids(
    graph: GraphStore, agents: Agents, tasks: Tasks
) -> None:
    many_agents = [agents.a, agents.b, agents.p, *(uuid4() for _ in range(60))]
    many_tasks = [tasks.t1, tasks.t7, *(uuid4() for _ in range(60))]
    for query in (
        lambda: graph.queries.collaborators_of(many_agents, first=10),
        lambda: graph.queries.parents_of(many_agents),
        lambda: graph.queries.children_of(many_agents, first=10),
        lambda: graph.queries.blockers_of(many_tasks, first=10),
    ):
        with roundtrips.counting() as counter:
            found = await query()
        assert len(found) == len(set(found)) > 60
        assert counter["neo4j"] == 1
    with roundtrips.counting() as counter:
        await graph.queries.neighbourhood(agents.a, depth=3)
        await graph.queries.critical_path(uuid4())
    assert counter["neo4j"] == 2
    with roundtrips.counting() as counter:
        assert await graph.queries.collaborators_of([], first=10) == {}
    assert counter["neo4j"] == 0


async def test_a_read_cancelled_while_connecting_leaves_no_socket_open(settings: Settings) -> None:
    # Each store starts with an empty pool, so the read opens a connection; cancelling
    # its caller some loop iterations in lands, for some of them, inside the driver's
    # connect, which used to leave the socket to the garbage collector
    # (ResourceWarning: unclosed socket, an error in this suite).
    for steps in range(40):
        async with GraphStore(settings.graph_options()) as graph:
            caller = asyncio.ensure_future(graph.queries.collaborators_of([uuid4()], first=10))
            for _ in range(steps):
                await asyncio.sleep(0)
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
            await until(lambda: not _pending_reads())
        gc.collect()


def _pending_reads() -> list[asyncio.Task[object]]:
    # Other tasks may run coroutine-likes without a name (an async generator closing).
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", None) == "_read"
    ]
