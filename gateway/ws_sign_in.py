"""WebSocket connections end with the sign-in they were opened with.

A connection signs in once, at `connection_init`, and may then live for hours. So
that logging out, revoking a session or key, disabling a user or changing a role
reaches it, each signed-in connection is watched (`Revocations.watch`): when a
revocation covers its principal, on this replica or another, its operations are
cancelled and the socket is closed with 4403 and the reason. A connection also
ends when its credential does (a session's absolute end, a key's expiry).

Wiring: `GraphQLView`'s graphql-transport-ws handler derives from this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage

from resolvers.context import RequestContext

logger = logging.getLogger(__name__)

# graphql-transport-ws leaves 4000-4999 to applications; clients reconnect after it,
# and sign in again (with the same credential, refused if revoked; or a new role).
SIGNED_OUT_CLOSE_CODE = 4403
# A close frame's reason is at most 123 bytes.
_MAX_REASON = 120


class _Watch:
    """One connection's watch: ends it (through `end`) on revocation or expiry."""

    __slots__ = ("_ending", "_expiry", "_unwatch")

    def __init__(self) -> None:
        self._unwatch: Callable[[], None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._ending: asyncio.Task[None] | None = None

    @staticmethod
    def generation(context: Any) -> int | None:
        """Read before signing in, for `start(since=...)`."""
        if isinstance(context, RequestContext) and context.stores.revocations is not None:
            return context.stores.revocations.generation
        return None

    def start(self, context: Any, end: Callable[[str], Any], *, since: int | None) -> None:
        if not isinstance(context, RequestContext) or not context.principal.authenticated:
            return
        revocations = context.stores.revocations

        def ended(reason: str) -> None:
            if self._ending is None:
                self._ending = asyncio.create_task(end(f"Signed out: {reason}"[:_MAX_REASON]))

        if revocations is not None:
            self._unwatch = revocations.watch(context.principal, ended, since=since)
        ends_at = context.principal.ends_at
        if ends_at is not None:
            delay = (ends_at - datetime.now(UTC)).total_seconds()
            self._expiry = asyncio.get_running_loop().call_later(
                max(delay, 0.0), ended, "the credential's lifetime is over"
            )

    def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None


class SignedInTransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    """graphql-transport-ws, ending with its sign-in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = _Watch()

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        since = self._watch.generation(self.context)
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self._watch.start(self.context, self._end, since=since)

    async def shutdown(self) -> None:
        self._watch.stop()
        await super().shutdown()

    async def _end(self, reason: str) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        # Already closed by the client: nothing left to end.
        with contextlib.suppress(Exception):
            await self.websocket.close(code=SIGNED_OUT_CLOSE_CODE, reason=reason)
