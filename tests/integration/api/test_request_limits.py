"""The attacks of issue 10, each refused before anything executes, and the standard
introspection query still served."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from graphql import get_introspection_query
from httpx2 import Response
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, unique

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def _refused(response: Response, code: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == GRAPHQL_RESPONSE_JSON
    body: dict[str, Any] = response.json()
    assert "data" not in body, "nothing may execute"
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code
    result: dict[str, Any] = error
    return result


def _too_complex(response: Response, setting: str, status: int = 400) -> dict[str, Any]:
    error = _refused(response, "QUERY_TOO_COMPLEX", status)
    assert error["extensions"]["limit"] == setting
    assert setting in error["message"]
    assert f"{error['extensions']['maximum']:,}" in error["message"]
    return error


def _post(client: TestClient, query: str, variables: dict[str, Any] | None = None) -> Response:
    return client.post("/graphql", json={"query": query, "variables": variables or {}})


def collaborator_hops(hops: int) -> str:
    inner = "name"
    for _ in range(hops):
        inner = f"collaborators {{ agent {{ {inner} }} }}"
    return f"{{ agents(first: 5) {{ edges {{ node {{ {inner} }} }} }} }}"


def test_the_14_hop_collaborators_query_is_refused(client: TestClient, viewer: Caller) -> None:
    response = client.post(
        "/graphql", json={"query": collaborator_hops(14)}, headers=viewer.headers
    )
    error = _too_complex(response, "POLYGRAPH_MAX_DEPTH")
    # agents, edges, node, 14 x (collaborators, agent), name.
    assert error["extensions"]["value"] == 32
    assert "32 levels" in error["message"]


def test_introspection_50_levels_deep_is_refused(client: TestClient) -> None:
    inner = "name"
    for _ in range(48):
        inner = f"ofType {{ {inner} }}"
    query = f"{{ __schema {{ types {{ {inner} }} }} }}"
    error = _too_complex(_post(client, query), "POLYGRAPH_MAX_DEPTH")
    assert error["extensions"]["value"] == 51


def test_the_standard_introspection_query_is_served(client: TestClient) -> None:
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    response = _post(client, query)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["data"]["__schema"]["queryType"]["name"] == "Query"


def test_1000_aliases_are_refused(client: TestClient) -> None:
    query = "{ " + " ".join(f"a{i}: __typename" for i in range(1000)) + " }"
    _refused(_post(client, query), "QUERY_TOO_COMPLEX")


def test_more_aliases_than_the_limit_are_refused(client: TestClient) -> None:
    query = "{ viewer { " + " ".join(f"a{i}: id" for i in range(31)) + " } }"
    error = _too_complex(_post(client, query), "POLYGRAPH_MAX_ALIASES")
    assert error["extensions"]["value"] == 31


def test_more_root_fields_than_the_limit_are_refused(client: TestClient) -> None:
    query = "{ " + " ".join(f"r{i}: __typename" for i in range(21)) + " }"
    _too_complex(_post(client, query), "POLYGRAPH_MAX_ROOT_FIELDS")


def test_a_fragment_bomb_is_refused_without_expanding_it(client: TestClient) -> None:
    # Each fragment spreads the one before twice: 2^40 fields once expanded.
    fragments = ["fragment F0 on User { id }"]
    fragments += [f"fragment F{i} on User {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 41)]
    query = "{ viewer { ...F40 } } " + " ".join(fragments)
    error = _too_complex(_post(client, query), "POLYGRAPH_MAX_FIELDS")
    assert error["extensions"]["value"] == 2**40 + 1


def test_a_10000_token_document_is_refused(client: TestClient) -> None:
    query = "{" + " x" * 10_000 + " }"
    error = _too_complex(_post(client, query), "POLYGRAPH_MAX_TOKENS")
    assert "more than 2,000 tokens" in error["message"]


def test_a_5_mb_query_is_refused_unread_with_413(client: TestClient) -> None:
    query = "{ __typename " + "#" * (5 * 1024 * 1024) + "\n}"
    _too_complex(_post(client, query), "POLYGRAPH_MAX_BODY_BYTES", status=413)


def test_a_5_mb_body_without_content_length_is_refused_with_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "{ __typename '
        for _ in range(80):
            yield b"#" * 65536
        yield b'\\n}"}'

    response = client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    _too_complex(response, "POLYGRAPH_MAX_BODY_BYTES", status=413)


def test_a_long_document_is_refused_over_get_and_websockets(settings: Settings) -> None:
    short = settings.model_copy(update={"max_document_chars": 500})
    query = "{ __typename " + "#" * 1000 + "\n}"
    with TestClient(create_app(short)) as client:
        response = client.get(
            "/graphql", params={"query": query}, headers={"apollo-require-preflight": "1"}
        )
        error = _too_complex(response, "POLYGRAPH_MAX_DOCUMENT_CHARS")
        assert error["extensions"]["value"] == len(query)

        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_text(json.dumps({"type": "connection_init"}))
            assert json.loads(ws.receive_text())["type"] == "connection_ack"
            document = "subscription { healthUpdates { __typename } " + "#" * 1000 + "\n}"
            ws.send_text(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": document}})
            )
            message = json.loads(ws.receive_text())
            assert message["type"] == "error"
            assert message["payload"][0]["extensions"]["limit"] == "POLYGRAPH_MAX_DOCUMENT_CHARS"


def test_a_deep_query_over_get_is_refused(client: TestClient) -> None:
    response = client.get(
        "/graphql",
        params={"query": collaborator_hops(14)},
        headers={"apollo-require-preflight": "1"},
    )
    _too_complex(response, "POLYGRAPH_MAX_DEPTH")


def test_nodes_with_36000_ids_is_refused(client: TestClient, viewer: Caller) -> None:
    ids = [str(i) for i in range(36_000)]
    response = client.post(
        "/graphql",
        json={
            "query": "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
            "variables": {"ids": ids},
        },
        headers=viewer.headers,
    )
    error = _refused(response, "BAD_USER_INPUT")
    assert error["message"] == "Variable $ids takes at most 100 ids; got 36000."
    assert error["extensions"]["field"] == "ids"


@pytest.mark.parametrize("first", [100_000, -5, 101])
def test_agent_tasks_first_out_of_range_is_refused(
    client: TestClient, viewer: Caller, first: int
) -> None:
    query = f"{{ agents(first: 1) {{ edges {{ node {{ tasks(first: {first}) {{ totalCount }} }} }} }} }}"
    response = client.post("/graphql", json={"query": query}, headers=viewer.headers)
    error = _refused(response, "BAD_USER_INPUT")
    assert error["message"] == f"Agent.tasks(first:) must be between 0 and 100; got {first}."
    assert error["extensions"]["field"] == "first"


@pytest.mark.parametrize(
    ("query", "coordinate"),
    [
        (
            "query($n: Int!) { mostConnectedAgents(first: $n) { degree } }",
            "Query.mostConnectedAgents",
        ),
        ("query($n: Int) { agents(first: $n) { totalCount } }", "Query.agents"),
        ("query($n: Int) { tasks(last: $n) { totalCount } }", "Query.tasks"),
        ("query($n: Int!) { leaderboard(first: $n) { rank } }", "Query.leaderboard"),
        (
            'query($n: Int!) { searchKnowledge(query: "x", first: $n) { edges { cursor } } }',
            "Query.searchKnowledge",
        ),
        ("query($n: Int!) { metricsSummary(first: $n) { name } }", "Query.metricsSummary"),
        (
            "query($n: Int!) { agents(first: 1) { edges { node { collaborators(first: $n)"
            " { weight } } } } }",
            "Agent.collaborators",
        ),
        (
            "query($n: Int!) { agents(first: 1) { edges { node { children(first: $n) { id } } } } }",
            "Agent.children",
        ),
        (
            "query($n: Int!) { agents(first: 1) { edges { node { achievements(first: $n)"
            " { type } } } } }",
            "Agent.achievements",
        ),
        (
            "query($n: Int!) { tasks(first: 1) { edges { node { history(first: $n) { type } } } } }",
            "Task.history",
        ),
        (
            "query($n: Int!) { tasks(first: 1) { edges { node { dependencies(first: $n) { id } } } } }",
            "Task.dependencies",
        ),
        (
            "query($n: Int!) { tasks(first: 1) { edges { node { blockers(first: $n) { id } } } } }",
            "Task.blockers",
        ),
        (
            'query($n: Int!) { taskDependents(taskId: "VGFzazox", first: $n) { id } }',
            "Query.taskDependents",
        ),
        (
            "query($n: Int!) { agents(first: 1) { edges { node { sessions(first: $n) { id } } } } }",
            "Agent.sessions",
        ),
    ],
)
def test_one_rule_for_first_and_last_everywhere(
    client: TestClient, viewer: Caller, query: str, coordinate: str
) -> None:
    response = client.post(
        "/graphql", json={"query": query, "variables": {"n": 100_000}}, headers=viewer.headers
    )
    error = _refused(response, "BAD_USER_INPUT")
    argument = "last" if "last:" in query else "first"
    assert error["message"] == f"{coordinate}({argument}:) must be between 0 and 100; got 100000."


def test_a_variable_default_is_held_to_the_rule(client: TestClient, viewer: Caller) -> None:
    query = "query($n: Int = 500) { agents(first: $n) { totalCount } }"
    response = client.post("/graphql", json={"query": query}, headers=viewer.headers)
    assert "got 500" in _refused(response, "BAD_USER_INPUT")["message"]


def test_first_zero_answers_an_empty_list(client: TestClient, viewer: Caller) -> None:
    response = client.post(
        "/graphql",
        json={
            "query": "{ mostConnectedAgents(first: 0) { degree } metricsSummary(first: 0) { name } }"
        },
        headers=viewer.headers,
    )
    assert response.json()["data"] == {"mostConnectedAgents": [], "metricsSummary": []}


def test_a_long_list_deep_in_an_input_is_refused(client: TestClient, viewer: Caller) -> None:
    query = (
        "query($f: KnowledgeSearchFilter) {"
        ' searchKnowledge(query: "retry", filter: $f) { edges { cursor } } }'
    )
    variables = {"f": {"tagsAny": ["t"] * 5001}}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=viewer.headers
    )
    error = _refused(response, "BAD_USER_INPUT")
    assert error["message"] == "Variable $f.tagsAny takes at most 5000 items; got 5001."
    assert error["extensions"]["field"] == "f.tagsAny"


def test_subscriptions_are_bounded_the_same_way(client: TestClient) -> None:
    inner = "name"
    for _ in range(48):
        inner = f"ofType {{ {inner} }}"
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        too_deep = f"subscription {{ healthUpdates {{ __typename }} }} query Q {{ __schema {{ types {{ {inner} }} }} }}"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": too_deep, "operationName": "Q"},
                }
            )
        )
        message = json.loads(ws.receive_text())
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["limit"] == "POLYGRAPH_MAX_DEPTH"


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


CREATE_WITH_METADATA = """mutation($name: String!, $metadata: JSON!) {
  createAgent(input: {name: $name, metadata: $metadata}) { agent { metadata } } }"""


def test_json_deeper_than_64_levels_is_refused(client: TestClient, operator: Caller) -> None:
    def create(metadata: dict[str, Any]) -> Response:
        variables = {"name": unique("deep"), "metadata": metadata}
        return client.post(
            "/graphql",
            json={"query": CREATE_WITH_METADATA, "variables": variables},
            headers=operator.headers,
        )

    written = create(_nested(64)).json()
    assert written["data"]["createAgent"]["agent"]["metadata"] == _nested(64)
    # 300 levels were written, then failed to be read back as an internal error.
    for levels in (65, 300):
        error = _refused(create(_nested(levels)), "BAD_USER_INPUT")
        assert "JSON values nest at most 64 levels" in error["message"]
    literal = "{a: " * 65 + "1" + "}" * 65
    query = f'mutation {{ createAgent(input: {{name: "x", metadata: {literal}}}) {{ agent {{ id }} }} }}'
    error = _refused(
        client.post("/graphql", json={"query": query}, headers=operator.headers),
        "GRAPHQL_VALIDATION_FAILED",
    )
    assert error["message"].startswith("JSON values nest at most 64 levels")
    assert error["locations"] == [{"line": 1, "column": query.index(literal) + 1}]


def test_a_deep_json_filter_is_refused(client: TestClient, viewer: Caller) -> None:
    query = """query($contains: JSON) {
      agents(first: 1, filter: {metadataContains: $contains}) { edges { node { id } } } }"""
    response = client.post(
        "/graphql",
        json={"query": query, "variables": {"contains": _nested(300)}},
        headers=viewer.headers,
    )
    error = _refused(response, "BAD_USER_INPUT")
    assert "JSON values nest at most 64 levels" in error["message"]
