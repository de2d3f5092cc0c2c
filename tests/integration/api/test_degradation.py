"""A store that is down degrades the gateway; it does not take it down."""

from __future__ import annotations

import socket

from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, data, unique


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_neo4j_down_nulls_graph_fields_and_keeps_the_rest(
    settings: Settings, operator: Caller
) -> None:
    no_graph = settings.model_copy(
        update={"neo4j_uri": f"bolt://127.0.0.1:{_closed_port()}", "projection_wait_s": 0.2}
    )
    with TestClient(create_app(no_graph)) as client:
        health = client.get("/health", headers=operator.headers).json()
        assert health["status"] == "moderate"
        assert health["components"]["neo4j"]["status"] == "down"

        name = unique("offgraph")
        created = client.post(
            "/graphql",
            json={
                "query": "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id name } projected userErrors { code } } }",
                "variables": {"n": name},
            },
            headers=operator.headers,
        ).json()
        payload = data(created)["createAgent"]
        # The write is durable in PostgreSQL; its projection waits in the outbox (for a
        # projector that can reach Neo4j: this worker's main test gateway, here).
        assert payload["agent"]["name"] == name

        body = client.post(
            "/graphql",
            json={
                "query": "query($id: ID!) { node(id: $id) { ... on Agent { name collaborators { weight } parent { id } } } }",
                "variables": {"id": payload["agent"]["id"]},
            },
            headers=operator.headers,
        ).json()
        assert body["data"]["node"]["name"] == name
        assert body["data"]["node"]["collaborators"] is None
        codes = {e["extensions"]["code"] for e in body["errors"]}
        assert codes == {"STORE_UNAVAILABLE"}


def test_postgres_down_is_critical_with_clear_errors(settings: Settings, operator: Caller) -> None:
    no_postgres = settings.model_copy(
        update={
            "postgres_dsn": settings.postgres_dsn.__class__(
                f"postgresql://polygraph:polygraph@127.0.0.1:{_closed_port()}/none"
            ),
            "postgres_acquire_timeout_s": 1.0,
        }
    )
    with TestClient(create_app(no_postgres)) as client:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "critical"
        assert client.get("/health/ready").status_code == 503
        body = client.post(
            "/graphql", json={"query": "{ agents { totalCount } }"}, headers=operator.headers
        ).json()
        assert body["errors"][0]["extensions"]["code"] == "STORE_UNAVAILABLE"
