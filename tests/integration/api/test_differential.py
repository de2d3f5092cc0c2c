"""The planned executor against graphql-core's, on the real schema and stores.

Every request in the test suite is already answered by both (tests/support/
differential.py). Here are the documents the other tests do not send: one per area
of the spec where executors go wrong (aliases, fragments on an interface, @skip and
@include with variables, introspection, __typename, null propagation through
non-null fields, errors inside list items), for a principal who may and one who
may not, and a corpus of queries generated from the schema (hypothesis-graphql,
derandomized: the same documents on every run). They run on a gateway of their own
that compares, whichever executor the rest of the run uses.

The same documents also compare the prepared path (gateway/prepared.py) with
Strawberry's way. A query's first request goes Strawberry's way and leaves the
document prepared; the same request again takes the prepared path. Once a first
plain request has prepared it, each document is sent three times: with an
`extensions` entry the gateway ignores (which keeps it on Strawberry's way), plain
(prepared), and with that entry again. The prepared answer must equal one of the two
around it, status and body (data, errors with their messages, paths, locations and
codes, the cost report): equal to both unless a background write landed in between,
which can change one neighbour only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import graphql
import httpx2
import pytest
from graphql import get_introspection_query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries
from starlette.testclient import TestClient
from strawberry.types.graphql import OperationType

from gateway.app import create_app
from gateway.graphql_view import GraphQLView
from gateway.prepared import PreparedPath
from gateway.settings import Settings
from schema import build_schema
from tests.integration.api.conftest import (
    Caller,
    GraphQL,
    _make_caller,
    data,
    error_codes,
    unique,
)
from tests.integration.api.test_cost import _nobody_waits
from tests.integration.api.test_status_codes import agents_locked, serving
from tests.support.differential import DifferentialExecutionContext, take_mismatches
from tests.support.waiting import until

ANONYMOUS = Caller(user_id="", role="anonymous", api_key="")


@dataclass(frozen=True)
class World:
    admin: Caller
    viewer: Caller
    agents: list[str]
    tasks: list[str]

    @property
    def callers(self) -> list[Caller]:
        return [self.admin, self.viewer, ANONYMOUS]


def _ask(gql: GraphQL, query: str, variables: dict[str, Any], caller: Caller) -> dict[str, Any]:
    return gql(query, variables, caller=None if caller is ANONYMOUS else caller)


@pytest.fixture(scope="module")
def differential_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, execution_context_class=DifferentialExecutionContext)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def gql(differential_client: TestClient) -> GraphQL:
    return GraphQL(differential_client)


@pytest.fixture(scope="module")
def world(differential_client: TestClient, settings: Settings) -> Iterator[World]:
    admin = asyncio.run(_make_caller(settings, "admin"))
    viewer = asyncio.run(_make_caller(settings, "viewer"))
    gql = GraphQL(differential_client)
    agents: list[str] = []
    parent: str | None = None
    for role in ("orchestrator", "worker", "worker", "reviewer"):
        created = data(
            gql(
                "mutation($i: CreateAgentInput!) { createAgent(input: $i) { agent { id } } }",
                {"i": {"name": unique("diff"), "role": role, "parentId": parent, "tags": ["d"]}},
                caller=admin,
            )
        )
        agents.append(created["createAgent"]["agent"]["id"])
        parent = parent or agents[0]
    for source, target, kind in ((0, 1, "COLLABORATES_WITH"), (1, 2, "DELEGATES_TO")):
        data(
            gql(
                "mutation($s: ID!, $t: ID!, $k: AgentLinkType!) {"
                " relateAgents(input: {sourceId: $s, targetId: $t, type: $k, weight: 0.5})"
                " { userErrors { code } } }",
                {"s": agents[source], "t": agents[target], "k": kind},
                caller=admin,
            )
        )
    tasks: list[str] = []
    for i in range(5):
        created = data(
            gql(
                "mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } } }",
                {"i": {"title": f"diff {i}", "priority": i + 1, "assigneeId": agents[i % 2]}},
                caller=admin,
            )
        )
        tasks.append(created["createTask"]["task"]["id"])
    data(
        gql(
            "mutation($t: ID!, $d: ID!) { addTaskDependency(input: {taskId: $t, dependsOnId: $d})"
            " { userErrors { code } } }",
            {"t": tasks[1], "d": tasks[0]},
            caller=admin,
        )
    )
    yield World(admin, viewer, agents, tasks)


def _no_mismatches(what: str) -> None:
    mismatches = take_mismatches()
    assert not mismatches, f"{what}:\n" + "\n".join(mismatches)


DOCUMENTS: dict[str, tuple[str, Any]] = {
    "aliases": (
        """{ a: agents(first: 2) { edges { node { id n: name nm: name } } }
             b: agents(first: 1, orderBy: CREATED_AT_DESC) { totalCount c: pageInfo { hasNextPage } } }""",
        {},
    ),
    "interface fragments": (
        """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
             ...AgentParts
             ... on Task { title priority status assignee { __typename name } }
             ... on Node { id } } }
           fragment AgentParts on Agent { name role tasks(first: 2) { edges { cursor node { title } } } }""",
        lambda w: {"ids": [w.agents[0], w.tasks[0], w.agents[1]]},
    ),
    "errors in list items": (
        """query($ids: [ID!]!) { nodes(ids: $ids) { id } }""",
        lambda w: {"ids": [w.agents[0], "not-an-id", w.tasks[1], "QWdlbnQ6eA=="]},
    ),
    "skip and include": (
        """query($skip: Boolean!, $with: Boolean!) { agents(first: 3) { edges { node {
             name @skip(if: $skip) role @include(if: $with)
             ...Tasks @include(if: $with)
             children @skip(if: $skip) { name } } } } }
           fragment Tasks on Agent { tasks(first: 1) { totalCount } }""",
        {"skip": True, "with": False},
    ),
    "skip and include, the other way": (
        """query($skip: Boolean!, $with: Boolean!) { agents(first: 3) { edges { node {
             name @skip(if: $skip) role @include(if: $with)
             ...Tasks @include(if: $with)
             children @skip(if: $skip) { name } } } } }
           fragment Tasks on Agent { tasks(first: 1) { totalCount } }""",
        {"skip": False, "with": True},
    ),
    "typename everywhere": (
        """{ __typename agents(first: 2) { __typename edges { __typename node { __typename id
             collaborators { __typename type weight agent { __typename name } } } } } }""",
        {},
    ),
    "null propagation through a non-null root field": (
        "{ auditLog(first: 2) { totalCount edges { node { action } } } }",
        {},
    ),
    "permission errors inside list items": (
        "{ agents(first: 3) { edges { node { name sessions { id } } } } }",
        {},
    ),
    "graph fields and nested loaders": (
        """query($id: ID!) { agentNeighbourhood(agentId: $id, depth: 2) {
             nodes { distance agent { name parent { name } children { name } } }
             edges { type source { id } target { id } } } }""",
        lambda w: {"id": w.agents[0]},
    ),
    "an error in a non-null list root field": (
        # A sibling graph read would be cancelled mid-flight, which leaves its socket to
        # the garbage collector (a Neo4j driver matter, with either executor).
        "query($id: ID!) { taskDependents(taskId: $id) { id } leaderboard { rank } }",
        lambda w: {"id": w.agents[0]},
    ),
    "task graph": (
        """query($t: ID!) { node(id: $t) { ... on Task { title dependencies { title }
             blockers { title } history { version type data } workflow { name } } } }""",
        lambda w: {"t": w.tasks[1]},
    ),
    "bad arguments": (
        "{ criticalPath { totalEstimate } leaderboard(first: -3) { rank } }",
        {},
    ),
    "variables with defaults and list coercion": (
        """query($first: Int = 2, $types: [AgentRelationshipType!] = COLLABORATES_WITH) {
             agents(first: $first) { edges { node { name } } }
             mostConnectedAgents(first: 2, types: $types) { degree agent { name } } }""",
        {},
    ),
    "introspection": (get_introspection_query(descriptions=True), {}),
    "type introspection": (
        '{ __type(name: "Agent") { name kind fields { name args { name defaultValue } } } }',
        {},
    ),
}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_spec_areas_answer_alike(world: World, gql: GraphQL, name: str) -> None:
    query, variables = DOCUMENTS[name]
    values = variables(world) if callable(variables) else variables
    for caller in world.callers:
        body = _ask(gql, query, values, caller)
        assert "data" in body or "errors" in body
        _no_mismatches(f"{name}, as {caller.role}")


_SCHEMA = build_schema()._schema


def _representation(typename: str, id: str) -> graphql.ObjectValueNode:
    return graphql.ObjectValueNode(
        fields=(
            graphql.ObjectFieldNode(
                name=graphql.NameNode(value="__typename"), value=_string(typename)
            ),
            graphql.ObjectFieldNode(name=graphql.NameNode(value="id"), value=_string(id)),
        )
    )


def _string(value: str) -> graphql.StringValueNode:
    return graphql.StringValueNode(value=value)


@pytest.fixture(scope="module")
def generated(world: World) -> st.SearchStrategy[str]:
    ids = [*world.agents, *world.tasks, "not-an-id", "VGFzazox"]
    return queries(
        _SCHEMA,
        custom_scalars={
            "ID": st.sampled_from(ids).map(_string),
            "Int": st.sampled_from([-1, 0, 1, 2, 5, 2**31 - 1]).map(
                lambda value: graphql.IntValueNode(value=str(value))
            ),
            "DateTime": st.sampled_from(
                ["2026-01-01T00:00:00+00:00", "2030-06-30T12:00:00Z", "yesterday"]
            ).map(_string),
            "JSON": st.sampled_from([_string("x"), graphql.IntValueNode(value="1")]),
            # Federation's entity references: `{__typename, id}` objects.
            "_Any": st.tuples(
                st.sampled_from(["Agent", "Task", "Workflow"]), st.sampled_from(ids)
            ).map(lambda reference: _representation(*reference)),
        },
        allow_x00=False,
    )


def _corpus(examples: int) -> settings:
    """The same `examples` documents on every run."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_generated_queries_answer_alike(
    world: World, gql: GraphQL, generated: st.SearchStrategy[str]
) -> None:
    @_corpus(150)
    @given(document=generated, caller=st.sampled_from(world.callers))
    def answer_alike(document: str, caller: Caller) -> None:
        if _depth(graphql.parse(document)) > 7:
            return
        _ask(gql, document, {}, caller)
        _no_mismatches(f"as {caller.role}")

    answer_alike()


