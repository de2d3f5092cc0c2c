"""Plain records the Redis store returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Session:
    """A login. `id` is public (listing, revoking); the token that proves it never is."""

    id: str
    user_id: UUID
    role: str
    agent_id: UUID | None
    created_at: datetime
    # When it lapses unless used again (never past `ends_at`).
    expires_at: datetime
    last_seen_at: datetime
    # The API key that opened it, and that key's scopes; None for sessions made
    # before sessions kept them (their `role` is then their cap).
    api_key_id: UUID | None = None
    scopes: tuple[str, ...] | None = None
    # The absolute end, however much it is used.
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    """An agent's presence now. Offline, only `last_seen_at` may be known."""

    online: bool
    last_seen_at: datetime | None
    activity: str | None = None
    load: float | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """What a report or a sweep changed: `change` is `online`, `offline` or `activity`."""

    agent_id: UUID
    change: str
    at: datetime
    presence: Presence
