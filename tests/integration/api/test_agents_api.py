"""Agent queries and mutations over HTTP, with every error code they can give."""

from __future__ import annotations

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

CREATE = """
mutation Create($input: CreateAgentInput!) {
  createAgent(input: $input) {
    agent { id name role status tags capabilities metadata version parent { id } }
    userErrors { field message code }
    projected
  }
}
"""

UPDATE = """
mutation Update($input: UpdateAgentInput!) {
  updateAgent(input: $input) {
    agent { id status notes version }
    userErrors { field message code }
  }
}
"""


def create_agent(gql: GraphQL, caller: Caller, **fields: object) -> dict[str, object]:
    payload = data(gql(CREATE, {"input": {"name": unique("agent"), **fields}}, caller=caller))
    result: dict[str, object] = payload["createAgent"]
    assert result["userErrors"] == [], result["userErrors"]
    agent = result["agent"]
    assert isinstance(agent, dict)
    return agent


def test_create_agent_returns_it_and_projects_it(gql: GraphQL, operator: Caller) -> None:
    parent = create_agent(gql, operator, role="orchestrator")
    child = create_agent(
        gql, operator, parentId=parent["id"], tags=["eu"], metadata={"model": "small"}
    )
    assert child["parent"] == {"id": parent["id"]}
    assert child["tags"] == ["eu"]
    assert child["metadata"] == {"model": "small"}
    assert child["version"] == 1
    body = gql(
        "query($id: ID!) { node(id: $id) { ... on Agent { name children { id } } } }",
        {"id": parent["id"]},
        caller=operator,
    )
    assert data(body)["node"]["children"] == [{"id": child["id"]}]


def test_duplicate_name_is_a_conflict_on_the_name_field(gql: GraphQL, operator: Caller) -> None:
    name = unique("twin")
    create_agent(gql, operator, name=name)
    payload = data(gql(CREATE, {"input": {"name": name}}, caller=operator))["createAgent"]
    assert payload["agent"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("name", "CONFLICT")]


def test_unknown_parent_is_not_found(gql: GraphQL, admin: Caller) -> None:
    ghost = create_agent(gql, admin)
    deleted = gql(
        "mutation($id: ID!) { deleteAgent(input: {id: $id}) { userErrors { code } } }",
        {"id": ghost["id"]},
        caller=admin,
    )
    assert data(deleted)["deleteAgent"]["userErrors"] == []
    payload = data(
        gql(CREATE, {"input": {"name": unique("a"), "parentId": ghost["id"]}}, caller=admin)
    )
    errors = payload["createAgent"]["userErrors"]
    assert [(e["field"], e["code"]) for e in errors] == [("parentId", "NOT_FOUND")]


def test_bad_values_are_bad_user_input_naming_the_field(gql: GraphQL, operator: Caller) -> None:
    payload = data(gql(CREATE, {"input": {"name": ""}}, caller=operator))["createAgent"]
    assert payload["userErrors"][0]["code"] == "BAD_USER_INPUT"
    assert payload["userErrors"][0]["field"] == "name"
    wrong_kind = data(
        gql(CREATE, {"input": {"name": unique("a"), "parentId": "VGFzazox"}}, caller=operator)
    )["createAgent"]
    assert wrong_kind["userErrors"][0]["code"] == "BAD_USER_INPUT"
    assert wrong_kind["userErrors"][0]["field"] == "parentId"


def test_stale_version_is_a_conflict(gql: GraphQL, operator: Caller) -> None:
    agent = create_agent(gql, operator)
    first = data(
        gql(
            UPDATE,
            {"input": {"id": agent["id"], "expectedVersion": 1, "notes": "one"}},
            caller=operator,
        )
    )["updateAgent"]
    assert first["agent"]["version"] == 2
    stale = data(
        gql(
            UPDATE,
            {"input": {"id": agent["id"], "expectedVersion": 1, "notes": "two"}},
            caller=operator,
        )
    )["updateAgent"]
    assert stale["agent"] is None
    assert stale["userErrors"][0]["code"] == "CONFLICT"


