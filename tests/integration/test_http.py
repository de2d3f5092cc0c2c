"""GraphQL over HTTP and WebSocket, against the real test stack."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from gateway.graphiql import CONTENT_SECURITY_POLICY

HEALTH_QUERY = "{ health { status checkedAt } }"


def test_graphiql_page_is_served_to_browsers(client: TestClient) -> None:
    response = client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # Its URL may carry an API key (the `polygraph dev-key` link).
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_post_query_answers_with_graphql_response_json(client: TestClient) -> None:
    response = client.post("/graphql", json={"query": HEALTH_QUERY})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/graphql-response+json"
    assert response.json()["data"]["health"]["status"] == "HEALTHY"


def test_get_query_works(client: TestClient) -> None:
    response = client.get(
        "/graphql",
        params={"query": "{ health { status } }"},
        headers={"apollo-require-preflight": "true"},
    )
    assert response.status_code == 200
    assert response.json()["data"]["health"]["status"] in {"HEALTHY", "MODERATE", "CRITICAL"}


def test_application_json_is_used_when_it_is_all_the_client_accepts(client: TestClient) -> None:
    response = client.post(
        "/graphql", json={"query": "{ health { status } }"}, headers={"accept": "application/json"}
    )
    assert response.headers["content-type"] == "application/json"


def test_mutation_over_get_is_refused_with_405(client: TestClient) -> None:
    response = client.get(
        "/graphql",
        params={"query": "mutation { anything }"},
        headers={"apollo-require-preflight": "true"},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_another_method_is_refused_with_a_graphql_shaped_405(client: TestClient) -> None:
    response = client.put(
        "/graphql", json={"query": HEALTH_QUERY}, headers={"accept": "application/json"}
    )
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "PUT" in error["message"]
    # Other paths keep Starlette's plain answers.
    assert client.put("/health").headers["content-type"].startswith("text/plain")


def test_invalid_document_gets_400_and_a_code(client: TestClient) -> None:
    response = client.post("/graphql", json={"query": "{ noSuchField }"})
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    error = body["errors"][0]
    assert "noSuchField" in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_several_operations_need_an_operation_name(client: TestClient) -> None:
    document = "query A { __typename } query B { health { status } }"
    response = client.post("/graphql", json={"query": document})
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert "operationName" in body["errors"][0]["message"]

    named = client.post("/graphql", json={"query": document, "operationName": "B"})
    assert named.status_code == 200
    assert list(named.json()["data"]) == ["health"]


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.post(
        "/graphql", json={"query": "{ health { status } }"}, headers={"x-request-id": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.post("/graphql", json={"query": "{ health { status } }"})
    assert len(generated.headers["x-request-id"]) == 16
    # One the gateway would not take is replaced by its own, not echoed.
    for unfit in ("caf\u00e9-1", "a b", "x" * 65, "a;b"):
        answered = client.post(
            "/graphql",
            json={"query": "{ health { status } }"},
            headers={b"x-request-id": unfit.encode("latin-1")},
        )
        assert len(answered.headers["x-request-id"]) == 16, unfit


def test_subscription_over_graphql_transport_ws_delivers_events(client: TestClient) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription { healthUpdates(intervalSeconds: 0.1) { status } }"
                    },
                }
            )
        )
        events = [json.loads(ws.receive_text()) for _ in range(2)]
        assert [e["type"] for e in events] == ["next", "next"]
        assert all(e["payload"]["data"]["healthUpdates"]["status"] for e in events)
        ws.send_text(json.dumps({"id": "1", "type": "complete"}))
