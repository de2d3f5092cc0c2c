"""Polygraph as an Apollo Federation v2 subgraph: `_service` and `_entities`."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient
from strawberry import relay

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

ENTITIES = """query($r: [_Any!]!) { _entities(representations: $r) {
  __typename ... on Agent { name } ... on Task { title } } }"""


def _agents(gql: GraphQL, operator: Caller, count: int) -> list[str]:
    create = "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }"
    return [
        data(gql(create, {"n": unique("entity")}, caller=operator))["createAgent"]["agent"]["id"]
        for _ in range(count)
    ]


def _refs(ids: list[str], typename: str = "Agent") -> list[dict[str, Any]]:
    return [{"__typename": typename, "id": id} for id in ids]


def test_the_subgraph_sdl_names_the_entities_by_their_global_id(
    gql: GraphQL, viewer: Caller
) -> None:
    sdl = data(gql("{ _service { sdl } }", caller=viewer))["_service"]["sdl"]
    assert 'schema @link(url: "https://specs.apollo.dev/federation/v2.11"' in sdl
    for entity in ("Agent", "Task", "Workflow", "Knowledge"):
        assert f'type {entity} implements Node @key(fields: "id"' in sdl
    assert "_entities(representations: [_Any!]!): [_Entity]!" in sdl


def test_references_resolve_in_one_round_trip_as_node_does(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    ids = _agents(gql, operator, 3)
    data(gql(ENTITIES, {"r": _refs(ids[:1])}, caller=viewer))
    one = gql.last_round_trips
    # An Agent's id under the Task type, and a Task id (of nothing) under the Agent type.
    task_id = str(relay.GlobalID("Task", relay.GlobalID.from_id(ids[0]).node_id))
    references = [*_refs(ids), *_refs([ids[0]], "Task"), *_refs([task_id])]
    answer = data(gql(ENTITIES, {"r": references}, caller=viewer))["_entities"]
    names = [entity["name"] for entity in answer[:3]]
    assert all(name.startswith("entity") for name in names) and len(set(names)) == 3
    assert answer[3:] == [None, None]
    # Three agents cost what one does: a batched read.
    assert gql.last_round_trips == one


def test_references_need_the_permission_node_needs(gql: GraphQL, operator: Caller) -> None:
    ids = _agents(gql, operator, 1)
    anonymous = gql(ENTITIES, {"r": _refs(ids)})
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]
    not_an_id = gql(ENTITIES, {"r": _refs(["nonsense"])}, caller=operator)
    assert error_codes(not_an_id) == ["BAD_USER_INPUT"]


def test_representations_are_bounded_like_ids(gql: GraphQL, viewer: Caller) -> None:
    refused = gql(ENTITIES, {"r": _refs([f"x{i}" for i in range(101)])}, caller=viewer)
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert "at most 100 representations" in refused["errors"][0]["message"]


def test_production_hides_the_sdl_with_introspection(settings: Settings) -> None:
    production = settings.model_copy(update={"env": "production"})
    with TestClient(create_app(production)) as client:
        response = client.post("/graphql", json={"query": "{ _service { sdl } }"})
    assert response.status_code == 400
    assert "_service" in response.json()["errors"][0]["message"]


def test_ill_formed_representations_are_refused_at_their_index(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    (agent_id,) = _agents(gql, operator, 1)
    references: list[Any] = [
        # A field beside the key is dropped, as a router sends only the key.
        {"__typename": "Agent", "id": agent_id, "name": "not a key"},
        {"__typename": "Agent"},
        {"__typename": "Agent", "id": 5},
        {"__typename": "Query", "id": agent_id},
        {"id": agent_id},
        "Agent",
    ]
    body = gql(ENTITIES, {"r": references}, caller=viewer)
    entities = body["data"]["_entities"]
    assert entities[0]["name"].startswith("entity")
    assert entities[1:] == [None] * 5
    errors = {tuple(error["path"]): error for error in body["errors"]}
    assert sorted(errors) == [("_entities", i) for i in range(1, 6)]
    assert {error["extensions"]["code"] for error in errors.values()} == {"BAD_USER_INPUT"}
    assert "needs its key, id" in errors["_entities", 1]["message"]
    assert "Query is not an entity" in errors["_entities", 3]["message"]
    assert "__typename and id" in errors["_entities", 5]["message"]
