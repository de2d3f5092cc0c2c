"""The static cost: reported on every response, refused above the maximum, on the
request context before execution; the deadline and the response-size cap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import asyncpg
from graphql import get_introspection_query
from starlette.testclient import TestClient
from strawberry.extensions import SchemaExtension

from gateway.app import create_app, schema_extensions
from gateway.limits import RequestLimits
from gateway.settings import Settings
from resolvers.cost import OperationCost
from schema import build_schema
from tests.integration.api.conftest import Caller, GraphQL, data, unique
from tests.integration.api.test_status_codes import agents_locked, serving
from tests.support.waiting import until


def _hops(n: int) -> str:
    inner = "name"
    for _ in range(n):
        inner = f"collaborators {{ agent {{ {inner} }} }}"
    return f"{{ agents(first: 5) {{ edges {{ node {{ {inner} }} }} }} }}"


def test_every_response_reports_requested_and_actual_cost(gql: GraphQL, operator: Caller) -> None:
    tag = unique("cost")
    for _ in range(2):
        gql(
            "mutation($n: String!, $t: [String!]!) { createAgent(input: {name: $n, tags: $t}) { agent { id } } }",
            {"n": unique("agent"), "t": [tag]},
            caller=operator,
        )
    body = gql(
        "query($t: [String!]) { agents(first: 5, filter: {tagsAny: $t}) { edges { node { id } } } }",
        {"t": [tag]},
        caller=operator,
    )
    assert len(data(body)["agents"]["edges"]) == 2
    # Estimated from `first: 5`; counted from the two agents that came back.
    assert body["extensions"]["cost"] == {"requested": 11, "actual": 5, "maximum": 25_000}


def test_an_operation_over_the_maximum_cost_is_refused(client: TestClient, viewer: Caller) -> None:
    # Four hops pass the depth limit (12 levels) but not the cost.
    response = client.post("/graphql", json={"query": _hops(4)}, headers=viewer.headers)
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    (error,) = body["errors"]
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "POLYGRAPH_MAX_COST",
        "value": 111_111,
        "maximum": 25_000,
    }
    assert error["message"].startswith(
        "The operation's estimated cost is 111,111; the limit is 25,000"
    )
    assert body["extensions"]["cost"] == {"requested": 111_111, "actual": 0, "maximum": 25_000}


def test_nested_introspection_is_refused(client: TestClient) -> None:
    # Within the depth limit; graphql-core's own introspection depth rule refuses it
    # (the cost model would too: about 200,000).
    query = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }"
    response = client.post("/graphql", json={"query": query})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"] == "Maximum introspection depth exceeded"


def test_the_standard_introspection_query_costs_little(client: TestClient) -> None:
    response = client.post("/graphql", json={"query": get_introspection_query()})
    cost = response.json()["extensions"]["cost"]
    # It grows with the schema; GraphiQL and code generators send it at every start, so
    # it must stay a small share of the maximum (and of the anonymous quota).
    assert cost["requested"] < RequestLimits().max_cost / 3
    assert 0 < cost["actual"] <= cost["requested"]


class _SeesTheCost(SchemaExtension):
    seen: ClassVar[list[OperationCost | None]] = []

    def on_execute(self) -> Iterator[None]:
        _SeesTheCost.seen.append(self.execution_context.context.cost)
        yield


async def test_the_cost_is_on_the_request_context_before_execution() -> None:
    schema = build_schema([*schema_extensions(RequestLimits()), _SeesTheCost])
    context = SimpleNamespace(cost=None, request_id="-")
    result = await schema.execute("{ __schema { types { name } } }", context_value=context)
    assert result.errors is None
    types = len(result.data["__schema"]["types"]) if result.data else 0
    assert _SeesTheCost.seen == [OperationCost(requested=types)]
    assert context.cost == OperationCost(requested=types, actual=types)


async def test_past_the_deadline_the_work_is_cancelled_with_504(
    settings: Settings, operator: Caller
) -> None:
    # A statement timeout far off: only the deadline can end the wait.
    hasty = settings.model_copy(
        update={"request_deadline_s": 0.5, "postgres_statement_timeout_s": 300}
    )
    query = "{ agents(first: 1) { edges { node { id } } } }"
    async with serving(hasty) as client, agents_locked(settings) as lock_holder:
        response = await client.post("/graphql", json={"query": query}, headers=operator.headers)
        # The statement waiting on the lock was cancelled, not left to run.
        await until(lambda: _nobody_waits(lock_holder), limit_s=30)
    assert response.status_code == 504
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
    assert "POLYGRAPH_REQUEST_DEADLINE_S" in body["errors"][0]["message"]


async def _nobody_waits(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting == 0)


def test_a_response_over_the_cap_is_replaced_by_an_error(settings: Settings) -> None:
    small = settings.model_copy(update={"max_response_bytes": 2048})
    query = "{ __schema { types { name description } } }"
    with TestClient(create_app(small)) as client:
        response = client.post("/graphql", json={"query": query})
        assert response.status_code == 400
        body = response.json()
        assert "data" not in body
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "RESPONSE_TOO_LARGE"
        assert error["extensions"]["maximum"] == 2048
        assert "POLYGRAPH_MAX_RESPONSE_BYTES" in error["message"]
        assert body["extensions"]["cost"]["actual"] > 0

        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_text(json.dumps({"type": "connection_init"}))
            assert json.loads(ws.receive_text())["type"] == "connection_ack"
            ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            message: dict[str, Any] = json.loads(ws.receive_text())
            assert message["type"] == "next"
            assert "data" not in message["payload"]
            assert message["payload"]["errors"][0]["extensions"]["code"] == "RESPONSE_TOO_LARGE"


def test_subscription_events_report_their_cost(client: TestClient, viewer: Caller) -> None:
    query = "subscription { healthUpdates(intervalSeconds: 0.1) { components { name } } }"
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        # Signed in: anonymous callers get no components.
        init = {"type": "connection_init", "payload": {"apiKey": viewer.api_key}}
        ws.send_text(json.dumps(init))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        event = json.loads(ws.receive_text())
        ws.send_text(json.dumps({"id": "1", "type": "complete"}))
    components = len(event["payload"]["data"]["healthUpdates"]["components"])
    # healthUpdates weighs 10, its report 1, each component 1 (10 estimated).
    assert event["payload"]["extensions"]["cost"] == {
        "requested": 21,
        "actual": 11 + components,
        "maximum": 25_000,
    }


def test_deadline_does_not_cut_subscriptions(settings: Settings) -> None:
    hasty = settings.model_copy(update={"request_deadline_s": 0.2})
    query = "subscription { healthUpdates(intervalSeconds: 0.1) { status } }"
    with (
        TestClient(create_app(hasty)) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        # Events keep coming long after the deadline would have passed.
        for _ in range(5):
            assert json.loads(ws.receive_text())["type"] == "next"
