"""Round trips grow with the depth of a query, never with the size of a page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest
from strawberry import relay

import schema.agents
import schema.presence
from gateway.settings import Settings
from schema.agents import load_sessions
from schema.metrics import agent_metrics
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

PAGE_QUERY = """
query Page($tag: String!, $first: Int!, $metric: String!, $from: DateTime!, $to: DateTime!) {
  agents(filter: {tagsAny: [$tag]}, first: $first) {
    edges { node {
      name
      tasks(first: 3) {
        totalCount
        edges { node { title assignee { name } dependencies { title } history { type } } }
      }
      collaborators { weight agent { name } }
      parent { name }
      children { name }
      sessions { id }
      achievements { points }
      metrics(name: $metric, from: $from, to: $to, bucket: "10m", aggregate: MAX) {
        source points { time value }
      }
    } }
  }
}
"""


def _create(gql: GraphQL, caller: Caller, **fields: object) -> str:
    created = data(
        gql(
            """mutation($input: CreateAgentInput!) {
              createAgent(input: $input) { agent { id } userErrors { code } } }""",
            {"input": {"name": unique("rt"), **fields}},
            caller=caller,
        )
    )["createAgent"]
    agent_id: str = created["agent"]["id"]
    return agent_id


def _new_metric(gql: GraphQL, caller: Caller) -> str:
    name = unique("metric").replace("-", "_")
    registered = data(
        gql(
            "mutation($n: String!) { registerMetric(input: {name: $n}) { userErrors { code } } }",
            {"n": name},
            caller=caller,
        )
    )["registerMetric"]
    assert registered == {"userErrors": []}
    return name


def _record(gql: GraphQL, caller: Caller, points: list[dict[str, object]]) -> None:
    recorded = data(
        gql(
            """mutation($p: [MetricPointInput!]!) { recordMetrics(input: {points: $p}) {
               accepted userErrors { field } } }""",
            {"p": points},
            caller=caller,
        )
    )["recordMetrics"]
    assert recorded == {"accepted": len(points), "userErrors": []}


def _seed_agents(gql: GraphQL, caller: Caller, tag: str, count: int, parent: str) -> list[str]:
    """`count` tagged agents under an untagged parent, so what the page's nested fields
    load lies outside the page for every page size (no loader priming differences)."""
    ids: list[str] = []
    for index in range(count):
        created = data(
            gql(
                """mutation($input: CreateAgentInput!) {
                  createAgent(input: $input) { agent { id } userErrors { code } } }""",
                {
                    "input": {
                        "name": unique(f"rt{index}"),
                        "tags": [tag],
                        "parentId": parent,
                        "waitForProjection": index == count - 1,
                    }
                },
                caller=caller,
            )
        )["createAgent"]
        ids.append(created["agent"]["id"])
    return ids


def _counted(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, resolved: list[str]
) -> None:
    """Replaces `module.name`, a resolver's loading function taking (info, agent id,
    arguments...), by one that also notes each call in `resolved`."""
    original = getattr(module, name)

    async def counted(info: Any, agent_id: UUID, *arguments: Any) -> Any:
        resolved.append(" ".join([name, *map(str, arguments)]))
        return await original(info, agent_id, *arguments)

    monkeypatch.setattr(module, name, counted)


def _tagged_page(fields: str) -> str:
    """A page of the agents tagged `$tag`, oldest first, with `fields` of each."""
    return f"""query($tag: String!) {{
      agents(filter: {{tagsAny: [$tag]}}, first: 10, orderBy: CREATED_AT_ASC) {{
        edges {{ node {{ id {fields} }} }} }} }}"""


def _each_answers_as_alone(
    gql: GraphQL, page: list[dict[str, Any]], fields: str, caller: Caller
) -> None:
    """Each agent of `page` reads the same `fields` alone as it did in the page."""
    alone = f"query($id: ID!) {{ node(id: $id) {{ ... on Agent {{ id {fields} }} }} }}"
    for edge in page:
        node = edge["node"]
        assert node == data(gql(alone, {"id": node["id"]}, caller=caller))["node"]


def test_round_trips_are_the_same_for_10_and_100_agents(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    tag = unique("rt")
    root = _create(gql, operator)
    outsiders = [_create(gql, operator) for _ in range(2)]
    ids = _seed_agents(gql, operator, tag, 100, root)
    # Some tasks, a dependency and collaborations so every nested field has data.
    task_ids = []
    for agent_id in ids[:3] + ids[-3:]:
        task = data(
            gql(
                """mutation($a: ID!, $t: String!) { createTask(input: {title: $t, assigneeId: $a}) {
                   task { id } userErrors { code } } }""",
                {"a": agent_id, "t": unique("task")},
                caller=operator,
            )
        )["createTask"]["task"]
        task_ids.append(task["id"])
    data(
        gql(
            """mutation($a: ID!, $b: ID!) { addTaskDependency(input: {taskId: $a, dependsOnId: $b}) {
               userErrors { code } } }""",
            {"a": task_ids[0], "b": task_ids[1]},
            caller=operator,
        )
    )
    for source, target in ((ids[1], outsiders[0]), (ids[-1], outsiders[1])):
        data(
            gql(
                """mutation($s: ID!, $t: ID!) { relateAgents(input: {sourceId: $s, targetId: $t,
                   type: COLLABORATES_WITH}) { userErrors { code } } }""",
                {"s": source, "t": target},
                caller=operator,
            )
        )
    agent_user = make_caller("agent")
    data(
        gql(
            """mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) {
               created } }""",
            {"u": str(relay.GlobalID("User", agent_user.user_id)), "a": ids[1]},
            caller=operator,
        )
    )
    login = data(
        gql(
            """mutation($key: String!, $agent: ID!) { login(input: {apiKey: $key, agentId: $agent}) {
               token userErrors { code } } }""",
            {"key": agent_user.api_key, "agent": ids[1]},
        )
    )["login"]
    assert login["userErrors"] == [] and login["token"]
    # Metric points for agents on both pages.
    metric = _new_metric(gql, operator)
    now = datetime.now(UTC)
    points = [
        {"agentId": agent_id, "name": metric, "value": float(i), "time": now.isoformat()}
        for i, agent_id in enumerate(ids[:2] + ids[-2:])
    ]
    _record(gql, operator, points)
    window = {
        "metric": metric,
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": now.isoformat(),
    }

    small = data(gql(PAGE_QUERY, {"tag": tag, "first": 10, **window}, caller=operator))
    small_trips = dict(gql.last_round_trips)
    large = data(gql(PAGE_QUERY, {"tag": tag, "first": 100, **window}, caller=operator))
    large_trips = dict(gql.last_round_trips)

    assert len(small["agents"]["edges"]) == 10
    assert len(large["agents"]["edges"]) == 100
    nodes = [edge["node"] for edge in large["agents"]["edges"]]
    assert any(node["sessions"] for node in nodes)
    assert any(node["collaborators"] for node in nodes)
    assert any(node["tasks"]["edges"] for node in nodes)
    assert sum(bool(node["metrics"]["points"]) for node in nodes) == 4
    assert {"postgres", "neo4j", "redis", "metrics"} <= small_trips.keys(), small_trips
    # Loaders batch per event-loop tick, and agents are asked for in waves (task assignees
    # once PostgreSQL answers; collaborators, parent and children once Neo4j does), so the
    # count can differ by a wave with timing. What must not happen is growth with the page:
    # both pages stay within one budget, set by the query's shape alone (authentication's
    # API key lookup and the rate limit charges, the request's and the operation's,
    # included).
    budget = {"postgres": 10, "neo4j": 3, "redis": 3, "metrics": 1}
    for trips in (small_trips, large_trips):
        assert set(trips) <= set(budget), trips
        assert all(trips[store] <= budget[store] for store in trips), (trips, budget)


def test_agent_tasks_follow_their_order_and_filter(gql: GraphQL, operator: Caller) -> None:
    agent_id = _create(gql, operator)
    for priority in (3, 9, 5):
        data(
            gql(
                """mutation($a: ID!, $p: Int!) { createTask(input: {title: "p", priority: $p, assigneeId: $a, waitForProjection: false}) { task { id } } }""",
                {"a": agent_id, "p": priority},
                caller=operator,
            )
        )
    query = """query($id: ID!) { node(id: $id) { ... on Agent {
        byPriority: tasks(first: 2, orderBy: PRIORITY_DESC) { totalCount edges { node { priority } } }
        none: tasks(filter: {status: [COMPLETED]}) { totalCount }
    } } }"""
    agent = data(gql(query, {"id": agent_id}, caller=operator))["node"]
    assert [e["node"]["priority"] for e in agent["byPriority"]["edges"]] == [9, 5]
    assert agent["byPriority"]["totalCount"] == 3
    assert agent["none"]["totalCount"] == 0


PAGE_COLLABORATORS_QUERY = """
query($tag: String!) {
  agents(filter: {tagsAny: [$tag]}, first: 10, orderBy: NAME_ASC) { edges { node {
    id
    collaborators { weight type agent { id name } }
    top: collaborators(first: 1) { weight agent { name status } }
    links: collaborators { type }
  } } }
}
"""


def test_a_page_loads_its_collaborators_and_their_agents_once(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    """The page loads every agent's links up front (one Neo4j query per distinct
    `first`) and the agents they name (one PostgreSQL query per distinct selection);
    each agent's fields answer from that, exactly as one agent's own fields answer."""
    tag = unique("collab")
    ids = [
        _create(gql, operator, name=f"{tag}-{index}", tags=[tag], waitForProjection=True)
        for index in range(4)
    ]
    outsider = _create(gql, operator, waitForProjection=True)
    relate = """mutation($s: ID!, $t: ID!, $type: AgentLinkType!, $w: Float!) {
      relateAgents(input: {sourceId: $s, targetId: $t, type: $type, weight: $w}) {
        projected userErrors { code } } }"""
    for source, target, kind, weight in (
        (ids[0], ids[1], "COLLABORATES_WITH", 0.9),
        (ids[0], outsider, "DELEGATES_TO", 0.4),
        (ids[2], ids[0], "COLLABORATES_WITH", 0.2),
    ):
        result = data(
            gql(relate, {"s": source, "t": target, "type": kind, "w": weight}, caller=operator)
        )["relateAgents"]
        assert result == {"projected": True, "userErrors": []}

    # The least role that reads agents.
    page = data(gql(PAGE_COLLABORATORS_QUERY, {"tag": tag}, caller=viewer))["agents"]["edges"]
    trips = dict(gql.last_round_trips)
    # Links for `first: 10` and `first: 1`; the agents `agent { id name }` and
    # `agent { name status }` name. Never a query per agent, nor a second for any key.
    assert trips["neo4j"] == 2, trips
    alone = """query($id: ID!) { node(id: $id) { ... on Agent { id
      collaborators { weight type agent { id name } }
      top: collaborators(first: 1) { weight agent { name status } }
      links: collaborators { type } } } }"""
    trips_alone = []
    for edge in page:
        assert edge["node"] == data(gql(alone, {"id": edge["node"]["id"]}, caller=viewer))["node"]
        trips_alone.append(dict(gql.last_round_trips))
    # A page of agents costs what one agent does: its agents in one query, then one per
    # selection of the linked agents.
    assert trips == trips_alone[0], (trips, trips_alone[0])
    first = page[0]["node"]
    assert [link["agent"]["id"] for link in first["collaborators"]] == [ids[1], outsider, ids[2]]
    assert first["top"] == [{"weight": 0.9, "agent": {"name": f"{tag}-1", "status": "IDLE"}}]
    assert [edge["node"]["links"] for edge in page[3:]] == [[]]


def test_a_page_loads_its_metrics_once_and_answers_as_one_agent_does(
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page settles each `metrics` field's series for all its agents (one query per
    distinct question, the arguments from variables); each agent's series is what its
    own `metrics` answers, and the resolver runs for the first agent only."""
    tag = unique("pagemetrics")
    ids = [_create(gql, operator, name=f"{tag}-{index}", tags=[tag]) for index in range(3)]
    metric = _new_metric(gql, operator)
    now = datetime.now(UTC).replace(microsecond=0)
    # The start of a ten-minute bucket well inside the hour asked for, whatever the clock.
    bucket = now.replace(minute=now.minute - now.minute % 10, second=0) - timedelta(minutes=30)
    points = [
        {"agentId": agent_id, "name": metric, "value": float(value), "time": when.isoformat()}
        for agent_id, value, when in (
            (ids[0], 1, bucket + timedelta(minutes=1)),
            (ids[0], 3, bucket + timedelta(minutes=2)),
            (ids[2], 5, bucket + timedelta(minutes=5)),
        )
    ]
    _record(gql, operator, points)
    fields = """
      avg: metrics(name: $m, from: $from, to: $to, bucket: "10m") { bucket points { time value } }
      max: metrics(name: $m, from: $from, to: $to, bucket: "1h", aggregate: MAX) {
        aggregate points { value } }
      bad: metrics(name: $m, from: $from, to: $to, bucket: "7 fortnights") { bucket }
    """
    window = {
        "m": metric,
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
    }
    page_query = f"""query($tag: String!, $m: String!, $from: DateTime!, $to: DateTime!) {{
      agents(filter: {{tagsAny: [$tag]}}, first: 10, orderBy: NAME_ASC) {{
        edges {{ node {{ id {fields} }} }} }} }}"""
    alone_query = f"""query($id: ID!, $m: String!, $from: DateTime!, $to: DateTime!) {{
      node(id: $id) {{ ... on Agent {{ id {fields} }} }} }}"""

    resolved: list[UUID] = []

    async def counted(info: Any, agent_id: UUID, **arguments: Any) -> Any:
        resolved.append(agent_id)
        return await agent_metrics(info, agent_id, **arguments)

    monkeypatch.setattr(schema.agents, "agent_metrics", counted)
    # The least role that reads metrics.
    page = gql(page_query, {"tag": tag, **window}, caller=viewer)
    # The two good fields for the first agent only (it hands the executor their
    # arguments); the refused one, for every agent, so each reports its error.
    # graphql-core's executor calls the resolver for every agent and field (3 x 3); the
    # planned one, which the tests run beside it (tests/conftest.py), for the two good
    # fields of the first agent only (it hands the executor their arguments), and for
    # the refused one of every agent, so that each reports its error.
    stock_calls = 3 * 3
    planned_calls = 0 if settings.executor == "stock" else 2 + 3
    assert len(resolved) == stock_calls + planned_calls, resolved
    # Two questions (the third's bucket is refused before any query): one read each.
    assert gql.last_round_trips["metrics"] == 2, gql.last_round_trips
    edges = page["data"]["agents"]["edges"]
    assert [edge["node"]["id"] for edge in edges] == ids
    assert [point["value"] for point in edges[0]["node"]["avg"]["points"]] == [2.0]
    assert edges[1]["node"]["avg"]["points"] == []
    assert edges[2]["node"]["max"]["points"] == [{"value": 5.0}]
    for index, edge in enumerate(edges):
        alone = gql(alone_query, {"id": edge["node"]["id"], **window}, caller=viewer)
        assert edge["node"] == alone["data"]["node"]
        # The refused field's error, at this agent's path, as the agent alone gets it.
        page_errors = [e for e in page["errors"] if e["path"][2] == index]
        assert [(e["message"], e["path"][-1]) for e in page_errors] == [
            (e["message"], e["path"][-1]) for e in alone["errors"]
        ]


