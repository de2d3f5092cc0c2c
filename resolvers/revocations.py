"""Revocations: news that a sign-in ended or changed, for every gateway replica.

Logging out, revoking a session or an API key, revoking an agent grant, disabling
a user and changing a role each announce a `Revocation`. The announcing process
applies it at once and publishes it on Redis pub/sub, so every replica applies
it within moments:

- cached session checks it covers are dropped (`SessionCache`), so the next
  request checks the stores again and sees the change;
- WebSocket connections signed in with a credential it covers are closed, with
  their subscriptions (clients sign in again, under the new terms if any).

Pub/sub is at most once: a replica that misses the news still stops honouring a
revoked session within its cache's lifetime, because the stores are the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from resolvers.auth import Principal
from stores.redis.events import EventBus, Subscription

logger = logging.getLogger(__name__)

REVOCATIONS_CHANNEL = "auth.revoked"
# Revocations kept for `watch(since=...)`: far more than arrive while one client signs in.
_RECENT = 1024


@dataclass(frozen=True, slots=True)
class Revocation:
    """Which sign-ins it covers: one session, every sign-in with one API key (the
    key itself and the sessions it opened), or a user's (all of them, or only those
    bound to `agent_id`). `reason` is told to the clients whose connection ends."""

    reason: str
    session_id: str | None = None
    api_key_id: UUID | None = None
    user_id: UUID | None = None
    agent_id: UUID | None = None

    def covers(self, principal: Principal) -> bool:
        if self.session_id is not None:
            return principal.session_id == self.session_id
        if self.api_key_id is not None:
            return principal.api_key_id == self.api_key_id
        if self.user_id is not None:
            return principal.user_id == self.user_id and (
                self.agent_id is None or principal.agent_id == self.agent_id
            )
        return False

    def to_event(self) -> dict[str, str | None]:
        return {
            "reason": self.reason,
            "session_id": self.session_id,
            "api_key_id": _text(self.api_key_id),
            "user_id": _text(self.user_id),
            "agent_id": _text(self.agent_id),
        }

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Revocation:
        """Raises ValueError (or TypeError) for a message that is not one."""
        session_id = event.get("session_id")
        if session_id is not None and not isinstance(session_id, str):
            raise TypeError("session_id must be a string")
        return cls(
            reason=str(event.get("reason") or "signed out"),
            session_id=session_id,
            api_key_id=_uuid(event.get("api_key_id")),
            user_id=_uuid(event.get("user_id")),
            agent_id=_uuid(event.get("agent_id")),
        )


Listener = Callable[[Revocation], None]
# Told why, it ends a connection; it must not block (schedule the work).
EndConnection = Callable[[str], None]


class Revocations:
    """Applies revocations in this process and carries them to the others; `start()`
    before use, `aclose()` at shutdown."""

    def __init__(self, events: EventBus | None) -> None:
        self._events = events
        self._listeners: list[Listener] = []
        self._watched: dict[int, tuple[Principal, EndConnection]] = {}
        self._handles = itertools.count()
        # The latest revocations, numbered, for connections that signed in meanwhile.
        self._generation = 0
        self._recent: deque[tuple[int, Revocation]] = deque(maxlen=_RECENT)
        self._exit = AsyncExitStack()
        self._reader: asyncio.Task[None] | None = None
        self.received = 0

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every revocation, local or remote (e.g. a cache's drop)."""
        self._listeners.append(listener)

    @property
    def generation(self) -> int:
        """Moves on with every revocation applied here; see `watch`."""
        return self._generation

    def watch(
        self, principal: Principal, end: EndConnection, *, since: int | None = None
    ) -> Callable[[], None]:
        """Call `end` once a revocation covers `principal`; returns the way to stop
        watching (call it when the connection closes). With `since` (the `generation`
        read before `principal` was checked), a revocation that arrived meanwhile ends
        it at once: signing in cannot race a revocation past the watch."""
        if since is not None:
            for generation, revocation in self._recent:
                if generation > since and revocation.covers(principal):
                    end(revocation.reason)
                    return _nothing
        handle = next(self._handles)
        self._watched[handle] = (principal, end)

        def unwatch() -> None:
            self._watched.pop(handle, None)

        return unwatch

    @property
    def watching(self) -> int:
        """How many connections are watched now (for tests and metrics)."""
        return len(self._watched)

    async def announce(self, revocation: Revocation) -> None:
        """Apply `revocation` here, now, and tell the other replicas (best effort)."""
        self._apply(revocation)
        if self._events is not None:
            await self._events.publish(REVOCATIONS_CHANNEL, revocation.to_event())

    async def start(self) -> None:
        """Listen for other replicas' revocations; returns once subscribed (or the bus's
        subscribe timeout passed while Redis is away: it subscribes when it is back)."""
        if self._events is None or self._reader is not None:
            return
        subscription = await self._exit.enter_async_context(
            self._events.subscribe(REVOCATIONS_CHANNEL)
        )
        self._reader = asyncio.create_task(self._read(subscription), name="polygraph-revocations")

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._exit.aclose()

    async def _read(self, subscription: Subscription) -> None:
        async for event in subscription:
            try:
                revocation = Revocation.from_event(event)
            except (TypeError, ValueError):
                logger.warning("ignored a malformed revocation on %s", REVOCATIONS_CHANNEL)
                continue
            self.received += 1
            self._apply(revocation)

    def _apply(self, revocation: Revocation) -> None:
        self._generation += 1
        self._recent.append((self._generation, revocation))
        for listener in self._listeners:
            listener(revocation)
        ended = [
            (handle, end)
            for handle, (principal, end) in self._watched.items()
            if revocation.covers(principal)
        ]
        for handle, end in ended:
            del self._watched[handle]
            end(revocation.reason)


def _nothing() -> None:
    pass


def _text(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


def _uuid(value: object) -> UUID | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("ids must be strings")
    return UUID(value)


async def announce(revocations: Revocations | None, revocation: Revocation) -> None:
    """`revocations.announce(...)` where the process has them (tests may not)."""
    if revocations is not None:
        await revocations.announce(revocation)
