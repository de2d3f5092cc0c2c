"""What a client sends comes back in short: an error message keeps only the two ends
of a long one, and a WebSocket close reason fits its frame (RFC 6455 allows 123 bytes;
uvicorn drops the connection without a close frame for a longer one)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.errors import MAX_MESSAGE_CHARS
from gateway.graphql_view import MAX_OPERATION_ID_CHARS
from gateway.settings import Settings
from schema import relay
from tests.integration.api.conftest import Caller, GraphQL
from tests.support.serving import serve_in_thread

LONG = "A" * 50_000
# A string where a field's name belongs: the syntax error quotes it.
STRING_FOR_A_NAME = '{ "' + LONG + 'é" }'
# The marker that replaces a long message's middle, with the count in it.
SHORTENED_BY = 64


def _one_error(body: dict[str, Any], code: str) -> str:
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code, error
    message: str = error["message"]
    assert len(message) <= MAX_MESSAGE_CHARS + SHORTENED_BY
    assert "characters left out" in message
    return message


@pytest.mark.parametrize(
    ("payload", "code", "starts", "ends"),
    [
        (
            {"query": "query($id: ID!) { node(id: $id) { id } }", "variables": {"id": LONG}},
            "BAD_USER_INPUT",
            'Value cannot represent a GlobalID: "AAA',
            'AAA".',
        ),
        (
            {"query": "{ " + "x" * 50_000 + " }"},
            "GRAPHQL_VALIDATION_FAILED",
            "Cannot query field 'xxx",
            "xxx' on type 'Query'.",
        ),
        (
            {"query": STRING_FOR_A_NAME},
            "GRAPHQL_PARSE_FAILED",
            "Syntax Error: Expected Name",
            "é'.",
        ),
        (
            {"query": "query A { __typename }", "operationName": LONG},
            "BAD_REQUEST",
            'Unknown operation named "AAA',
            'AAA".',
        ),
    ],
    ids=["execution", "validation", "parse", "operation-name"],
)
def test_a_long_value_is_quoted_by_its_two_ends(
    client: TestClient,
    viewer: Caller,
    payload: dict[str, Any],
    code: str,
    starts: str,
    ends: str,
) -> None:
    # Twice: the second is served by the prepared path, or as a remembered refusal.
    for _ in range(2):
        body = client.post("/graphql", json=payload, headers=viewer.headers).json()
        message = _one_error(body, code)
        assert message.startswith(starts)
        assert message.endswith(ends)


def test_an_unknown_operation_name_over_websocket_is_bad_request(
    client: TestClient, viewer: Caller
) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        query = "subscription A { taskUpdated { change } }"
        for operation_id, name in (("1", "B"), ("2", LONG)):
            payload = {"query": query, "operationName": name}
            ws.send_text(json.dumps({"id": operation_id, "type": "subscribe", "payload": payload}))
            message = json.loads(ws.receive_text())
            assert message["type"] == "error"
            (error,) = message["payload"]
            assert error["extensions"] == {"code": "BAD_REQUEST"}
            assert error["message"].startswith("Unknown operation named")
        assert len(error["message"]) <= MAX_MESSAGE_CHARS + SHORTENED_BY


@pytest.mark.parametrize(
    ("messages", "code", "starts"),
    [
        (
            [{"id": "1", "type": "subscribe", "payload": {"query": STRING_FOR_A_NAME}}],
            4400,
            "Syntax Error",
        ),
        (
            [
                {
                    "id": "A" * MAX_OPERATION_ID_CHARS,
                    "type": "subscribe",
                    "payload": {"query": "subscription { taskUpdated { change } }"},
                }
            ]
            * 2,
            4409,
            "Subscriber for AAA",
        ),
        ([{"id": "1", "type": "é" * 1_000}], 4400, "Unknown message type: éé"),
    ],
    ids=["syntax-error", "duplicate-id", "message-type"],
)
def test_a_long_close_reason_is_cut_to_fit_its_frame(
    settings: Settings, viewer: Caller, messages: list[dict[str, Any]], code: int, starts: str
) -> None:
    with serve_in_thread(create_app(settings)) as base:
        url = base.replace("http", "ws") + "/graphql"
        with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
            assert json.loads(ws.recv(timeout=30))["type"] == "connection_ack"
            for message in messages:
                ws.send(json.dumps(message))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=60)
    close = closed.value.rcvd
    assert close is not None, "the connection ended without a close frame"
    assert close.code == code
    assert close.reason.startswith(starts)
    assert close.reason.endswith("...")
    assert len(close.reason.encode()) <= 123


def _kept_ids() -> tuple[int, int]:
    return (
        relay.global_id.cache_info().currsize,
        relay._uuid.cache_info().currsize,
    )


def test_a_long_id_is_not_remembered(gql: GraphQL, viewer: Caller) -> None:
    # A UUID with a million hyphens (`UUID` drops them) in a well-formed global id: 4,096
    # of these kept would be gigabytes.
    text = "Agent:" + "-" * 1_000_000 + uuid.uuid4().hex
    long_id = base64.b64encode(text.encode()).decode()
    kept = _kept_ids()
    query = "query($id: ID!) { node(id: $id) { id } }"
    for _ in range(2):  # the second on the prepared path
        body = gql(query, {"id": long_id}, caller=viewer)
        assert body["data"] == {"node": None}
        assert "errors" not in body
    assert _kept_ids() == kept


def test_long_header_values_are_not_remembered(client: TestClient, viewer: Caller) -> None:
    from gateway import graphql_view, media

    def kept() -> tuple[int, int]:
        return (
            media._negotiated.cache_info().currsize,
            graphql_view._media_type.cache_info().currsize,
        )

    before = kept()
    for n in range(3):
        padding = "y" * 100_000
        headers = {
            **viewer.headers,
            "accept": f"application/json, x/{n}{padding}",
            "content-type": f"application/json; x={n}{padding}",
        }
        response = client.post("/graphql", content=b'{"query": "{ __typename }"}', headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["data"] == {"__typename": "Query"}
    assert kept() == before
