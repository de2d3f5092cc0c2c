"""Tasks and agents read as rows of the selected columns answer as whole records do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, GraphQL, data, unique

TASK_LEAVES = """
  id title description repository type payload priority status deadline startedAt
  completedAt result errorMessage retryCount maxRetries createdAt updatedAt version __typename
"""

# Only the tasks' own fields: read as rows of those columns (through a fragment, too).
ROWS_QUERY = f"""query($id: ID!) {{ node(id: $id) {{ ... on Agent {{
  tasks(first: 10) {{
    totalCount pageInfo {{ hasNextPage startCursor endCursor }}
    edges {{ cursor node {{ ...Leaves ... on Node {{ id }} }} }}
  }}
}} }} }}
fragment Leaves on Task {{ {TASK_LEAVES} }}"""

# The same and a resolver field (`assignee` reads the task's record): whole tasks.
WHOLE_QUERY = f"""query($id: ID!) {{ node(id: $id) {{ ... on Agent {{
  tasks(first: 10) {{
    totalCount pageInfo {{ hasNextPage startCursor endCursor }}
    edges {{ cursor node {{ {TASK_LEAVES} assignee {{ id }} }} }}
  }}
}} }} }}"""

PAGE_QUERY = """query($tag: String!, $first: Int!) {
  agents(filter: {tagsAny: [$tag]}, first: $first) { edges { node {
    id name tasks(first: 10) { edges { node { id title status priority } } }
  } } }
}"""


def _agent(gql: GraphQL, operator: Caller, tag: str) -> str:
    created = data(
        gql(
            """mutation($input: CreateAgentInput!) {
              createAgent(input: $input) { agent { id } userErrors { code } } }""",
            {"input": {"name": unique("rows"), "tags": [tag], "waitForProjection": False}},
            caller=operator,
        )
    )["createAgent"]
    assert created["userErrors"] == []
    agent_id: str = created["agent"]["id"]
    return agent_id


def _task(gql: GraphQL, operator: Caller, agent_id: str, **fields: object) -> None:
    created = data(
        gql(
            """mutation($input: CreateTaskInput!) {
              createTask(input: $input) { task { id } userErrors { code } } }""",
            {
                "input": {
                    "title": unique("row-task"),
                    "assigneeId": agent_id,
                    "waitForProjection": False,
                    **fields,
                }
            },
            caller=operator,
        )
    )["createTask"]
    assert created["userErrors"] == []


def test_rows_of_selected_columns_answer_as_whole_tasks(gql: GraphQL, operator: Caller) -> None:
    agent_id = _agent(gql, operator, unique("rows"))
    _task(gql, operator, agent_id)
    _task(
        gql,
        operator,
        agent_id,
        description="with everything",
        repository="git@example.invalid:repo.git",
        type="build",
        payload={"nested": {"list": [1, 2.5, "x", None, True]}},
        priority=9,
        deadline="2030-01-02T03:04:05+00:00",
        maxRetries=7,
    )
    _task(gql, operator, agent_id, priority=1, payload={"k": "v"})

    rows = data(gql(ROWS_QUERY, {"id": agent_id}, caller=operator))["node"]["tasks"]
    whole = data(gql(WHOLE_QUERY, {"id": agent_id}, caller=operator))["node"]["tasks"]

    assert len(rows["edges"]) == 3
    for edge in whole["edges"]:
        assert edge["node"].pop("assignee") == {"id": agent_id}
    assert rows == whole
    payloads = [edge["node"]["payload"] for edge in rows["edges"]]
    assert {"nested": {"list": [1, 2.5, "x", None, True]}} in payloads


def test_rows_keep_round_trips_constant_in_page_size(gql: GraphQL, operator: Caller) -> None:
    tag = unique("rows")
    agents = [_agent(gql, operator, tag) for _ in range(12)]
    for agent_id in agents:
        _task(gql, operator, agent_id)

    small = data(gql(PAGE_QUERY, {"tag": tag, "first": 3}, caller=operator))
    small_trips = dict(gql.last_round_trips)
    large = data(gql(PAGE_QUERY, {"tag": tag, "first": 12}, caller=operator))
    large_trips = dict(gql.last_round_trips)

    assert len(small["agents"]["edges"]) == 3
    assert len(large["agents"]["edges"]) == 12
    assert all(len(e["node"]["tasks"]["edges"]) == 1 for e in large["agents"]["edges"])
    assert small_trips["postgres"] == large_trips["postgres"], (small_trips, large_trips)


AGENT_LEAVES = """
  id name role status capabilities tags notes metadata createdAt updatedAt version __typename
