"""How many operations one caller may have open over WebSockets, over all its
connections (POLYGRAPH_MAX_SUBSCRIPTIONS_PER_CALLER)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient, WebSocketTestSession

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller

EVENTS = "subscription { healthUpdates(intervalSeconds: 0.1) { status } }"


@contextmanager
def _signed_in(client: TestClient, caller: Caller) -> Iterator[WebSocketTestSession]:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init", "payload": {"apiKey": caller.api_key}}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        yield ws


def _subscribe(ws: WebSocketTestSession, operation_id: str) -> dict[str, Any]:
    """Starts `operation_id`; its first message (other operations' events skipped)."""
    ws.send_text(
        json.dumps({"id": operation_id, "type": "subscribe", "payload": {"query": EVENTS}})
    )
    while True:
        message: dict[str, Any] = json.loads(ws.receive_text())
        if message.get("id") == operation_id:
            return message


def test_a_caller_has_at_most_its_open_operations_over_all_its_connections(
    settings: Settings, make_caller: Callable[[str], Caller]
) -> None:
    viewer, other = make_caller("viewer"), make_caller("viewer")
    capped = settings.model_copy(update={"max_subscriptions_per_caller": 2})
    with TestClient(create_app(capped)) as client:
        with _signed_in(client, viewer) as first, _signed_in(client, viewer) as second:
            assert _subscribe(first, "a")["type"] == "next"
            assert _subscribe(second, "b")["type"] == "next"
            refused = _subscribe(second, "c")
            assert refused["type"] == "error"
            (error,) = refused["payload"]
            assert error["extensions"] == {
                "code": "RATE_LIMITED",
                "limit": "POLYGRAPH_MAX_SUBSCRIPTIONS_PER_CALLER",
                "maximum": 2,
            }
            assert "2 operations open" in error["message"]
            # The refusal leaves the connection open and takes nothing from another caller.
            with _signed_in(client, other) as others:
                assert _subscribe(others, "a")["type"] == "next"
            # One completed, the caller may start another once the gateway has let go.
            first.send_text(json.dumps({"id": "a", "type": "complete"}))
            for attempt in range(1000):
                answer = _subscribe(second, f"d{attempt}")
                if answer["type"] == "next":
                    break
                assert answer["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
            else:
                raise AssertionError("the completed operation was never let go")
        # Connections closed, their operations end and are no longer counted.
        with _signed_in(client, viewer) as again:
            for attempt in range(1000):
                if _subscribe(again, f"e{attempt}")["type"] == "next":
                    break
            else:
                raise AssertionError("closed connections' operations were never let go")