def test_a_page_loads_its_parents_and_children_once_and_answers_as_one_agent_does(
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page settles its agents' parents and children (one Neo4j query per field and
    `first`, then the agents they name): each agent's answer is what it gets alone, and
    the resolvers run for the first agent only, a missing parent included."""
    tag = unique("family")
    root = _create(gql, operator, name=f"{tag}-root")
    ids = _seed_agents(gql, operator, tag, 3, root)
    # And one at the top of the hierarchy: a parent settled as null.
    ids.append(_create(gql, operator, name=f"{tag}-top", tags=[tag], waitForProjection=True))
    for index in range(2):
        _create(gql, operator, name=f"{tag}-kid-{index}", parentId=ids[0], waitForProjection=True)
    fields = "parent { id name } children { name } first: children(first: 1) { id }"
    page_query = _tagged_page(fields)

    resolved: list[str] = []
    _counted(monkeypatch, schema.agents, "load_parent", resolved)
    _counted(monkeypatch, schema.agents, "load_children", resolved)
    # The least role that reads agents.
    page = data(gql(page_query, {"tag": tag}, caller=viewer))["agents"]["edges"]
    # The parents, the children for `first: 10` and for `first: 1`.
    assert gql.last_round_trips["neo4j"] == 3, gql.last_round_trips
    # graphql-core's executor calls the resolvers for every agent and field (4 x 3); the
    # planned one, which the tests run beside it (tests/conftest.py), for the first
    # agent's only: it hands the executor their arguments.
    stock_calls = 4 * 3
    planned_calls = 0 if settings.executor == "stock" else 3
    assert len(resolved) == stock_calls + planned_calls, resolved

    assert [edge["node"]["id"] for edge in page] == ids
    assert [(edge["node"]["parent"] or {}).get("id") for edge in page] == [root] * 3 + [None]
    assert [len(edge["node"]["children"]) for edge in page] == [2, 0, 0, 0]
    assert len(page[0]["node"]["first"]) == 1
    _each_answers_as_alone(gql, page, fields, viewer)


def test_a_page_loads_its_agents_sessions_once_for_those_the_caller_may_see(
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    make_caller: Callable[[str], Caller],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page settles its agents' sessions in one Redis round trip, each agent's
    permission checked as its own resolver checks it: an operator's page runs the
    resolver for the first agent only, a viewer's is refused at every agent's path."""
    tag = unique("sessions")
    ids = [_create(gql, operator, name=f"{tag}-{index}", tags=[tag]) for index in range(3)]
    agent_user = make_caller("agent")
    granted = data(
        gql(
            """mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) {
               created } }""",
            {"u": str(relay.GlobalID("User", agent_user.user_id)), "a": ids[1]},
            caller=operator,
        )
    )
    assert granted["grantAgentAccess"]["created"]
    login = data(
        gql(
            """mutation($key: String!, $agent: ID!) { login(input: {apiKey: $key, agentId: $agent}) {
               token session { id } userErrors { code } } }""",
            {"key": agent_user.api_key, "agent": ids[1]},
        )
    )["login"]
    assert login["userErrors"] == []
    page_query = """query($tag: String!) {
      agents(filter: {tagsAny: [$tag]}, first: 10, orderBy: CREATED_AT_ASC) {
        edges { node { id sessions { id role } } } } }"""
    alone_query = "query($id: ID!) { node(id: $id) { ... on Agent { id sessions { id role } } } }"

    resolved: list[UUID] = []

    async def counted(info: Any, agent_id: UUID, first: int) -> Any:
        resolved.append(agent_id)
        return await load_sessions(info, agent_id, first)

    monkeypatch.setattr(schema.agents, "load_sessions", counted)
    page = data(gql(page_query, {"tag": tag}, caller=operator))["agents"]["edges"]
    # graphql-core's executor calls the resolver for every agent; the planned one, which
    # the tests run beside it (tests/conftest.py), for the first agent only.
    assert len(resolved) == 3 + (0 if settings.executor == "stock" else 1), resolved
    assert [edge["node"]["id"] for edge in page] == ids
    assert [edge["node"]["sessions"] for edge in page] == [
        [],
        [{"id": login["session"]["id"], "role": "AGENT"}],
        [],
    ]
    for edge in page:
        assert (
            edge["node"]
            == data(gql(alone_query, {"id": edge["node"]["id"]}, caller=operator))["node"]
        )

    # A viewer sees none of them: each agent's field refused at its own path.
    resolved.clear()
    refused = gql(page_query, {"tag": tag}, caller=viewer)
    assert error_codes(refused) == ["FORBIDDEN"] * 3
    assert sorted(tuple(error["path"]) for error in refused["errors"]) == [
        ("agents", "edges", index, "node", "sessions") for index in range(3)
    ]
    assert [edge["node"]["sessions"] for edge in refused["data"]["agents"]["edges"]] == [None] * 3
    assert len(resolved) == 3 + (0 if settings.executor == "stock" else 3), resolved