"""

# Agents below collaborators and the neighbourhood, read as rows of the selected
# columns (every Agent field is a column or reads only the id).
AGENTS_QUERY = """query($id: ID!) {{
  node(id: $id) {{ ... on Agent {{ collaborators {{ type agent {{ {leaves} }} }} }} }}
  agentNeighbourhood(agentId: $id, depth: 2) {{
    nodes {{ distance agent {{ {leaves} }} }} edges {{ type source {{ id }} target {{ {leaves} }} }}
  }}
}}"""


WHOLE_AGENTS = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Agent {{ {AGENT_LEAVES} }} }} }}"


@pytest.fixture
def whole(settings: Settings) -> Iterator[GraphQL]:
    """A gateway that reads agents by id as whole records: with an entity cache, which
    holds whole records, rows of a few columns would cost a round trip a hit does not.
    Each test's agents are new to it, so nothing it caches can be stale."""
    cached = settings.model_copy(update={"cache_enabled": True, "rate_limit_enabled": False})
    with TestClient(create_app(cached)) as client:
        yield GraphQL(client)


def _agents_in(value: object) -> list[dict[str, Any]]:
    """Every agent in a response that selected `AGENT_LEAVES`."""
    if isinstance(value, list):
        return [agent for item in value for agent in _agents_in(item)]
    if not isinstance(value, dict):
        return []
    found = [value] if value.get("__typename") == "Agent" else []
    return found + [agent for item in value.values() for agent in _agents_in(item)]


def _assert_answered_as_whole_agents(whole: GraphQL, caller: Caller, response: object) -> int:
    """Each agent of `response` has the leaves `nodes(ids:)` answers from its whole record
    (on the `whole` gateway); returns how many were compared."""
    agents = _agents_in(response)
    ids = list(dict.fromkeys(agent["id"] for agent in agents))
    whole_agents = data(whole(WHOLE_AGENTS, {"ids": ids}, caller=caller))["nodes"]
    read = whole.last_round_trips["postgres"]
    data(whole("{ __typename }", caller=caller))
    # Read on the cache's miss, whole, from PostgreSQL: more than the key's check.
    assert read > whole.last_round_trips["postgres"], whole.last_round_trips
    by_id = {agent["id"]: agent for agent in whole_agents}
    for agent in agents:
        assert {name: agent[name] for name in by_id[agent["id"]]} == by_id[agent["id"]]
    return len(agents)


def test_rows_of_selected_columns_answer_as_whole_agents(
    gql: GraphQL, whole: GraphQL, operator: Caller
) -> None:
    tag = unique("rows")
    centre, near, far = (_agent(gql, operator, tag) for _ in range(3))
    data(
        gql(
            """mutation($id: ID!, $m: JSON!) { updateAgent(input: {id: $id,
               capabilities: ["a", "b"], notes: "n", metadata: $m}) { userErrors { code } } }""",
            {"id": near, "m": {"deep": {"x": [1, None]}}},
            caller=operator,
        )
    )
    for source, target, kind in ((centre, near, "COLLABORATES_WITH"), (near, far, "DELEGATES_TO")):
        related = data(
            gql(
                """mutation($s: ID!, $t: ID!, $k: AgentLinkType!) {
                  relateAgents(input: {sourceId: $s, targetId: $t, type: $k}) {
                    userErrors { code } } }""",
                {"s": source, "t": target, "k": kind},
                caller=operator,
            )
        )["relateAgents"]
        assert related["userErrors"] == []

    rows = data(gql(AGENTS_QUERY.format(leaves=AGENT_LEAVES), {"id": centre}, caller=operator))
    # One collaborator, three nodes and two edge targets.
    assert _assert_answered_as_whole_agents(whole, operator, rows) == 6
    hood = rows["agentNeighbourhood"]
    assert {node["agent"]["id"] for node in hood["nodes"]} == {centre, near, far}
    assert rows["node"]["collaborators"][0]["agent"]["metadata"] == {"deep": {"x": [1, None]}}


NODES_QUERY = f"""query($id: ID!, $ids: [ID!]!) {{
  node(id: $id) {{ ... on Agent {{ {AGENT_LEAVES} }} }}
  nodes(ids: $ids) {{ ...Leaves }}
}}
fragment Leaves on Agent {{ {AGENT_LEAVES} }}"""


