"""Malformed requests get a 4xx with a GraphQL-shaped error and a code, never a 500."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from httpx2 import Response
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.app import create_app
from gateway.graphql_view import GraphQLView
from gateway.settings import Settings

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
# GETs run only with a header a cross-site page could not send unasked (CSRF).
PREFLIGHT = {"apollo-require-preflight": "true"}


def _refusal(response: Response, status: int, code: str) -> dict[str, Any]:
    """The one error of a request that never executed: no `data` key at all."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == GRAPHQL_RESPONSE_JSON
    body: dict[str, Any] = response.json()
    assert "data" not in body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code
    assert error["message"]
    result: dict[str, Any] = error
    return result


def _post(client: TestClient, content: bytes, content_type: str = "application/json") -> Response:
    return client.post("/graphql", content=content, headers={"content-type": content_type})


@pytest.mark.parametrize("body", [b"123", b"null", b'"{ __typename }"', b"true"])
def test_a_body_that_is_not_an_object_is_refused(client: TestClient, body: bytes) -> None:
    error = _refusal(_post(client, body), 400, "BAD_REQUEST")
    assert "JSON object" in error["message"]


def test_a_body_that_is_not_json_is_refused(client: TestClient) -> None:
    error = _refusal(_post(client, b'{"query": '), 400, "BAD_REQUEST")
    # Where the parser stopped, so a client can find its mistake.
    assert error["message"] == "The JSON does not parse: unexpected end of data (at character 10)."


def test_a_body_that_is_not_utf8_is_refused(client: TestClient) -> None:
    _refusal(_post(client, b'{"query": "{ __typename \xff\xfe }"}'), 400, "BAD_REQUEST")


def test_json_nested_5000_levels_is_refused(client: TestClient) -> None:
    nested = b"[" * 5000 + b"]" * 5000
    error = _refusal(_post(client, nested), 400, "BAD_REQUEST")
    assert "more than 1,024 levels deep" in error["message"]
    in_variables = b'{"query": "{ __typename }", "variables": {"v": ' + nested + b"}}"
    error = _refusal(_post(client, in_variables), 400, "BAD_REQUEST")
    assert "more than 1,024 levels deep (at character 1070)" in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_a_post_that_is_not_json_gets_415(client: TestClient, content_type: str) -> None:
    response = _post(client, b'{"query": "{ __typename }"}', content_type)
    error = _refusal(response, 415, "BAD_REQUEST")
    assert "application/json" in error["message"]


def test_a_batch_is_refused_while_batching_is_off(client: TestClient) -> None:
    response = client.post("/graphql", json=[{"query": "{ __typename }"}])
    error = _refusal(response, 400, "BAD_REQUEST")
    assert "atch" in error["message"]


def test_a_parse_error_is_graphql_parse_failed(client: TestClient) -> None:
    error = _refusal(
        client.post("/graphql", json={"query": "{ viewer {"}), 400, "GRAPHQL_PARSE_FAILED"
    )
    assert error["locations"]


def test_a_validation_error_is_graphql_validation_failed(client: TestClient) -> None:
    error = _refusal(
        client.post("/graphql", json={"query": "{ noSuchField }"}), 400, "GRAPHQL_VALIDATION_FAILED"
    )
    assert "noSuchField" in error["message"]


def test_a_variable_of_the_wrong_type_is_bad_user_input(client: TestClient) -> None:
    response = client.post(
        "/graphql",
        json={
            "query": "query($n: Int) { agents(first: $n) { totalCount } }",
            "variables": {"n": "ten"},
        },
    )
    _refusal(response, 400, "BAD_USER_INPUT")


def test_a_datetime_outside_the_years_1_to_9999_in_utc_is_bad_user_input(
    client: TestClient,
) -> None:
    # Year 1 at +14:00 is an instant of year 0: it reached PostgreSQL's driver, which
    # refused it with an internal error.
    response = client.post(
        "/graphql",
        json={
            "query": "query($since: DateTime) { leaderboard(since: $since) { rank } }",
            "variables": {"since": "0001-01-01T00:00:00+14:00"},
        },
    )
    error = _refusal(response, 400, "BAD_USER_INPUT")
    assert "outside the years 1 to 9999" in error["message"]


@pytest.mark.parametrize(
    "payload",
    [
        {"query": 5},
        {"query": "{ __typename }", "variables": [1]},
        {"query": "{ __typename }", "operationName": 5},
        {"query": "query A { __typename }", "operationName": "B"},
        {"variables": {}},
    ],
    ids=[
        "query-not-a-string",
        "variables-not-an-object",
        "bad-operation-name",
        "unknown-operation",
        "no-query",
    ],
)
def test_a_malformed_operation_is_refused(client: TestClient, payload: dict[str, Any]) -> None:
    _refusal(client.post("/graphql", json=payload), 400, "BAD_REQUEST")


