"""A request cut short by shutdown answers 503 SHUTTING_DOWN like every other refusal:
the Retry-After `gateway.errors` gives the code, in the media type the client accepts."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import RETRY_AFTER_S
from gateway.middleware import RequestLifecycle
from gateway.shutdown import InFlight
from resolvers.errors import ErrorCode


async def _cut_short(accept: str | None) -> list[Message]:
    started = asyncio.Event()

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.Event().wait()

    in_flight = InFlight()
    app = RequestLifecycle(
        stuck, in_flight=in_flight, max_body_bytes=1024, body_limited_paths=["/graphql"]
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [(b"accept", accept.encode())] if accept else []
    scope: Scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": headers}
    request = asyncio.create_task(app(scope, receive, send))
    await started.wait()
    await in_flight.drain(0)
    await request
    return sent


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/graphql-response+json"),
        ("application/graphql-response+json", "application/graphql-response+json"),
        ("application/json", "application/json"),
    ],
)
async def test_a_request_cut_short_says_when_to_come_back(
    accept: str | None, media_type: str
) -> None:
    start, body = await _cut_short(accept)
    assert start["status"] == 503
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["content-type"] == media_type
    assert headers["retry-after"] == str(RETRY_AFTER_S[ErrorCode.SHUTTING_DOWN])
    assert int(headers["retry-after"]) >= 1
    payload = orjson.loads(body["body"])
    assert "data" not in payload
    assert payload["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN"