def test_agents_by_global_id_read_as_rows_answer_as_whole_agents(
    gql: GraphQL, whole: GraphQL, operator: Caller, viewer: Caller
) -> None:
    tag = unique("rows")
    plain, full = _agent(gql, operator, tag), _agent(gql, operator, tag)
    data(
        gql(
            """mutation($id: ID!, $m: JSON!) { updateAgent(input: {id: $id, status: BUSY,
               capabilities: ["a", "b"], notes: "n", metadata: $m}) { userErrors { code } } }""",
            {"id": full, "m": {"deep": {"x": [1, None]}}},
            caller=operator,
        )
    )
    gone = "QWdlbnQ6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw"  # Agent:<nil uuid>
    variables = {"id": full, "ids": [plain, gone, full]}

    # The least role that reads agents.
    rows = data(gql(NODES_QUERY, variables, caller=viewer))
    one = f"query($id: ID!) {{ node(id: $id) {{ ...Leaves }} }} fragment Leaves on Agent {{ {AGENT_LEAVES} }}"
    assert data(gql(one, {"id": full}, caller=viewer))["node"] == rows["node"]
    node_trips = dict(gql.last_round_trips)
    data(gql("{ __typename }", caller=viewer))
    # The key's check, as for any request, and one statement.
    assert node_trips["postgres"] == gql.last_round_trips["postgres"] + 1, node_trips
    assert rows["nodes"][1] is None
    assert rows["node"]["metadata"] == {"deep": {"x": [1, None]}}
    assert (rows["node"]["status"], rows["node"]["capabilities"]) == ("BUSY", ["a", "b"])
    assert _assert_answered_as_whole_agents(whole, viewer, rows) == 3


# Two `tasks` selections on a page of agents: the page loads both up front (one rows
# page of columns, one of whole tasks for `assignee`), with arguments from variables.
PREFETCH_QUERY = """query($tag: String!, $n: Int!, $order: TaskOrder!) {
  agents(filter: {tagsAny: [$tag]}, first: 10) { edges { node { id
    byPriority: tasks(first: $n, orderBy: $order) {
      totalCount pageInfo { hasNextPage startCursor endCursor }
      edges { cursor node { ...Row } }
    }
    pending: tasks(first: 1, filter: {status: [ASSIGNED, PENDING]}) {
      totalCount edges { node { title assignee { id } } }
    }
  } } }
}
fragment Row on Task { id title priority status }"""

# The same selections one agent at a time (`node`: no page to load them for).
ONE_AGENT_QUERY = """query($id: ID!, $n: Int!, $order: TaskOrder!) {
  node(id: $id) { ... on Agent { id
    byPriority: tasks(first: $n, orderBy: $order) {
      totalCount pageInfo { hasNextPage startCursor endCursor }
      edges { cursor node { ...Row } }
    }
    pending: tasks(first: 1, filter: {status: [ASSIGNED, PENDING]}) {
      totalCount edges { node { title assignee { id } } }
    }
  } }
}
fragment Row on Task { id title priority status }"""


def test_tasks_loaded_by_the_page_answer_as_each_agents_own(gql: GraphQL, operator: Caller) -> None:
    tag = unique("rows")
    agents = [_agent(gql, operator, tag) for _ in range(3)]
    for index, agent_id in enumerate(agents):
        for priority in range(index + 2):
            _task(gql, operator, agent_id, priority=priority + 1)
    variables = {"tag": tag, "n": 2, "order": "PRIORITY_DESC"}

    page = data(gql(PREFETCH_QUERY, variables, caller=operator))["agents"]["edges"]
    page_trips = dict(gql.last_round_trips)
    bare = """query($tag: String!) {
      agents(filter: {tagsAny: [$tag]}, first: 10) { edges { node { id } } } }"""
    data(gql(bare, {"tag": tag}, caller=operator))
    bare_trips = dict(gql.last_round_trips)
    one_by_one = [
        data(gql(ONE_AGENT_QUERY, {**variables, "id": agent_id}, caller=operator))["node"]
        for agent_id in agents
    ]

    assert [edge["node"] for edge in page] == one_by_one
    first = page[0]["node"]
    assert first["byPriority"]["totalCount"] == 2
    assert [e["node"]["priority"] for e in page[2]["node"]["byPriority"]["edges"]] == [4, 3]
    assert first["pending"]["edges"][0]["node"]["assignee"] == {"id": agents[0]}
    # One query per `tasks` selection, and one for every task's `assignee` (the page of
    # agents is read as rows, which prime no records).
    assert page_trips["postgres"] == bare_trips["postgres"] + 3, (page_trips, bare_trips)


