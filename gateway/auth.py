"""Authentication: every HTTP request's credentials become a `Principal` in `scope["state"]`.

Wiring: in `create_app`, list `Middleware(AuthenticationMiddleware, stores=stores)` right
after `Middleware(RequestLifecycle)`, so that a refusal still carries a request id.

WebSockets pass through untouched: browsers cannot set their headers, so they
sign in with the graphql-transport-ws `connection_init` payload instead.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response, store_condition
from resolvers.auth import ANONYMOUS, Principal
from resolvers.context import Stores
from resolvers.errors import ClientError
from resolvers.rate_limits import SignInRefused, authenticate_counted
from stores import StoreUnavailable

logger = logging.getLogger("polygraph.auth")

PRINCIPAL_STATE_KEY = "principal"

# Orchestrators probe health without credentials.
_EXEMPT_PATH = "/health"
# Checks its own credential, the scrape token (gateway.prometheus), not a user's.
_METRICS_PATH = "/metrics"


class AuthenticationMiddleware:
    """Refuses a request whose credential does not check out with 401 (GraphQL-shaped,
    `WWW-Authenticate: Bearer`, as a resolver's UNAUTHENTICATED is); no credential at
    all is anonymous, left for the resolvers to allow or refuse."""

    def __init__(self, app: ASGIApp, *, stores: Stores) -> None:
        self.app = app
        self.stores = stores

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client = scope.get("client")
        try:
            principal = await authenticate_counted(
                self.stores,
                headers.get("authorization"),
                headers.get("x-api-key"),
                client[0] if client else None,
            )
        except SignInRefused as exc:
            response = error_response(
                exc.code,
                exc.message,
                429,
                accept=headers.get("accept"),
                extensions={"retryAfter": exc.retry_after_s},
            )
            await response(scope, receive, send)
            return
        except ClientError as exc:
            response = error_response(exc.code, exc.message, 401, accept=headers.get("accept"))
            await response(scope, receive, send)
            return
        except StoreUnavailable as exc:
            code, message = store_condition(exc)
            logger.warning("cannot check credentials: %s", exc)
            response = error_response(
                code,
                f"Cannot check credentials now. {message}",
                503,
                accept=headers.get("accept"),
                extensions={"store": exc.store},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        await self.app(scope, receive, send)


def principal_of(scope: Scope) -> Principal:
    """The principal the middleware put in `scope`; anonymous where it did not run."""
    principal: Principal = scope.get("state", {}).get(PRINCIPAL_STATE_KEY, ANONYMOUS)
    return principal


def _exempt(path: str) -> bool:
    return path in (_EXEMPT_PATH, _METRICS_PATH) or path.startswith(_EXEMPT_PATH + "/")