def test_roles_are_checked(gql: GraphQL, viewer: Caller) -> None:
    forbidden = gql(CREATE, {"input": {"name": unique("a")}}, caller=viewer)
    assert error_codes(forbidden) == ["FORBIDDEN"]
    anonymous = gql(CREATE, {"input": {"name": unique("a")}})
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]
    assert error_codes(gql("{ agents { edges { node { id } } } }")) == ["UNAUTHENTICATED"]
    assert "errors" not in gql("{ agents(first: 1) { edges { node { id } } } }", caller=viewer)


def test_invalid_credentials_get_401(gql: GraphQL) -> None:
    response = gql.client.post(
        "/graphql", json={"query": "{ health { status } }"}, headers={"x-api-key": "pg_nope"}
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_agents_page_forward_and_back_with_filters(gql: GraphQL, operator: Caller) -> None:
    tag = unique("tag")
    made = [create_agent(gql, operator, tags=[tag], status="BUSY") for _ in range(5)]
    query = """
    query($tag: String!, $first: Int, $after: String, $last: Int, $before: String) {
      agents(filter: {tagsAny: [$tag], status: [BUSY]}, orderBy: CREATED_AT_ASC,
             first: $first, after: $after, last: $last, before: $before) {
        totalCount
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { id } }
      }
    }
    """
    first = data(gql(query, {"tag": tag, "first": 2}, caller=operator))["agents"]
    assert first["totalCount"] == 5
    assert [e["node"]["id"] for e in first["edges"]] == [a["id"] for a in made[:2]]
    assert first["pageInfo"]["hasNextPage"] is True
    second = data(
        gql(
            query,
            {"tag": tag, "first": 3, "after": first["pageInfo"]["endCursor"]},
            caller=operator,
        )
    )["agents"]
    assert [e["node"]["id"] for e in second["edges"]] == [a["id"] for a in made[2:]]
    assert second["pageInfo"]["hasNextPage"] is False
    back = data(
        gql(
            query,
            {"tag": tag, "last": 2, "before": second["pageInfo"]["startCursor"]},
            caller=operator,
        )
    )["agents"]
    assert [e["node"]["id"] for e in back["edges"]] == [a["id"] for a in made[:2]]


def test_bad_cursor_is_bad_user_input(gql: GraphQL, viewer: Caller) -> None:
    body = gql('{ agents(after: "garbage") { edges { cursor } } }', caller=viewer)
    assert error_codes(body) == ["BAD_USER_INPUT"]


def test_nodes_resolves_mixed_ids_in_order(gql: GraphQL, operator: Caller) -> None:
    one, two = create_agent(gql, operator), create_agent(gql, operator)
    body = gql(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": [two["id"], one["id"]]},
        caller=operator,
    )
    assert data(body)["nodes"] == [{"id": two["id"]}, {"id": one["id"]}]


def test_relate_agents_shows_in_collaborators_and_neighbourhood(
    gql: GraphQL, operator: Caller
) -> None:
    a, b, c = (create_agent(gql, operator) for _ in range(3))
    relate = """
    mutation($s: ID!, $t: ID!, $type: AgentLinkType!) {
      relateAgents(input: {sourceId: $s, targetId: $t, type: $type, weight: 0.5}) {
        projected userErrors { code }
      }
    }
    """
    for source, target in ((a, b), (b, c)):
        result = data(
            gql(
                relate,
                {"s": source["id"], "t": target["id"], "type": "COLLABORATES_WITH"},
                caller=operator,
            )
        )
        assert result["relateAgents"] == {"projected": True, "userErrors": []}
    query = """
    query($id: ID!, $a: ID!, $c: ID!) {
      node(id: $id) { ... on Agent { collaborators { weight type agent { id } } } }
      agentNeighbourhood(agentId: $id, depth: 2) { nodes { distance agent { id } } }
      shortestPath(fromId: $a, toId: $c) { length agents { id } }
    }
    """
    result = data(gql(query, {"id": a["id"], "a": a["id"], "c": c["id"]}, caller=operator))
    assert result["node"]["collaborators"] == [
        {"weight": 0.5, "type": "COLLABORATES_WITH", "agent": {"id": b["id"]}}
    ]
    distances = {n["agent"]["id"]: n["distance"] for n in result["agentNeighbourhood"]["nodes"]}
    assert distances == {a["id"]: 0, b["id"]: 1, c["id"]: 2}
    assert result["shortestPath"] == {
        "length": 2,
        "agents": [{"id": a["id"]}, {"id": b["id"]}, {"id": c["id"]}],
    }


def test_collaborators_are_the_heaviest_first_of_them(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    hub = create_agent(gql, operator)
    others = [create_agent(gql, operator) for _ in range(12)]
    relate = """
    mutation($s: ID!, $t: ID!, $w: Float!) {
      relateAgents(input: {sourceId: $s, targetId: $t, type: COLLABORATES_WITH, weight: $w}) {
        projected userErrors { code }
      }
    }
    """
    for rank, other in enumerate(others, start=1):
        result = data(gql(relate, {"s": hub["id"], "t": other["id"], "w": rank}, caller=operator))
        assert result["relateAgents"] == {"projected": True, "userErrors": []}
    heaviest_first = [other["id"] for other in reversed(others)]
    query = """
    query($id: ID!) {
      node(id: $id) {
        ... on Agent {
          byDefault: collaborators { agent { id } }
          three: collaborators(first: 3) { weight agent { id } }
          all: collaborators(first: 100) { agent { id } }
          none: collaborators(first: 0) { agent { id } }
        }
      }
    }
    """
    # A viewer, the least role that reads agents, reads their links too.
    node = data(gql(query, {"id": hub["id"]}, caller=viewer))["node"]
    assert [link["agent"]["id"] for link in node["byDefault"]] == heaviest_first[:10]
    assert node["three"] == [
        {"weight": float(12 - index), "agent": {"id": agent_id}}
        for index, agent_id in enumerate(heaviest_first[:3])
    ]
    assert [link["agent"]["id"] for link in node["all"]] == heaviest_first
    assert node["none"] == []


def test_children_are_the_first_of_them_by_name(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    parent = create_agent(gql, operator, role="orchestrator")
    prefix = unique("child")
    # Created out of name order: the answer is by name.
    names = [f"{prefix}-{index:02d}" for index in (7, 3, 11, 0, 9, 1, 5, 10, 2, 8, 4, 6)]
    ids = {
        name: create_agent(gql, operator, name=name, parentId=parent["id"])["id"] for name in names
    }
    by_name = [ids[name] for name in sorted(names)]
    query = """
    query($id: ID!) {
      node(id: $id) {
        ... on Agent {
          byDefault: children { id }
          three: children(first: 3) { id name }
          all: children(first: 100) { id }
          none: children(first: 0) { id }
        }
      }
    }
    """
    # A viewer, the least role that reads agents, reads their children too.
    node = data(gql(query, {"id": parent["id"]}, caller=viewer))["node"]
    assert [child["id"] for child in node["byDefault"]] == by_name[:10]
    assert node["three"] == [{"id": ids[name], "name": name} for name in sorted(names)[:3]]
    assert [child["id"] for child in node["all"]] == by_name
    assert node["none"] == []


def test_nested_agents_are_fetched_only_when_selected(gql: GraphQL, operator: Caller) -> None:
    a, b = (create_agent(gql, operator) for _ in range(2))
    relate = """
    mutation($s: ID!, $t: ID!) {
      relateAgents(input: {sourceId: $s, targetId: $t, type: COLLABORATES_WITH}) {
        projected userErrors { code }
      }
    }
    """
    assert data(gql(relate, {"s": a["id"], "t": b["id"]}, caller=operator))["relateAgents"] == {
        "projected": True,
        "userErrors": [],
    }
    bare = "query($id: ID!) { agentNeighbourhood(agentId: $id) { nodes { distance } } }"
    assert data(gql(bare, {"id": a["id"]}, caller=operator))["agentNeighbourhood"]["nodes"] == [
        {"distance": 0},
        {"distance": 1},
    ]
    # The API key lookup is the only PostgreSQL round trip: no agent fetch.
    assert gql.last_round_trips.get("postgres") == 1
    # Selected through a named fragment, the agents come, in one fetch.
    through_fragment = """
    query($id: ID!) {
      agentNeighbourhood(agentId: $id) { nodes { ...Hop } edges { source { name } } }
    }
    fragment Hop on NeighbourNode { distance agent { id } }
    """
    found = data(gql(through_fragment, {"id": a["id"]}, caller=operator))["agentNeighbourhood"]
    assert [node["agent"]["id"] for node in found["nodes"]] == [a["id"], b["id"]]
    assert found["edges"] == [{"source": {"name": a["name"]}}]
    assert gql.last_round_trips.get("postgres") == 2
