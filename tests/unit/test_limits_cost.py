"""The static cost model on the real schema: sizes from arguments, estimates, weights."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import FragmentDefinitionNode, get_operation_ast, parse

from gateway.limits.cost import CostPlan
from gateway.limits.extension import _event_actual
from schema import build_schema

SCHEMA = build_schema()._schema


def plan(query: str) -> CostPlan:
    document = parse(query)
    operation = get_operation_ast(document)
    assert operation is not None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    return CostPlan.of(SCHEMA, operation, fragments)


@pytest.mark.parametrize(
    ("query", "variables", "cost"),
    [
        # The connection 1, its edges and nodes `first` each.
        ("{ agents(first: 5) { edges { node { id } } } }", {}, 11),
        # No `first`: the store's page size, 20.
        ("{ agents { edges { node { id } } } }", {}, 41),
        # `first` from a variable; `totalCount` costs its COUNT.
        ("query($n: Int) { agents(first: $n) { totalCount edges { node { id } } } }", {"n": 2}, 6),
        # A nested connection's own default (Agent.tasks: 10), per agent.
        ("{ agents(first: 2) { edges { node { tasks { edges { node { id } } } } } } }", {}, 47),
        # An unsized list: 10 per run.
        ("{ conversations(first: 1) { edges { node { participants { role } } } } }", {}, 13),
        # Task.blockers weighs 10 more per run (a traversal), then its `first` objects.
        ("{ tasks(first: 1) { edges { node { blockers(first: 2) { id } } } } }", {}, 15),
        ('{ taskDependents(taskId: "VGFzazox", first: 3) { id } }', {}, 13),
        ("{ agents(first: 2) { edges { node { sessions(first: 3) { id } } } } }", {}, 11),
        # A list's `first`, by default (Agent.children, Agent.collaborators: 10) or given.
        ("{ agents(first: 1) { edges { node { achievements { type } } } } }", {}, 13),
        ("{ tasks(first: 1) { edges { node { history(first: 3) { type } } } } }", {}, 6),
        ("{ agents(first: 1) { edges { node { children { id } } } } }", {}, 13),
        ("{ agents(first: 1) { edges { node { children(first: 2) { id } } } } }", {}, 5),
        ("{ agents(first: 1) { edges { node { collaborators { agent { id } } } } } }", {}, 23),
        (
            "{ agents(first: 1) { edges { node { collaborators(first: 50) { agent { id } } } } } }",
            {},
            103,
        ),
        # Ids decide the size; a search weighs 10 more per call.
        ("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ["a", "b", "c"]}, 3),
        ('{ searchKnowledge(query: "x", first: 4) { edges { node { id } } } }', {}, 19),
        ('{ searchMessages(query: "x", first: 4) { edges { node { id } } } }', {}, 19),
        # Series: agents x names.
        (
            'query($a: [ID!]!) { metricSeries(names: ["e", "f"], agents: $a, from: "2025-01-01T00:00:00Z", to: "2025-01-02T00:00:00Z") { name } }',
            {"a": ["x", "y", "z"]},
            11,
        ),
        # A mutation weighs 10.
        ('mutation { createTask(input: {title: "t"}) { task { id } } }', {}, 12),
        # Scalars and __typename are free.
        ("{ __typename viewer { id displayName } }", {}, 1),
        # Introspection single objects are free, its lists count.
        ("{ __schema { queryType { name } } }", {}, 0),
    ],
)
def test_requested_cost(query: str, variables: dict[str, Any], cost: int) -> None:
    assert plan(query).requested(variables) == cost


NEIGHBOURHOOD = (
    "query($id: ID!, $depth: Int) { agentNeighbourhood(agentId: $id, depth: $depth) {"
    " nodes { distance agent { id } } edges { type source { id } target { id } } } }"
)


def test_a_neighbourhood_costs_what_its_depth_reaches() -> None:
    """Nodes and edges grow tenfold a hop, up to the store's 1,000 agents and the
    centre: a deep traversal is priced like the Neo4j work it asks for."""
    neighbourhood = plan(NEIGHBOURHOOD)
    costs = [neighbourhood.requested({"id": "x", "depth": d}) for d in (None, 1, 2, 3, 5)]
    # 1 for the object, 10 for the traversal, then nodes, agents, edges, sources, targets.
    assert costs == [61, 61, 511, 5_011, 5_016]
    literal = plan('{ agentNeighbourhood(agentId: "x", depth: 2) { nodes { distance } } }')
    assert literal.requested({}) == 111


def test_a_fragment_spread_twice_at_one_level_runs_once() -> None:
    once = plan("{ agents(first: 5) { edges { node { id } } } }").requested({})
    twice = plan(
        "{ agents(first: 5) { ...A ...A } } fragment A on AgentConnection { edges { node { id } } }"
    ).requested({})
    assert once == twice


def test_each_hop_of_collaborators_multiplies_the_cost() -> None:
    def hops(n: int) -> int:
        inner = "id"
        for _ in range(n):
            inner = f"collaborators {{ agent {{ {inner} }} }}"
        return plan(f"{{ agents(first: 5) {{ edges {{ node {{ {inner} }} }} }} }}").requested({})

    assert [hops(n) for n in (1, 2, 3)] == [111, 1_111, 11_111]
    assert hops(14) > 10**15


def test_actual_cost_counts_what_came_back() -> None:
    cost = plan(
        "{ agents(first: 5) { totalCount edges { node { id collaborators { agent { id } } } } } }"
    )
    data = {
        "agents": {
            "totalCount": 2,
            "edges": [
                {"node": {"id": "1", "collaborators": [{"agent": {"id": "2"}}]}},
                {"node": {"id": "2", "collaborators": None}},
            ],
        }
    }
    # agents 1, totalCount 1, 2 edges, 2 nodes, 1 collaboration, 1 agent.
    assert cost.actual(data) == 8
    assert cost.actual(None) == 0
    # Nulls, in lists or in place of an object, are not objects.
    with_nulls = {
        "agents": {
            "totalCount": 2,
            "edges": [
                None,
                {"node": {"id": "1", "collaborators": [None, {"agent": None}, {"agent": {}}]}},
            ],
        }
    }
    # agents 1, totalCount 1, 1 edge, 1 node, 2 collaborations, 1 agent.
    assert cost.actual(with_nulls) == 7


def test_an_events_actual_cost_is_worked_out_once_for_all_its_subscribers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = plan("{ agents(first: 5) { edges { node { id } } } }")
    other = plan("{ agents(first: 5) { totalCount edges { node { id } } } }")
    walks: list[object] = []
    walk = CostPlan.actual

    def counted(self: CostPlan, data: object) -> int:
        walks.append(data)
        return walk(self, data)

    monkeypatch.setattr(CostPlan, "actual", counted)
    event = {"agents": {"totalCount": 1, "edges": [{"node": {"id": "1"}}]}}
    # One data object, as one execution hands it to every subscriber of the event.
    assert [_event_actual(first, event) for _ in range(3)] == [3, 3, 3]
    assert len(walks) == 1
    # Another plan, or another event's data (even equal), is walked afresh.
    assert _event_actual(other, event) == 4
    assert _event_actual(first, dict(event)) == 3
    assert len(walks) == 3
