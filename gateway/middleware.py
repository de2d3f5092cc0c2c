"""Pure ASGI middleware; each passes scope types it does not handle straight through."""

from __future__ import annotations

import random
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import logs
from stores import roundtrips


class RequestObserver:
    """What every request gets, in one ASGI layer (one frame and one `send` wrapper
    rather than three on the hot path):

    - an id (the client's, if it sent a sane one), echoed in `X-Request-Id`;
    - the request's log fields, and one access line once it is answered
      (gateway.logs);
    - its store round trips, counted and reported in `X-Round-Trips` (e.g.
      `neo4j=1, postgres=2, redis=1`): tests assert on it, benchmarks record it;
    - a client that leaves before its body has arrived logged as 499 (the status
      proxies give it) rather than as a 500 with a traceback: nobody is left to
      answer, and no client can fill the log with errors by hanging up.

    WebSockets get the id and the log fields; only HTTP requests are counted and logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                request_id = _incoming_id(scope) or _new_id()
                scope.setdefault("state", {})["request_id"] = request_id
                with logs.request_fields(scope, request_id):
                    await self.app(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or _new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        encoded_id = request_id.encode("latin-1")
        started = time.perf_counter()
        status = 500

        with logs.request_fields(scope, request_id), roundtrips.counting() as counter:

            async def observed_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    counts = dict.fromkeys(ALWAYS_REPORTED, 0) | counter
                    headers = message.setdefault("headers", [])
                    if not isinstance(headers, list):
                        headers = message["headers"] = list(headers)
                    # Ours: whatever the app set under these names is replaced.
                    headers[:] = [
                        (name, value) for name, value in headers if name.lower() not in _OWN_HEADERS
                    ]
                    headers.append(
                        (
                            _ROUND_TRIPS_HEADER,
                            ", ".join(
                                f"{store}={count}" for store, count in sorted(counts.items())
                            ).encode(),
                        )
                    )
                    headers.append((_REQUEST_ID_HEADER, encoded_id))
                await send(message)

            try:
                await self.app(scope, receive, observed_send)
            except ClientDisconnect:
                status = CLIENT_CLOSED_REQUEST
            finally:
                logs.log_access(scope, status, started)


def _new_id() -> str:
    # An id to tell requests apart in logs, not a secret: the module's generator
    # (reseeded in each forked worker) spares a system call per request.
    return f"{random.getrandbits(64):016x}"


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == _REQUEST_ID_HEADER:
            candidate: str = value.decode("latin-1")
            if 0 < len(candidate) <= 64 and candidate.replace("-", "").isalnum():
                return candidate
    return None


REQUEST_ID_HEADER = "x-request-id"
CLIENT_CLOSED_REQUEST = 499
ROUND_TRIPS_HEADER = "x-round-trips"
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()
_ROUND_TRIPS_HEADER = ROUND_TRIPS_HEADER.encode()
_OWN_HEADERS = frozenset((_REQUEST_ID_HEADER, _ROUND_TRIPS_HEADER))
# Named even at zero, so the header is never empty and reads the same on every response.
ALWAYS_REPORTED = ("neo4j", "postgres", "redis")
