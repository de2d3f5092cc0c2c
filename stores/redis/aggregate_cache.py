"""The shared level of the metric-aggregate cache.

    cache:{e}:m:<key>          a series and its agent's generation when it was read
    cache:{e}:mgen:<agent>     incremented when a late point for the agent is recorded

An entry is current while its generation equals its agent's: a lookup reads both in
one MGET (same hash tag as the other cache keys).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import cast
from uuid import UUID

from redis.exceptions import RedisError

from stores import roundtrips
from stores.errors import StoreUnavailable
from stores.redis.entity_cache import KEY_PREFIX, delete_matching
from stores.redis.store import RedisStore


def _entry_key(key: str) -> str:
    return f"{KEY_PREFIX}m:{key}"


def _generation_key(agent_id: UUID) -> str:
    return f"{KEY_PREFIX}mgen:{agent_id}"


class SharedAggregateCache:
    """Encoded series by key; an unreachable Redis raises `StoreUnavailable`."""

    __slots__ = ("_redis",)

    def __init__(self, redis: RedisStore) -> None:
        self._redis = redis

    async def get_many(
        self, keys: Sequence[str], agent_ids: Sequence[UUID]
    ) -> tuple[list[bytes | None], dict[UUID, int]]:
        """The entries under `keys` (None where absent) and each agent's generation."""
        roundtrips.record("redis")
        try:
            raw = await self._redis.client.mget(
                [*(_entry_key(k) for k in keys), *(_generation_key(a) for a in agent_ids)]
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        entries = [cast(bytes, value) if value else None for value in raw[: len(keys)]]
        generations = {
            agent_id: int(value or 0)
            for agent_id, value in zip(agent_ids, raw[len(keys) :], strict=True)
        }
        return entries, generations

    async def put_many(self, encoded: Mapping[str, bytes], ttl_s: float) -> None:
        if not encoded:
            return
        roundtrips.record("redis")
        try:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for key, value in encoded.items():
                    pipe.set(_entry_key(key), value, px=int(ttl_s * 1000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def bump(self, agent_ids: Collection[UUID]) -> None:
        if not agent_ids:
            return
        roundtrips.record("redis")
        try:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for agent_id in agent_ids:
                    pipe.incr(_generation_key(agent_id))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def drop_all(self) -> None:
        """Every entry deleted; the generations stay."""
        roundtrips.record("redis")
        try:
            await delete_matching(self._redis, _entry_key("*"))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
