"""CSRF prevention for GET, CORS with an allowlist, and the production preset."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from graphql import get_introspection_query
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.app import create_app
from gateway.settings import Settings

QUERY = {"query": "{ __typename }"}
ALLOWED = "https://app.example"


@pytest.fixture(scope="module")
def cors_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"cors_origins": [ALLOWED]}))) as client:
        yield client


def test_a_get_without_a_preflight_header_is_refused(client: TestClient) -> None:
    response = client.get("/graphql", params=QUERY)
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "cross-site request forgery" in error["message"]
    assert "apollo-require-preflight" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"apollo-require-preflight": "true"},
        {"x-apollo-operation-name": "Q"},
        {"x-polygraph-csrf": "1"},
        {"content-type": "application/json"},
    ],
)
def test_a_get_a_browser_would_have_preflighted_runs(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/graphql", params=QUERY, headers=headers)
    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_simple_content_type_does_not_count_as_preflighted(
    client: TestClient, content_type: str
) -> None:
    response = client.get("/graphql", params=QUERY, headers={"content-type": content_type})
    assert response.status_code == 400


def test_without_an_allowlist_no_origin_may_read(client: TestClient) -> None:
    response = client.post("/graphql", json=QUERY, headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/graphql",
        headers={"origin": ALLOWED, "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_an_allowed_origin_is_answered_with_cors_headers(cors_client: TestClient) -> None:
    preflight = cors_client.options(
        "/graphql",
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "x-api-key" in preflight.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in preflight.headers

    response = cors_client.post("/graphql", json=QUERY, headers={"origin": ALLOWED})
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = response.headers["access-control-expose-headers"]
    assert "x-request-id" in exposed and "retry-after" in exposed


def test_another_origin_is_not(cors_client: TestClient) -> None:
    preflight = cors_client.options(
        "/graphql",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    response = cors_client.post("/graphql", json=QUERY, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_websockets_from_other_origins_are_refused(cors_client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect),
        cors_client.websocket_connect(
            "/graphql",
            subprotocols=["graphql-transport-ws"],
            headers={"origin": "https://evil.example"},
        ),
    ):
        pass
    with cors_client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers={"origin": ALLOWED}
    ) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"


def test_production_turns_introspection_and_graphiql_off(settings: Settings) -> None:
    production = settings.model_copy(update={"env": "production"})
    with TestClient(create_app(production)) as client:
        page = client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 404
        introspection = client.post("/graphql", json={"query": get_introspection_query()})
        assert introspection.status_code == 400
        errors = introspection.json()["errors"]
        assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
        assert "introspection has been disabled" in errors[0]["message"]
        # __typename is not introspection: clients need it.
        assert client.post("/graphql", json=QUERY).json()["data"] == {"__typename": "Query"}


def test_production_can_turn_them_back_on(settings: Settings) -> None:
    production = settings.model_copy(
        update={"env": "production", "introspection": True, "graphiql": True}
    )
    with TestClient(create_app(production)) as client:
        assert client.get("/graphql", headers={"accept": "text/html"}).status_code == 200
        response = client.post("/graphql", json={"query": get_introspection_query()})
        assert response.json()["data"]["__schema"]["queryType"]["name"] == "Query"


def test_the_preset_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYGRAPH_ENV", "production")
    monkeypatch.setenv("POLYGRAPH_CORS_ORIGINS", f'["{ALLOWED}"]')
    loaded = Settings()
    assert (loaded.introspection_enabled, loaded.graphiql_enabled) == (False, False)
    assert loaded.cors_origins == [ALLOWED]
    monkeypatch.setenv("POLYGRAPH_INTROSPECTION", "true")
    assert Settings().introspection_enabled
