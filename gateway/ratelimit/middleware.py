"""Charges every request to `paths` its own points (`RateLimitPolicy.request`, and
one per `body_bytes_per_point` bytes of its declared body); on `operation_paths`
together with its GraphQL operation's estimated cost, in one charge.

On `operation_paths` (`/graphql`) the charge is made once, one Redis round trip: by
`RateLimiting` just before the operation executes, with its cost added, or, for a
request that never executes one (malformed, refused by a request limit, remembered
refusals), when it is answered. Nothing runs before its points are taken: a request
is only read and parsed first. A caller whose bucket this process already knows to
lack the request's own points is refused at once, with 429 and `Retry-After`, before
its body is read, and without a round trip (see `stores.redis.rate_limits`), so a
flood refused for its rate costs little; one refused at its answer gets the 429 in
place of the answer. Other paths (`/ingest/metrics`) are charged up front, before
their body is read.

Every response carries the RateLimit headers of the buckets it was charged to.

Wiring: after `AuthenticationMiddleware`, whose principal it charges.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import principal_of
from gateway.errors import error_response
from gateway.ratelimit.usage import STATE_KEY, Usage
from resolvers.context import Stores
from resolvers.errors import ErrorCode
from resolvers.rate_limits import RateLimits


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
        client = scope.get("client")
        address = client[0] if client else None
        principal = principal_of(scope)
        # A body sent without a length (chunked) is bounded by RequestLifecycle's body limit alone.
        declared = Headers(scope=scope).get("content-length", "")
        body_points = limits.body_cost(int(declared) if declared.isdigit() else 0)
        cost = limits.request_cost() + body_points
        usage = Usage()
        scope.setdefault("state", {})[STATE_KEY] = usage
        if scope["path"] in self.operation_paths:
            usage.owed = cost
            usage.body_points = body_points
            known = limits.known_refusal(principal, address, cost)
            if known is not None:
                usage.record(known)
            else:
                await self._charged_when_run(limits, scope, receive, send, usage)
                return
        else:
            usage.record(await limits.charge(principal, address, cost=cost))
        if usage.refused:
            await limits.refusals.wait()
            await _refusal(scope, usage)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, usage)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _charged_when_run(
        self, limits: RateLimits, scope: Scope, receive: Receive, send: Send, usage: Usage
    ) -> None:
        replaced = False

        async def owed_charged() -> None:
            client = scope.get("client")
            usage.record(
                await limits.charge(
                    principal_of(scope), client[0] if client else None, cost=usage.owed
                )
            )

        async def send_charged(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                # A refusal by RateLimiting, once the operation's cost was known, is a
                # RATE_LIMITED error: gateway.errors gives it its 429 and Retry-After.
                if not usage.charged:
                    # No operation ran: the request's own points, now it is answered.
                    await owed_charged()
                    if usage.refused:
                        replaced = True
                        await limits.refusals.wait()
                        await _refusal(scope, usage)(scope, receive, send)
                        return
                _add_headers(message, usage)
            elif replaced:
                return
            await send(message)

        try:
            await self.app(scope, receive, send_charged)
        except Exception:
            if not usage.charged:
                await owed_charged()
            raise
        if not usage.charged:
            await owed_charged()


def _add_headers(message: Message, usage: Usage) -> None:
    headers = message.setdefault("headers", [])
    if not isinstance(headers, list):
        headers = message["headers"] = list(headers)
    # Appended rather than set: only this layer writes these names, so there is nothing
    # to search for and replace on every response.
    headers.extend(usage.raw_headers())


def usage_of(scope: Scope) -> Usage | None:
    """The request's usage, if it came through the middleware (HTTP only)."""
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
