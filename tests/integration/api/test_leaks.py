"""What must not leak: emails through the audit log, memories to any viewer, store
details (and store load) to anonymous health readers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime

from starlette.testclient import TestClient
from strawberry import relay

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

AUDIT_VALUES = """query($type: String!, $id: String!) {
  auditLog(filter: {resourceType: $type, resourceId: $id}) { edges { node { newValue } } } }"""
AUDIT = """query($type: String!, $id: String!) {
  auditLog(filter: {resourceType: $type, resourceId: $id}) {
    edges { node { action newValue redacted } } } }"""


def _global(type_name: str, node_id: str) -> str:
    return str(relay.GlobalID(type_name, node_id))


def test_operators_read_no_other_users_email_or_key_in_the_audit_log(
    gql: GraphQL, admin: Caller, operator: Caller
) -> None:
    email = f"{unique('private')}@example.test"
    created = data(
        gql(
            "mutation($e: String!) { createUser(input: {email: $e, role: VIEWER}) { user { id } } }",
            {"e": email},
            caller=admin,
        )
    )["createUser"]["user"]
    user_id = relay.GlobalID.from_id(created["id"]).node_id
    variables = {"type": "user", "id": user_id}

    # The attack: `User.email` is admins' and the user's, yet operators read it here.
    (values,) = data(gql(AUDIT_VALUES, variables, caller=operator))["auditLog"]["edges"]
    assert email not in json.dumps(values)
    (seen,) = data(gql(AUDIT, variables, caller=operator))["auditLog"]["edges"]
    assert seen["node"]["redacted"] == ["newValue.email"]
    assert "email" not in seen["node"]["newValue"]
    assert seen["node"]["newValue"]["role"] == "viewer"
    assert email not in json.dumps(seen)
    (full,) = data(gql(AUDIT, variables, caller=admin))["auditLog"]["edges"]
    assert full["node"]["newValue"]["email"] == email and full["node"]["redacted"] == []

    # An API key's name and prefix are its owner's: hidden from other operators only.
    key = data(
        gql(
            'mutation { createApiKey(input: {name: "ci"}) { apiKey { id prefix } } }',
            caller=admin,
        )
    )["createApiKey"]["apiKey"]
    key_row = {"type": "api_key", "id": key["id"]}
    (hidden,) = data(gql(AUDIT, key_row, caller=operator))["auditLog"]["edges"]
    assert hidden["node"]["redacted"] == ["newValue.name", "newValue.prefix"]
    assert key["prefix"] not in json.dumps(hidden)
    own = data(
        gql('mutation { createApiKey(input: {name: "mine"}) { apiKey { id } } }', caller=operator)
    )["createApiKey"]["apiKey"]
    (mine,) = data(gql(AUDIT, {"type": "api_key", "id": own["id"]}, caller=operator))["auditLog"][
        "edges"
    ]
    assert mine["node"]["newValue"]["name"] == "mine" and mine["node"]["redacted"] == []


REMEMBER = """mutation($a: ID!, $v: [Float!]) { rememberMemory(input: {agentId: $a,
  content: "the vault code is 1234", vector: $v}) { memory { id } } }"""
RECALL = """query($id: ID!, $v: [Float!]) { node(id: $id) { ... on Agent {
  recall(vector: $v) { memory { content } } } } }"""
MEMORY = "query($id: ID!) { node(id: $id) { ... on Memory { content } } }"
VECTOR = [0.1] * 384


def test_an_agents_memories_are_for_it_its_actors_and_operators(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = data(
        gql(
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": unique("secretive")},
            caller=operator,
        )
    )["createAgent"]["agent"]["id"]
    memory_id = data(gql(REMEMBER, {"a": agent_id, "v": VECTOR}, caller=operator))[
        "rememberMemory"
    ]["memory"]["id"]
    recall = {"id": agent_id, "v": VECTOR}

    # The attack: any viewer read any agent's memories.
    refused = gql(RECALL, recall, caller=viewer)
    assert error_codes(refused) == ["FORBIDDEN"]
    assert refused["data"]["node"]["recall"] is None
    assert data(gql(MEMORY, {"id": memory_id}, caller=viewer))["node"] is None

    actor = make_caller("agent")
    assert error_codes(gql(RECALL, recall, caller=actor)) == ["FORBIDDEN"]
    data(
        gql(
            "mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) { created } }",
            {"u": _global("User", actor.user_id), "a": agent_id},
            caller=operator,
        )
    )
    login = data(
        gql(
            "mutation($k: String!, $a: ID!) { login(input: {apiKey: $k, agentId: $a}) { token } }",
            {"k": actor.api_key, "a": agent_id},
        )
    )["login"]
    as_agent = {"authorization": f"Bearer {login['token']}"}
    secret = [{"memory": {"content": "the vault code is 1234"}}]
    # Operators; the user allowed to act as the agent (with its key); the agent itself.
    for reader in (operator.headers, actor.headers, as_agent):
        assert data(gql(RECALL, recall, headers=reader))["node"]["recall"] == secret
        memory = data(gql(MEMORY, {"id": memory_id}, headers=reader))["node"]
        assert memory == {"content": "the vault code is 1234"}


def test_anonymous_callers_see_health_status_only(
    client: TestClient, gql: GraphQL, viewer: Caller
) -> None:
    query = "{ health { status components { name error } } }"
    anonymous = gql(query)
    assert anonymous["data"]["health"]["status"] == "HEALTHY"
    assert anonymous["data"]["health"]["components"] is None
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]
    signed_in = data(gql(query, caller=viewer))["health"]["components"]
    assert {c["name"] for c in signed_in} == {"postgres", "neo4j", "redis", "metrics"}

    status_only = client.get("/health")
    assert status_only.status_code == 200
    assert set(status_only.json()) == {"status", "checkedAt"}
    breakdown = client.get("/health", headers=viewer.headers).json()
    assert breakdown["components"]["postgres"]["status"] == "up"
    assert client.get("/health", headers={"x-api-key": "pg_wrong"}).status_code == 401
    # Orchestrators' probes stay anonymous.
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_health_probes_are_shared_and_updates_tick_at_most_once_a_second(
    settings: Settings,
) -> None:
    subscriptions, sockets, ticks = 10, 2, 2
    app = create_app(settings)
    with TestClient(app) as client:
        monitor = app.state.stores.health
        received: dict[tuple[int, str], list[datetime]] = {}
        with (
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as one,
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as two,
        ):
            for ws in (one, two):
                # The attack: anonymous, many subscriptions, a tenth of a second each.
                ws.send_text(json.dumps({"type": "connection_init"}))
                assert json.loads(ws.receive_text())["type"] == "connection_ack"
                for n in range(subscriptions):
                    query = (
                        "subscription { healthUpdates(intervalSeconds: 0.1) { status checkedAt } }"
                    )
                    ws.send_text(
                        json.dumps({"id": str(n), "type": "subscribe", "payload": {"query": query}})
                    )
            for index, ws in enumerate((one, two)):
                for _ in range(subscriptions * ticks):
                    message = json.loads(ws.receive_text())
                    assert message["type"] == "next", message
                    report = message["payload"]["data"]["healthUpdates"]
                    at = datetime.fromisoformat(report["checkedAt"])
                    received.setdefault((index, message["id"]), []).append(at)
        assert len(received) == sockets * subscriptions
        assert all(len(times) >= 1 for times in received.values())
        # One probe served every subscriber of a tick: a handful of probes for 40 reports.
        assert monitor.probes * 5 <= sockets * subscriptions * ticks, monitor.probes
        # A subscriber never gets two reports less than the floor apart (0.1 s was asked).
        for times in received.values():
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
            assert all(gap >= 0.9 for gap in gaps), gaps