def _depth(node: graphql.Node, depth: int = 0) -> int:
    selection_set = getattr(node, "selection_set", None)
    if selection_set is None:
        definitions = getattr(node, "definitions", ())
        return max((_depth(d, depth) for d in definitions), default=depth)
    return max((_depth(s, depth + 1) for s in selection_set.selections), default=depth)


# Not a key the gateway reads: the request goes Strawberry's way, unprepared.
_UNPREPARED = {"extensions": {"test": "unprepared"}}


class Recorded:
    """Which requests the prepared path answered, in order."""

    def __init__(self, path: PreparedPath) -> None:
        self.answered: list[bool] = []
        self._run = path.run
        path.run = self._recording  # type: ignore[method-assign,assignment]

    async def _recording(self, *args: Any) -> Any:
        result = await self._run(*args)
        self.answered.append(result is not None)
        return result

    def take(self) -> list[bool]:
        answered, self.answered = self.answered, []
        return answered


def _view(client: TestClient) -> GraphQLView:
    for route in client.app.routes:  # type: ignore[attr-defined]
        endpoint = getattr(route, "endpoint", None)
        if isinstance(endpoint, GraphQLView):
            return endpoint
    raise AssertionError("no GraphQL route")


@pytest.fixture(scope="module")
def recorded(differential_client: TestClient) -> Iterator[Recorded]:
    path = _view(differential_client).prepared
    assert path is not None, "the planned executor's gateway has a prepared path"
    yield Recorded(path)


