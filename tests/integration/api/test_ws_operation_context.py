"""Operations on one WebSocket each get a context of their own: one operation's
estimated cost (which its rate limit charge reads), loaders and outbox are never
another's, while the principal the connection signed in with is shared."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

from gateway.graphql_view import PerOperationContext
from resolvers.auth import ANONYMOUS
from resolvers.context import RequestContext
from resolvers.cost import OperationCost
from resolvers.loaders import build_loaders
from tests.integration.api.conftest import Caller


class _Recording:
    """A schema that records the context each operation streams with."""

    def __init__(self) -> None:
        self.contexts: list[Any] = []
        self.name = "recording"

    async def stream(self, query: str | None, **kwargs: Any) -> str:
        self.contexts.append(kwargs["context_value"])
        return query or ""


async def test_each_operation_streams_with_a_context_of_its_own(client: TestClient) -> None:
    stores = client.app.state.stores  # type: ignore[attr-defined]
    connection = HTTPConnection({"type": "websocket", "path": "/graphql", "headers": []})
    shared = RequestContext(
        stores=stores,
        connection=connection,
        request_id="ws",
        principal=ANONYMOUS,
        loaders=build_loaders(stores),
        connection_params={"apiKey": "k"},
    )
    recording = _Recording()
    schema = PerOperationContext(recording)
    assert schema.name == "recording"
    await schema.stream("subscription A", context_value=shared)
    first = recording.contexts[0]
    # The first operation's estimate, as RequestLimiter sets it...
    first.cost = OperationCost(500)
    first.outbox_ids.append(7)
    await schema.stream("subscription B", context_value=shared)
    second = recording.contexts[1]
    # ...is not the second's, nor the connection's.
    assert first is not second and first is not shared
    assert second.cost is None and shared.cost is None
    assert second.outbox_ids == [] and shared.outbox_ids == []
    assert second.loaders is not first.loaders
    assert second.principal is shared.principal
    assert second.connection is connection
    assert second.connection_params == {"apiKey": "k"}


def test_operations_on_one_socket_still_run_and_are_charged(
    client: TestClient, viewer: Caller
) -> None:
    subscribe = "subscription { healthUpdates(intervalSeconds: 1) { status } }"
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        for operation_id in ("1", "2"):
            ws.send_text(
                json.dumps(
                    {"id": operation_id, "type": "subscribe", "payload": {"query": subscribe}}
                )
            )
        seen: set[str] = set()
        while seen != {"1", "2"}:
            message = json.loads(ws.receive_text())
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            seen.add(message["id"])
