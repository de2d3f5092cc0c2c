"""Pure ASGI middleware; each passes scope types it does not handle straight through."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import logs
from gateway.errors import error_response
from gateway.limits.body import BodyTooLarge, body_refusal
from gateway.shutdown import InFlight, send_shutting_down
from resolvers.errors import ErrorCode
from stores import roundtrips

logger = logging.getLogger("polygraph.requests")


class RequestLifecycle:
    """What every request gets from arrival to answer, in one ASGI layer: one frame and
    one `send` wrapper on the hot path, where four layers each wrapped `send` before.

    - Registered with `InFlight`, so that shutdown can drain it; a request shutdown cuts
      short answers 503 `SHUTTING_DOWN` (gateway.shutdown).
    - An id (the client's, if it sent a sane one), echoed in `X-Request-Id`.
    - The request's log fields, and one access line once it is answered (gateway.logs).
    - Its store round trips, counted and reported in `X-Round-Trips` (e.g.
      `neo4j=1, postgres=2, redis=1`): tests assert on it, benchmarks record it.
    - On `body_limited_paths`, a body over `max_body_bytes` refused with 413: at once
      from `Content-Length`, or, for a body sent without one (chunked), as soon as what
      arrived passes the limit. Before authentication, so it costs no credential lookup.
    - A client that leaves before its body has arrived logged as 499 (the status
      proxies give it) rather than as a 500 with a traceback: nobody is left to answer,
      and no client can fill the log with errors by hanging up.
    - An unexpected exception answered as a GraphQL-shaped 500 `INTERNAL` quoting the
      request id, and logged with its traceback (before Starlette's outermost layer
      would answer it in plain text).

    WebSockets are registered and get the id and the log fields; only HTTP requests are
    counted and logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        in_flight: InFlight,
        max_body_bytes: int,
        body_limited_paths: Collection[str],
    ) -> None:
        self.app = app
        self.in_flight = in_flight
        self.max_body_bytes = max_body_bytes
        self.body_limited_paths = frozenset(body_limited_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _incoming_id(scope) or _new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        task = _current_task()
        in_flight = self.in_flight
        with logs.request_fields(scope, request_id):
            in_flight.track(task)
            try:
                await self.app(scope, receive, send)
            except asyncio.CancelledError:
                if not in_flight.was_cut(task):
                    raise
                # Cancelled by `drain`, not by the server: the socket ends here, cleanly.
                task.uncancel()
            finally:
                in_flight.untrack(task)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _incoming_id(scope) or _new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        encoded_id = request_id.encode("latin-1")
        arrived = time.perf_counter()
        status = 500
        started = completed = False

        with logs.request_fields(scope, request_id), roundtrips.counting() as counter:

            async def observed_send(message: Message) -> None:
                nonlocal status, started, completed
                if message["type"] == "http.response.start":
                    started = True
                    status = message["status"]
                    headers = message.setdefault("headers", [])
                    if not isinstance(headers, list):
                        headers = message["headers"] = list(headers)
                    # Ours: whatever the app set under these names is replaced.
                    headers[:] = [
                        (name, value) for name, value in headers if name.lower() not in _OWN_HEADERS
                    ]
                    headers.append((_ROUND_TRIPS_HEADER, _round_trips_value(counter)))
                    headers.append((_REQUEST_ID_HEADER, encoded_id))
                else:
                    completed = not message.get("more_body", False)
                await send(message)

            task = _current_task()
            in_flight = self.in_flight
            in_flight.track(task)
            try:
                if scope["path"] in self.body_limited_paths:
                    await self._limited(scope, receive, observed_send)
                else:
                    await self.app(scope, receive, observed_send)
            except ClientDisconnect:
                status = CLIENT_CLOSED_REQUEST
            except BodyTooLarge as exc:
                if started:
                    raise
                refusal = body_refusal(exc.received, self.max_body_bytes, over=True)
                accept = Headers(scope=scope).get("accept")
                await refusal.response(413, accept=accept)(scope, receive, observed_send)
            except asyncio.CancelledError:
                if not in_flight.was_cut(task):
                    raise
                # Cancelled by `drain`, not by the server: the request ends here, cleanly.
                task.uncancel()
                if not started:
                    await send_shutting_down(scope, observed_send)
                elif not completed:
                    # A streamed response (incremental delivery) ends where it was.
                    await observed_send(
                        {"type": "http.response.body", "body": b"", "more_body": False}
                    )
            except Exception as exc:
                if started:
                    # Half an answer is sent: the server closes the connection.
                    raise
                logger.error(
                    "unexpected error answering %s %s (request %s)",
                    scope["method"],
                    scope["path"],
                    request_id,
                    exc_info=exc,
                )
                response = error_response(
                    ErrorCode.INTERNAL,
                    f"Internal error. Quote request id {request_id} when reporting it.",
                    500,
                    accept=Headers(scope=scope).get("accept"),
                    extensions={"requestId": request_id},
                )
                await response(scope, receive, observed_send)
            finally:
                in_flight.untrack(task)
                logs.log_access(scope, status, arrived)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        max_bytes = self.max_body_bytes
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit():
            if int(declared) > max_bytes:
                refusal = body_refusal(int(declared), max_bytes, over=False)
                await refusal.response(413, accept=headers.get("accept"))(scope, receive, send)
            else:
                # A declared length within the limit is all the server passes on.
                await self.app(scope, receive, send)
            return
        # A body sent without a length (chunked) is counted as it arrives.
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(received)
            return message

        await self.app(scope, counted_receive, send)


def _round_trips_value(counter: dict[str, int]) -> bytes:
    if counter.keys() <= _ALWAYS_REPORTED_SET:
        # The usual case, formatted without sorting or joining.
        get = counter.get
        return _THREE_STORES % (get("neo4j", 0), get("postgres", 0), get("redis", 0))
    counts = dict.fromkeys(ALWAYS_REPORTED, 0) | counter
    return ", ".join(f"{store}={count}" for store, count in sorted(counts.items())).encode()


def _current_task() -> asyncio.Task[object]:
    task = asyncio.current_task()
    # ASGI servers run each request in a task of its own.
    assert task is not None
    return task


def _new_id() -> str:
    # An id to tell requests apart in logs, not a secret: the module's generator
    # (reseeded in each forked worker) spares a system call per request.
    return f"{random.getrandbits(64):016x}"


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == _REQUEST_ID_HEADER:
            candidate: str = value.decode("latin-1")
            # ASCII only: `isalnum` alone takes Latin-1 letters, which log aggregators
            # and tracing headers then spell differently.
            if (
                0 < len(candidate) <= 64
                and candidate.isascii()
                and candidate.replace("-", "").isalnum()
            ):
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
_ALWAYS_REPORTED_SET = frozenset(ALWAYS_REPORTED)
_THREE_STORES = b"neo4j=%d, postgres=%d, redis=%d"