def _post(
    client: TestClient, query: str, variables: dict[str, Any], caller: Caller, **extra: Any
) -> httpx2.Response:
    headers = {} if caller is ANONYMOUS else caller.headers
    return client.post(
        "/graphql", json={"query": query, "variables": variables, **extra}, headers=headers
    )


def _answer(response: httpx2.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


def _both_ways(
    client: TestClient, recorded: Recorded, query: str, variables: dict[str, Any], caller: Caller
) -> tuple[list[bool], tuple[int, Any]]:
    """The prepared answer (checked against Strawberry's either side), and whether the
    prepared path answered each plain request."""
    recorded.take()
    # Prepares the document, if an earlier request has not.
    _post(client, query, variables, caller)
    before = _answer(_post(client, query, variables, caller, **_UNPREPARED))
    prepared = _answer(_post(client, query, variables, caller))
    after = _answer(_post(client, query, variables, caller, **_UNPREPARED))
    assert prepared in (before, after), f"{prepared}\n!=\n{before}\nnor\n{after}"
    return recorded.take(), prepared


def _runs_prepared(body: dict[str, Any]) -> bool:
    """Whether a request answered `body` takes the prepared path once prepared: not
    when refused before execution."""
    return "data" in body


@pytest.mark.parametrize("name", DOCUMENTS)
def test_spec_areas_answer_as_strawberry_does(
    world: World, differential_client: TestClient, recorded: Recorded, name: str
) -> None:
    query, variables = DOCUMENTS[name]
    values = variables(world) if callable(variables) else variables
    for caller in world.callers:
        answered, (_, body) = _both_ways(differential_client, recorded, query, values, caller)
        # Requests with `extensions` never reach the prepared path.
        assert answered[1:] == [_runs_prepared(body)], (name, caller.role, answered)


def test_generated_queries_answer_as_strawberry_does(
    world: World,
    differential_client: TestClient,
    recorded: Recorded,
    generated: st.SearchStrategy[str],
) -> None:
    taken: list[bool] = []

    @_corpus(60)
    @given(document=generated, caller=st.sampled_from(world.callers))
    def answer_alike(document: str, caller: Caller) -> None:
        answered, (_, body) = _both_ways(differential_client, recorded, document, {}, caller)
        # A refusal the gateway knows is answered before either way (known_refusals).
        taken.append(answered[-1:] == [True])
        assert taken[-1] == _runs_prepared(body), (document, caller.role, answered)

    answer_alike()
    # Many generated documents are refused before execution (a negative `first`, say).
    assert taken.count(True) >= 10


def test_refused_requests_go_strawberrys_way(
    differential_client: TestClient, recorded: Recorded, viewer: Caller
) -> None:
    query = "query($n: Int!) { agents(first: $n) { edges { node { name } } } }"
    _post(differential_client, query, {"n": 1}, viewer)
    recorded.take()
    # Over the list-argument rule with these variables: refused before execution.
    body = _post(differential_client, query, {"n": 100_000}, viewer).json()
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "first"
    assert recorded.take() == [False]
    # A variable of the wrong type: coerced, and refused, on the prepared path.
    body = _post(differential_client, query, {"n": "many"}, viewer).json()
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "data" not in body
    assert recorded.take() == [True]


def test_variables_taken_as_sent_answer_as_strawberry_does(
    world: World, differential_client: TestClient, recorded: Recorded
) -> None:
    """IDs, strings and booleans sent as such skip graphql-core's coercion on the prepared
    path; anything else (an ID sent as a number, a wrong type, a missing value) is
    coerced, or refused, by it."""
    query = (
        "query($id: ID!, $skip: Boolean!, $after: String) {"
        " node(id: $id) { id ... on Agent { name } }"
        " agents(first: 2, after: $after) @skip(if: $skip) { edges { node { name } } } }"
    )
    agent = world.agents[0]
    for variables, executes in (
        ({"id": agent, "skip": False, "after": None}, True),
        ({"id": agent, "skip": True}, True),
        ({"id": agent, "skip": False, "unused": 1}, True),
        ({"id": 12345, "skip": False}, True),
        ({"id": agent, "skip": "yes"}, False),
        ({"id": agent, "skip": False, "after": 7}, False),
        ({"skip": False}, False),
        ({"id": None, "skip": False}, False),
    ):
        answered, (_, body) = _both_ways(
            differential_client, recorded, query, variables, world.admin
        )
        assert answered[-1:] == [True], (variables, answered)
        assert ("data" in body) == executes, (variables, body)
        if not executes:
            assert error_codes(body) == ["BAD_USER_INPUT"], body
    path = _view(differential_client).prepared
    assert path is not None
    kept = path.queries.get(query, None)
    assert kept is not None and kept.plain_variables is not None


def test_only_plain_queries_and_mutations_are_prepared(
    differential_client: TestClient, recorded: Recorded, admin: Caller
) -> None:
    prepared = _view(differential_client).prepared
    assert prepared is not None
    mutation = "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }"
    cached = "query @cached(ttl: 5) { agents(first: 1) { totalCount } }"
    invalid = "{ agents(first: 1) { nope } }"
    persisted = "{ agents(first: 2) { totalCount } }"
    names = [unique("prep") for _ in range(2)]
    for name in names:
        created = data(_post(differential_client, mutation, {"n": name}, admin).json())
        assert created["createAgent"]["agent"]["id"]
        _post(differential_client, cached, {}, admin)
        _post(differential_client, invalid, {}, admin)
        _post(differential_client, persisted, {}, admin, **_UNPREPARED)
    kept = prepared.queries.get(mutation, None)
    assert kept is not None and kept.kind is OperationType.MUTATION
    for query in (cached, invalid, persisted):
        assert prepared.queries.get(query, None) is None, query
    # The second, prepared, wrote its agent as the first did.
    found = _post(
        differential_client,
        "query($m: String!) { agents(filter: {nameContains: $m}) { totalCount } }",
        {"m": names[1]},
        admin,
    )
    assert data(found.json())["agents"]["totalCount"] == 1
    # Only the mutation's second request took the prepared path: the mutation, the
    # cached query and the invalid one, then the mutation again (prepared), the cached
    # query again, and the lookup (the invalid document's second request is answered
    # from its remembered refusal, before either way).
    assert recorded.take() == [False, False, False, True, False, False]


async def test_a_prepared_query_past_the_deadline_is_cancelled_with_504(
    settings: Settings, operator: Caller
) -> None:
    hasty = settings.model_copy(
        update={"request_deadline_s": 0.5, "postgres_statement_timeout_s": 300}
    )
    query = "{ agents(first: 1) { edges { node { id } } } }"
    async with serving(hasty) as client:
        ready = await client.post("/graphql", json={"query": query}, headers=operator.headers)
        assert data(ready.json())["agents"]
        async with agents_locked(settings) as lock_holder:
            response = await client.post(
                "/graphql", json={"query": query}, headers=operator.headers
            )
            await until(lambda: _nobody_waits(lock_holder), limit_s=30)
    assert response.status_code == 504
    body = response.json()
    assert "data" not in body
    assert error_codes(body) == ["REQUEST_TIMEOUT"]
    assert "POLYGRAPH_REQUEST_DEADLINE_S" in body["errors"][0]["message"]
    assert body["extensions"]["cost"]["actual"] == 0
