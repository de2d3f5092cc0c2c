"""Charges every request to `paths` its own points (`RateLimitPolicy.request`, and
one per `body_bytes_per_point` bytes of its declared body) before anything else
happens; `RateLimiting` charges a GraphQL operation's estimated cost once it is
known, before it executes.

A caller whose bucket lacks them is refused here, with 429 and `Retry-After`, before
its body is read or parsed: a flood of requests refused for their rate costs little
(once this process knows a bucket is empty, not even a Redis round trip: see
`stores.redis.rate_limits`), and one of malformed or over-complex requests is
charged before any of them is parsed.

Every response carries the RateLimit headers of the buckets it was charged to.

Wiring: after `AuthenticationMiddleware`, whose principal it charges.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import principal_of
from gateway.errors import error_response
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
        # A body sent without a length (chunked) is bounded by BodyLimitMiddleware alone.
        declared = Headers(scope=scope).get("content-length", "")
        size = int(declared) if declared.isdigit() else 0
        cost = limits.request_cost() + limits.body_cost(size)
        outcome = await limits.charge(principal_of(scope), client[0] if client else None, cost=cost)
        usage = Usage()
        usage.prepaid = cost
        usage.record(outcome)
        scope.setdefault("state", {})[STATE_KEY] = usage
        if not outcome.allowed:
            await limits.refusals.wait()
            await _refusal(scope, usage)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            # A refusal by the extension, once the operation's cost was known, is a
            # RATE_LIMITED error: gateway.errors gives it its 429 and Retry-After.
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in usage.headers():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def usage_of(scope: Scope) -> Usage | None:
    """The request's usage if the middleware charged it (HTTP only)."""
    usage = scope.get("state", {}).get(STATE_KEY)
    return usage if isinstance(usage, Usage) else None


def _refusal(scope: Scope, usage: Usage) -> Response:
    return error_response(
        ErrorCode.RATE_LIMITED,
        usage.message,
        429,
        accept=Headers(scope=scope).get("accept"),
        headers=dict(usage.headers()),
        extensions={"retryAfter": usage.retry_after_s},
    )
