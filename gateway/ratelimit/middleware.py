"""Rate limits for HTTP requests: one Redis round trip per request at most.

GraphQL requests (`operation_paths`) are charged once: the request's points and its
operation's cost by the extension (`RateLimiting`) just before it executes, or, if
it never executes (malformed, refused by a request limit, a persisted query not
found, GraphiQL's page), the request's points alone here as the answer starts.
Before anything else, a caller that this process knows to have an empty bucket is
refused with 429 and `Retry-After`, without reading its body or asking Redis (see
`stores.redis.rate_limits`): a flood of refused requests costs little. Other
requests to `paths` (an ingest batch) are charged the request's points before they
run.

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
        self,
        app: ASGIApp,
        *,
        stores: Stores,
        paths: tuple[str, ...] = ("/graphql",),
        operation_paths: tuple[str, ...] = ("/graphql",),
    ) -> None:
        self.app = app
        self.stores = stores
        self.paths = paths
        self.operation_paths = operation_paths

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
        principal = principal_of(scope)
        client = scope.get("client")
        address = client[0] if client else None
        usage = Usage()
        scope.setdefault("state", {})[STATE_KEY] = usage
        if scope["path"] in self.operation_paths:
            outcome = limits.known_refusal(principal, address)
        else:
            outcome = await limits.charge(principal, address, cost=limits.request_cost())
        if outcome is not None:
            usage.record(outcome)
            if not outcome.allowed:
                await limits.refusals.wait()
                await _refusal(scope, usage)(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            # A refusal by the extension, once the operation's cost was known, is a
            # RATE_LIMITED error: gateway.errors gives it its 429 and Retry-After.
            if message["type"] == "http.response.start":
                if not usage.charged:
                    # Answered without executing anything: the request alone, after the fact.
                    cost = limits.request_cost()
                    usage.record(await limits.charge(principal, address, cost=cost))
                headers = MutableHeaders(scope=message)
                for name, value in usage.headers():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def usage_of(scope: Scope) -> Usage | None:
    """The request's usage if the middleware is charging it (HTTP only)."""
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
