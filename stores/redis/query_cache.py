"""The shared level of the query-result cache, and the generations it is checked against.

    cache:{e}:q:<key>        a result and the generations it was computed at
    cache:{e}:gen:<kind>     a counter every replica increments on each change notice
                             of `kind` (after writing that change's tombstones)

Same hash tag as the entity cache's keys: a lookup reads an entry and the current
generations of every kind in one MGET, on a Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.exceptions import RedisError

from stores import roundtrips
from stores.errors import StoreUnavailable
from stores.redis.entity_cache import KEY_PREFIX, generation_key
from stores.redis.store import RedisStore


def _entry_key(key: str) -> str:
    return f"{KEY_PREFIX}q:{key}"


class SharedQueryCache:
    """Encoded entries by key; an unreachable Redis raises `StoreUnavailable`."""

    __slots__ = ("_redis",)

    def __init__(self, redis: RedisStore) -> None:
        self._redis = redis

    async def get(self, key: str, kinds: Sequence[str]) -> tuple[bytes | None, dict[str, int]]:
        """The entry under `key` (None: none), and the generation of each of `kinds`."""
        roundtrips.record("redis")
        try:
            raw = await self._redis.client.mget(
                [_entry_key(key), *(generation_key(kind) for kind in kinds)]
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        entry, *generations = raw
        return (
            cast(bytes, entry) if entry else None,
            {kind: int(value or 0) for kind, value in zip(kinds, generations, strict=True)},
        )

    async def put(self, key: str, encoded: bytes, ttl_s: float) -> None:
        roundtrips.record("redis")
        try:
            await self._redis.client.set(_entry_key(key), encoded, px=int(ttl_s * 1000))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
