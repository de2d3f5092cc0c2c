"""Charges every GraphQL HTTP request one point before anything else happens (and
every other request to `paths`: an ingest batch costs one point).

A caller whose bucket is empty is refused here, with 429 and `Retry-After`, before
its body is read or parsed: a flood of refused requests costs little (and, once a
bucket is known to be empty, no Redis round trip: see `stores.redis.rate_limits`).
The extension (`RateLimiting`) charges the rest of an operation's cost once it is
known. Every response carries the RateLimit headers of the buckets it was charged to.

Wiring: after `AuthenticationMiddleware`, whose principal it charges.
"""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import principal_of
from gateway.graphql_view import negotiate_media_type
from gateway.ratelimit.usage import STATE_KEY, Usage
from resolvers.context import Stores
from resolvers.errors import ErrorCode


class RateLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, stores: Stores, paths: tuple[str, ...] = ("/graphql",)
    ) -> None:
        self.app = app
        self.stores = stores
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits = self.stores.rate_limits
        if (
            scope["type"] != "http"
            or scope["path"] not in self.paths
            or limits is None
            or not limits.enabled
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        outcome = await limits.charge(principal_of(scope), client[0] if client else None, cost=1)
        usage = Usage()
        usage.record(outcome)
        scope.setdefault("state", {})[STATE_KEY] = usage
        if not outcome.allowed:
            await limits.refusals.wait()
            await _refusal(scope, usage)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in usage.headers():
                    headers[name] = value
                if usage.refused:
                    # Refused by the extension once the operation's cost was known.
                    message["status"] = 429
            await send(message)

        await self.app(scope, receive, send_with_headers)


def usage_of(scope: Scope) -> Usage | None:
    """The request's usage if the middleware charged it (HTTP only)."""
    usage = scope.get("state", {}).get(STATE_KEY)
    return usage if isinstance(usage, Usage) else None


def _refusal(scope: Scope, usage: Usage) -> Response:
    extensions = {"code": ErrorCode.RATE_LIMITED.value, "retryAfter": usage.retry_after_s}
    body = {"errors": [{"message": usage.message, "extensions": extensions}]}
    media_type = negotiate_media_type(Headers(scope=scope).get("accept"))
    return Response(orjson.dumps(body), 429, dict(usage.headers()), media_type=media_type)
