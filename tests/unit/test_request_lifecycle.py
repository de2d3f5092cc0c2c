"""An unexpected error is answered by `RequestLifecycle` (Starlette's plain-text error
layer is left out): GraphQL-shaped, quoting the request id, logged with its traceback."""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.middleware import RequestLifecycle
from gateway.shutdown import InFlight


class Broken(RuntimeError):
    pass


async def _answer(app_: RequestLifecycle, accept: str) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"accept", accept.encode()), (b"content-length", b"2")],
    }
    await app_(scope, receive, send)
    return sent


def _lifecycle(app: object) -> RequestLifecycle:
    return RequestLifecycle(
        app,  # type: ignore[arg-type]
        in_flight=InFlight(),
        max_body_bytes=1024,
        body_limited_paths=["/graphql"],
    )


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
async def test_an_unexpected_error_is_a_graphql_shaped_500_quoting_the_request_id(
    accept: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise Broken("a bug")

    with caplog.at_level(logging.ERROR, logger="polygraph.requests"):
        start, body = await _answer(_lifecycle(failing), accept)

    assert start["status"] == 500
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["content-type"] == accept
    assert headers["x-round-trips"] == "neo4j=0, postgres=0, redis=0"
    request_id = headers["x-request-id"]
    payload = orjson.loads(body["body"])
    assert "data" not in payload
    [error] = payload["errors"]
    assert error["extensions"] == {"code": "INTERNAL", "requestId": request_id}
    assert request_id in error["message"]
    assert "a bug" not in error["message"]
    [record] = [r for r in caplog.records if r.name == "polygraph.requests"]
    assert request_id in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], Broken)


async def test_an_error_after_the_answer_began_reaches_the_server() -> None:
    """Half a response is sent: only closing the connection tells the client."""

    async def failing_midway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise Broken("midway")

    with pytest.raises(Broken):
        await _answer(_lifecycle(failing_midway), "application/json")


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [(b"abc-123", True), (b"caf\xe9-1", False), (b"\xe9\xe8", False), (b"a b", False)],
)
async def test_a_request_id_is_echoed_only_when_it_is_ascii_letters_digits_and_hyphens(
    sent: bytes, echoed: bool
) -> None:
    """Raw header bytes, as a socket delivers them (HTTP clients in tests re-encode)."""

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-request-id", sent)],
    }
    await _lifecycle(ok)(scope, receive, send)
    headers = dict(messages[0]["headers"])
    if echoed:
        assert headers[b"x-request-id"] == sent
    else:
        assert headers[b"x-request-id"] != sent
        assert len(headers[b"x-request-id"]) == 16
