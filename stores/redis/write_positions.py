"""Each principal's last PostgreSQL write position, so that its reads skip replicas
that have not replayed it yet (stores/postgres/replicas.py).

    pgwrote:<principal>   the primary's WAL position (bytes) after its last write;
                          expires `memory_s` after that write

In Redis, because a client's next request may reach another gateway replica. Kept
in this process's memory too (bounded), for when Redis cannot take the note: a
read that cannot ask Redis goes to the primary instead.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from redis.exceptions import RedisError

from stores import roundtrips
from stores.errors import StoreUnavailable
from stores.redis.store import NAME, RedisStore

KEY_PREFIX = "pgwrote:"
# Principals remembered in memory at most; the oldest note goes first.
MEMORY_ENTRIES = 10_000

# Keeps the greater position: two writes of one principal may note theirs out of order.
_NOTE_MAX = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class WritePositions:
    __slots__ = ("_local", "_memory_ms", "_memory_s", "_redis")

    def __init__(self, redis: RedisStore, *, memory_s: float) -> None:
        if memory_s <= 0:
            raise ValueError("memory_s must be positive")
        self._redis = redis
        self._memory_s = memory_s
        self._memory_ms = max(1, int(memory_s * 1000))
        self._local: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def note(self, principal: str, position: int) -> None:
        """Remember `position` as `principal`'s last write; raises `StoreUnavailable`
        when Redis did not take it (this process still remembers it)."""
        self._remember(principal, position)
        roundtrips.record(NAME)
        try:
            await self._redis.client.eval(
                _NOTE_MAX, 1, KEY_PREFIX + principal, position, self._memory_ms
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(NAME, f"write position not noted: {exc}") from exc

    async def latest(self, principal: str) -> int | None:
        """`principal`'s last write position within the memory window, from any
        gateway; raises `StoreUnavailable` when Redis cannot say."""
        roundtrips.record(NAME)
        try:
            raw = await self._redis.client.get(KEY_PREFIX + principal)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(NAME, f"write position not read: {exc}") from exc
        shared = int(raw) if raw is not None else None
        local = self._recalled(principal)
        if shared is None or local is None:
            return shared if local is None else local
        return max(shared, local)

    def _remember(self, principal: str, position: int) -> None:
        now = time.monotonic()
        known = self._recalled(principal)
        self._local[principal] = (max(position, known or position), now + self._memory_s)
        self._local.move_to_end(principal)
        while len(self._local) > MEMORY_ENTRIES:
            self._local.popitem(last=False)

    def _recalled(self, principal: str) -> int | None:
        entry = self._local.get(principal)
        if entry is None:
            return None
        position, until = entry
        if time.monotonic() > until:
            del self._local[principal]
            return None
        return position