def test_a_page_loads_its_presence_and_achievements_once_and_answers_as_one_agent_does(
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page settles its agents' presence (one Redis round trip) and achievements (one
    PostgreSQL query per `first`): each agent's answer is what it gets alone, and the
    resolvers run for the first agent only."""
    tag = unique("awards")
    ids = [_create(gql, operator, name=f"{tag}-{index}", tags=[tag]) for index in range(3)]
    award = """mutation($a: ID!, $t: String!) {
      awardAchievement(input: {agentId: $a, type: $t, points: 2}) { userErrors { code } } }"""
    for agent_id, kinds in zip(ids, (["first", "second"], ["only"], []), strict=True):
        for kind in kinds:
            awarded = data(gql(award, {"a": agent_id, "t": kind}, caller=operator))
            assert awarded["awardAchievement"] == {"userErrors": []}
    fields = (
        "presence { online activity } latest: achievements(first: 1) { type }"
        " achievements { type points }"
    )
    page_query = _tagged_page(fields)
    bare_page_query = _tagged_page("")

    resolved: list[str] = []
    _counted(monkeypatch, schema.presence, "presence_field", resolved)
    _counted(monkeypatch, schema.agents, "load_achievements", resolved)
    # The least role that reads agents and their presence.
    data(gql(bare_page_query, {"tag": tag}, caller=viewer))
    bare = gql.last_round_trips["postgres"]
    page = data(gql(page_query, {"tag": tag}, caller=viewer))["agents"]["edges"]
    # The achievements for `first: 1` and for the default `first`.
    assert gql.last_round_trips["postgres"] == bare + 2, gql.last_round_trips
    # graphql-core's executor calls the resolvers for every agent and field (3 x 3); the
    # planned one, which the tests run beside it (tests/conftest.py), for the first
    # agent's only.
    stock_calls = 3 * 3
    planned_calls = 0 if settings.executor == "stock" else 3
    assert len(resolved) == stock_calls + planned_calls, resolved

    assert [edge["node"]["id"] for edge in page] == ids
    assert [edge["node"]["presence"] for edge in page] == [{"online": False, "activity": None}] * 3
    assert [edge["node"]["latest"] for edge in page] == [
        [{"type": "second"}],
        [{"type": "only"}],
        [],
    ]
    assert [len(edge["node"]["achievements"]) for edge in page] == [2, 1, 0]
    _each_answers_as_alone(gql, page, fields, viewer)


def test_creating_a_task_is_one_statement_and_its_events_one_publish(
    gql: GraphQL, operator: Caller
) -> None:
    # Bench S5: a task without an assignee (pending), not waiting for Neo4j.
    create = """mutation($t: String!) { createTask(input: {title: $t, waitForProjection: false}) {
               task { id status } userErrors { code } } }"""
    for _ in range(2):  # the second on a warm connection and a cached session
        created = data(gql(create, {"t": unique("task")}, caller=operator))["createTask"]
    assert created["task"]["status"] == "PENDING"
    # PostgreSQL: the API key's lookup, then the write (BEGIN, two statements and COMMIT
    # before); Redis: the rate-limit charge, then both events (task.updated and
    # task.available) in one pipeline.
    assert gql.last_round_trips == {"neo4j": 0, "postgres": 2, "redis": 2}
