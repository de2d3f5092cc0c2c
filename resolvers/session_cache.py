"""Recently checked session tokens, so a busy client's requests skip the session lookup.

Checking a Bearer token costs a Redis script (resolve and slide the session) and a
PostgreSQL query (its standing: role, key, grant). A client sending many requests
gets the same answer each time, so the principal is kept here for `ttl` seconds
(never past the session's expiry) and requests within that window cost no round
trip at all.

Staleness is bounded twice: every revocation (logout, session, key or grant
revoked, user disabled, role changed) drops the entries it covers at once, in
every replica, through `Revocations`; and an entry lives `ttl` seconds at most,
which bounds what a replica that missed the news may honour. Sliding expiry only
moves when the cache misses, at most every `ttl` seconds, which is far below any
session's TTL.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

from resolvers.auth import Principal
from resolvers.revocations import Revocation
from stores.cache.lru import Lru

DEFAULT_CAPACITY = 10_000


class SessionCache:
    """Principals by session token (kept as a SHA-256, never in clear), for `ttl_s`
    seconds; the least recently used go first beyond `capacity`."""

    __slots__ = ("_entries", "_generation", "_ttl_s", "hits", "misses")

    def __init__(self, ttl_s: float, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive; leave the cache out to disable it")
        self._ttl_s = ttl_s
        self._entries: Lru[bytes, tuple[Principal, float]] = Lru(capacity)
        self._generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Principal | None:
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            if entry is not None:
                self._entries.pop(key)
            self.misses += 1
            return None
        self.hits += 1
        return entry[0]

    @property
    def generation(self) -> int:
        """Moves on with every revocation: read it before checking a token, and pass it
        to `put`, so a check that raced a revocation is not kept."""
        return self._generation

    def put(
        self, token: str, principal: Principal, *, expires_at: datetime, generation: int
    ) -> None:
        """Keep `principal` for `token` until the TTL passes or the session expires,
        unless a revocation arrived since `generation` was read (it may cover it)."""
        if generation != self._generation:
            return
        lapses_in = (expires_at - datetime.now(UTC)).total_seconds()
        keep_s = min(self._ttl_s, lapses_in)
        if keep_s <= 0:
            return
        self._entries.put(_key(token), (principal, time.monotonic() + keep_s))

    def drop_covered(self, revocation: Revocation) -> None:
        """A `Revocations` listener: forget every principal `revocation` covers."""
        self._generation += 1
        covered = [key for key, (p, _) in self._entries.items() if revocation.covers(p)]
        for key in covered:
            self._entries.pop(key)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
