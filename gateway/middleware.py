"""Pure ASGI middleware; each passes scope types it does not handle straight through."""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stores import roundtrips

REQUEST_ID_HEADER = "x-request-id"


class RequestIdMiddleware:
    """Gives every request an id (the client's, if it sent a sane one) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if 0 < len(candidate) <= 64 and candidate.replace("-", "").isalnum():
                return candidate
    return None


ROUND_TRIPS_HEADER = "x-round-trips"
# Named even at zero, so the header is never empty and reads the same on every response.
ALWAYS_REPORTED = ("neo4j", "postgres", "redis")


class RoundTripsMiddleware:
    """Counts store round trips per request and reports them in `X-Round-Trips`
    (e.g. `neo4j=1, postgres=2, redis=1`): tests assert on it, benchmarks record it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with roundtrips.counting() as counter:

            async def send_with_count(message: Message) -> None:
                if message["type"] == "http.response.start":
                    counts = dict.fromkeys(ALWAYS_REPORTED, 0) | counter
                    MutableHeaders(scope=message)[ROUND_TRIPS_HEADER] = ", ".join(
                        f"{store}={count}" for store, count in sorted(counts.items())
                    )
                await send(message)

            await self.app(scope, receive, send_with_count)