# An agent's tasks read a page and one more (for `hasNextPage`); only `totalCount`
# counts them all. Rows and whole tasks, first 0 and past the end.
PAGE_ENDS = """
  counted: tasks(first: 2) { totalCount pageInfo { hasNextPage } }
  uncounted: tasks(first: 2) { pageInfo { hasNextPage } edges { node { title } } }
  whole: tasks(first: 3) { pageInfo { hasNextPage } edges { node { assignee { id } } } }
  none: tasks(first: 0) { pageInfo { hasNextPage } edges { node { id } } }
"""


def test_an_agents_tasks_say_if_there_are_more_and_count_only_when_asked(
    gql: GraphQL, operator: Caller
) -> None:
    tag = unique("ends")
    agent_id = _agent(gql, operator, tag)
    for _ in range(3):
        _task(gql, operator, agent_id)
    by_page = data(
        gql(
            "query($tag: String!) { agents(filter: {tagsAny: [$tag]}, first: 5)"
            " { edges { node {" + PAGE_ENDS + "} } } }",
            {"tag": tag},
            caller=operator,
        )
    )["agents"]["edges"][0]["node"]
    alone = data(
        gql(
            "query($id: ID!) { node(id: $id) { ... on Agent {" + PAGE_ENDS + "} } }",
            {"id": agent_id},
            caller=operator,
        )
    )["node"]

    assert by_page == alone
    assert alone["counted"] == {"totalCount": 3, "pageInfo": {"hasNextPage": True}}
    assert alone["uncounted"]["pageInfo"] == {"hasNextPage": True}
    assert len(alone["uncounted"]["edges"]) == 2
    assert alone["whole"]["pageInfo"] == {"hasNextPage": False}
    assert [edge["node"]["assignee"]["id"] for edge in alone["whole"]["edges"]] == [agent_id] * 3
    assert alone["none"] == {"pageInfo": {"hasNextPage": True}, "edges": []}


# A page of agents as rows: columns, and resolver fields that read only the agent's id
# (`tasks`, `collaborators`); `parent` (whole records) to compare with.
ROOT_QUERY = """query($tag: String!, $after: String) {{
  agents(filter: {{tagsAny: [$tag]}}, first: 2, after: $after, orderBy: CREATED_AT_DESC) {{
    totalCount pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{ {leaves}
      tasks(first: 2) {{ totalCount edges {{ node {{ id title }} }} }}
      collaborators {{ type agent {{ id name }} }}
    }} }}
  }}
}}"""


