"""Plain records the Redis store returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
