"""Bodies larger than the limit are refused with 413 before the app reads them."""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.limits.refusal import TooComplex


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """At once from `Content-Length`; for a body sent without one (chunked), as soon as
    what arrived passes the limit. Only `paths` (bulk ingestion sets its own bounds)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: Collection[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = self._refusal(int(declared), over=False).response(
                413, accept=headers.get("accept")
            )
            await response(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if started:
                raise
            refusal = self._refusal(received, over=True)
            await refusal.response(413, accept=headers.get("accept"))(scope, receive, send)

    def _refusal(self, size: int, *, over: bool) -> TooComplex:
        return TooComplex(
            f"The request body is {'over ' if over else ''}{size:,} bytes",
            size,
            self.max_bytes,
            "POLYGRAPH_MAX_BODY_BYTES",
        )