def test_a_page_of_agents_as_rows_answers_as_whole_agents(
    gql: GraphQL, whole: GraphQL, operator: Caller
) -> None:
    tag = unique("rows")
    agents = [_agent(gql, operator, tag) for _ in range(3)]
    for agent_id in agents:
        _task(gql, operator, agent_id)
    related = data(
        gql(
            """mutation($s: ID!, $t: ID!) { relateAgents(input: {sourceId: $s, targetId: $t,
               type: COLLABORATES_WITH}) { userErrors { code } } }""",
            {"s": agents[2], "t": agents[0]},
            caller=operator,
        )
    )["relateAgents"]
    assert related["userErrors"] == []

    # Resolver fields that read only the agent's id keep the page on rows as well.
    leaves = AGENT_LEAVES + " parent { id } children { id } sessions { id }"
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        page = data(
            gql(ROOT_QUERY.format(leaves=leaves), {"tag": tag, "after": after}, caller=operator)
        )["agents"]
        pages.append(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    assert _assert_answered_as_whole_agents(whole, operator, pages) == 3
    nodes = [edge["node"] for page in pages for edge in page["edges"]]
    assert [node["id"] for node in nodes] == agents[::-1]
    assert [len(page["edges"]) for page in pages] == [2, 1]
    assert all(page["totalCount"] == 3 for page in pages)
    assert all((n["parent"], n["children"], n["sessions"]) == (None, [], []) for n in nodes)
    assert nodes[0]["collaborators"] == [
        {"type": "COLLABORATES_WITH", "agent": {"id": agents[0], "name": nodes[2]["name"]}}
    ]
    assert all(node["tasks"]["totalCount"] == 1 for node in nodes)


# One `tasks` selection of columns on a page of agents: read in the page's statement.
ONE_SELECTION_QUERY = """query($tag: String!, $n: Int!, $order: TaskOrder!) {
  agents(filter: {tagsAny: [$tag]}, first: 10, orderBy: NAME_ASC) { edges { node { id
    tasks(first: $n, orderBy: $order, filter: {status: [PENDING, ASSIGNED]}) {
      totalCount pageInfo { hasNextPage startCursor endCursor }
      edges { cursor node { ...Row } }
    }
  } } }
}
fragment Row on Task { id title priority status }"""


def test_a_page_reads_its_agents_tasks_in_its_own_statement(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    tag = unique("together")
    agents = [_agent(gql, operator, f"{tag}") for _ in range(3)]
    for index, agent_id in enumerate(agents):
        for priority in range(index * 2):
            _task(gql, operator, agent_id, priority=priority + 1)
    variables = {"tag": tag, "n": 2, "order": "PRIORITY_DESC"}

    # The least role that reads agents and their tasks.
    page = data(gql(ONE_SELECTION_QUERY, variables, caller=viewer))["agents"]["edges"]
    page_trips = dict(gql.last_round_trips)
    bare = """query($tag: String!) {
      agents(filter: {tagsAny: [$tag]}, first: 10, orderBy: NAME_ASC) { edges { node { id } } } }"""
    data(gql(bare, {"tag": tag}, caller=viewer))
    bare_trips = dict(gql.last_round_trips)
    alone = """query($id: ID!, $n: Int!, $order: TaskOrder!) { node(id: $id) { ... on Agent { id
      tasks(first: $n, orderBy: $order, filter: {status: [PENDING, ASSIGNED]}) {
        totalCount pageInfo { hasNextPage startCursor endCursor }
        edges { cursor node { ...Row } }
      }
    } } }
    fragment Row on Task { id title priority status }"""
    one_by_one = {
        agent_id: data(gql(alone, {**variables, "id": agent_id}, caller=viewer))["node"]
        for agent_id in agents
    }

    assert [edge["node"] for edge in page] == [one_by_one[edge["node"]["id"]] for edge in page]
    assert sorted(edge["node"]["tasks"]["totalCount"] for edge in page) == [0, 2, 4]
    busiest = max(page, key=lambda edge: edge["node"]["tasks"]["totalCount"])["node"]["tasks"]
    assert [e["node"]["priority"] for e in busiest["edges"]] == [4, 3]
    assert busiest["pageInfo"]["hasNextPage"] is True
    # The agents and their tasks: no statement more than the page alone.
    assert page_trips["postgres"] == bare_trips["postgres"], (page_trips, bare_trips)


def test_a_page_with_literal_task_arguments_reads_them_the_same_every_time(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    # Without variables, what the page's statement reads of the tasks is worked out
    # once per document: each later request, and another document, must answer as the
    # first did.
    tag = unique("literal")
    agents = [_agent(gql, operator, tag) for _ in range(2)]
    for index, agent_id in enumerate(agents):
        for priority in range(index * 3 + 1):
            _task(gql, operator, agent_id, priority=priority + 1)

    def page_of(first: int) -> str:
        return (
            f'{{ agents(filter: {{tagsAny: ["{tag}"]}}, first: 10, orderBy: NAME_ASC) {{'
            " edges { node { id"
            f" tasks(first: {first}, orderBy: PRIORITY_DESC) {{ totalCount"
            " edges { node { title priority } } } } } } }"
        )

    bare = (
        f'{{ agents(filter: {{tagsAny: ["{tag}"]}}, first: 10) {{ edges {{ node {{ id }} }} }} }}'
    )
    data(gql(bare, caller=viewer))
    bare_trips = gql.last_round_trips.get("postgres")
    answers = []
    for first in (2, 2, 1, 2):
        edges = data(gql(page_of(first), caller=viewer))["agents"]["edges"]
        assert gql.last_round_trips.get("postgres") == bare_trips
        answers.append({e["node"]["id"]: e["node"]["tasks"] for e in edges})
    assert answers[0] == answers[1] == answers[3]
    busiest = answers[0][agents[1]]
    assert busiest["totalCount"] == 4
    assert [edge["node"]["priority"] for edge in busiest["edges"]] == [4, 3]
    assert [edge["node"]["priority"] for edge in answers[2][agents[1]]["edges"]] == [4]
    assert [edge["node"]["priority"] for edge in answers[2][agents[0]]["edges"]] == [1]
