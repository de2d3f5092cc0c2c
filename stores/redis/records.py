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
    expires_at: datetime
    last_seen_at: datetime