def test_malformed_get_parameters_are_refused(client: TestClient) -> None:
    bad_json = client.get(
        "/graphql", params={"query": "{ __typename }", "variables": "{"}, headers=PREFLIGHT
    )
    _refusal(bad_json, 400, "BAD_REQUEST")
    not_an_object = client.get(
        "/graphql", params={"query": "{ __typename }", "variables": "7"}, headers=PREFLIGHT
    )
    _refusal(not_an_object, 400, "BAD_REQUEST")


def test_a_mutation_over_get_is_graphql_shaped(client: TestClient) -> None:
    response = client.get(
        "/graphql", params={"query": "mutation { logout { loggedOut } }"}, headers=PREFLIGHT
    )
    _refusal(response, 405, "BAD_REQUEST")
    assert response.headers["allow"] == "POST"


def test_legacy_json_clients_get_200_for_request_errors_without_data(client: TestClient) -> None:
    response = client.post(
        "/graphql", json={"query": "{ noSuchField }"}, headers={"accept": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_websocket_operations_get_the_same_codes(client: TestClient) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        subscribe = {"type": "subscribe", "payload": {"query": "subscription { noSuchField }"}}
        ws.send_text(json.dumps({"id": "1", **subscribe}))
        message = json.loads(ws.receive_text())
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        # As over HTTP, not INTERNAL.
        ws.send_text(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": ""}}))
        message = json.loads(ws.receive_text())
        assert message["type"] == "error"
        (error,) = message["payload"]
        assert error == {
            "message": "No GraphQL query found in the request",
            "extensions": {"code": "BAD_REQUEST"},
        }
        # A syntax error closes the socket, as graphql-transport-ws asks.
        ws.send_text(json.dumps({"id": "3", "type": "subscribe", "payload": {"query": "{"}}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4400


@pytest.mark.parametrize(
    "payload",
    [
        {"query": 123},
        {"query": "{ __typename }", "variables": [1]},
        {"variables": {}},
        {"query": "{ __typename }", "extensions": 5},
    ],
    ids=["query-not-a-string", "variables-not-an-object", "no-query", "extensions-not-an-object"],
)
def test_a_malformed_websocket_subscribe_closes_with_4400(
    client: TestClient, payload: dict[str, Any]
) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4400


SUBSCRIBE = {"query": "subscription { taskUpdated { change } }"}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ([1, 2], "Invalid message: send a JSON object."),
        (5, "Invalid message: send a JSON object."),
        (
            {"id": {"a": 1}, "type": "subscribe", "payload": SUBSCRIBE},
            "Invalid subscribe message: `id` must be a string of at most 256 characters.",
        ),
        (
            {"id": 1, "type": "subscribe", "payload": SUBSCRIBE},
            "Invalid subscribe message: `id` must be a string of at most 256 characters.",
        ),
        (
            {"id": "x" * 257, "type": "subscribe", "payload": SUBSCRIBE},
            "Invalid subscribe message: `id` must be a string of at most 256 characters.",
        ),
        (
            {"id": "1", "type": "subscribe", "payload": "{ __typename }"},
            "Invalid subscribe message: `payload` must be an object.",
        ),
        (
            {"id": "1", "type": "subscribe", "payload": [SUBSCRIBE]},
            "Invalid subscribe message: `payload` must be an object.",
        ),
        (
            {"id": None, "type": "complete"},
            "Invalid complete message: `id` must be a string of at most 256 characters.",
        ),
    ],
    ids=[
        "a-list",
        "a-number",
        "id-an-object",
        "id-a-number",
        "id-too-long",
        "payload-a-string",
        "payload-a-list",
        "complete-id-null",
    ],
)
def test_a_malformed_websocket_message_closes_with_4400(
    client: TestClient, message: object, reason: str
) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(json.dumps(message))
        # Answered with a pong, not waited on forever, if the message were taken.
        ws.send_text(json.dumps({"type": "ping"}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert (closed.value.code, closed.value.reason) == (4400, reason)


def test_a_websocket_that_does_not_sign_in_in_time_is_closed(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"read_timeout_s": 0.2}))
    (view,) = {route.app for route in app.routes if isinstance(route, WebSocketRoute)}
    assert isinstance(view, GraphQLView)
    assert view.connection_init_wait_timeout == timedelta(seconds=0.2)
    # Nothing sent: connection_init is due within POLYGRAPH_READ_TIMEOUT_S.
    with (
        TestClient(app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (4408, "Connection initialisation timeout")


def test_a_null_connection_init_payload_is_taken_for_none(client: TestClient) -> None:
    # graphql-transport-ws: `payload?: Record<string, unknown> | null`.
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init", "payload": None}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"


def test_an_operation_id_of_256_characters_is_taken(client: TestClient) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        operation_id = "x" * 256
        query = {"query": "{ __typename }"}
        ws.send_text(json.dumps({"id": operation_id, "type": "subscribe", "payload": query}))
        message = json.loads(ws.receive_text())
        assert (message["id"], message["type"]) == (operation_id, "next")
        assert message["payload"]["data"] == {"__typename": "Query"}
