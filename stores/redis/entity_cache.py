"""The shared level of the entity cache: encoded records in Redis, for every replica.

    cache:{e}:<kind>:<id>   an encoded record, or "" (a tombstone: changed just now)
    cache:{e}:gen:<kind>    incremented by every replica on each notice of `kind`

Every key shares the hash tag `{e}`, so one MGET or pipeline serves a page of ids
on a Redis Cluster too. A fill never overwrites (`SET NX`): a tombstone written on a
change keeps out, for its lifetime, a fill by a read that began before the change.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import cast
from uuid import UUID

from redis.exceptions import RedisError

from stores import roundtrips
from stores.errors import StoreUnavailable
from stores.redis.store import RedisStore

KEY_PREFIX = "cache:{e}:"
TOMBSTONE = b""


def generation_key(kind: str) -> str:
    """The count of `kind`'s change notices (stores.redis.query_cache reads it)."""
    return f"{KEY_PREFIX}gen:{kind}"


def _key(kind: str, entity_id: UUID) -> str:
    return f"{KEY_PREFIX}{kind}:{entity_id}"


class SharedEntityCache:
    """Encoded records by kind and id; an unreachable Redis raises `StoreUnavailable`."""

    __slots__ = ("_redis",)

    def __init__(self, redis: RedisStore) -> None:
        self._redis = redis

    async def get_many(self, kind: str, ids: Collection[UUID]) -> dict[UUID, bytes]:
        """The live entries among `ids` (tombstones and absent keys left out)."""
        ordered = list(ids)
        roundtrips.record("redis")
        try:
            raw = await self._redis.client.mget([_key(kind, i) for i in ordered])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        # Responses stay bytes (the clients never decode them).
        return {i: cast(bytes, value) for i, value in zip(ordered, raw, strict=True) if value}

    async def put_many(
        self, kind: str, encoded: Mapping[UUID, bytes], ttl_s: Mapping[UUID, float]
    ) -> None:
        if not encoded:
            return
        roundtrips.record("redis")
        try:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for entity_id, value in encoded.items():
                    pipe.set(_key(kind, entity_id), value, px=int(ttl_s[entity_id] * 1000), nx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def tombstone(self, kind: str, ids: Collection[UUID], ttl_s: float) -> None:
        """Tombstones for `ids` (none: only the generation), then `kind`'s generation
        incremented: a reader that sees the new generation finds the tombstones."""
        try:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for entity_id in ids:
                    pipe.set(_key(kind, entity_id), TOMBSTONE, px=int(ttl_s * 1000))
                pipe.incr(generation_key(kind))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def drop_kind(self, kind: str) -> None:
        """Every entry of `kind` (after a TRUNCATE, or changes Redis missed) deleted."""
        try:
            await delete_matching(self._redis, f"{KEY_PREFIX}{kind}:*")
            await self._redis.client.incr(generation_key(kind))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc


async def delete_matching(redis: RedisStore, pattern: str) -> None:
    """Every key matching `pattern`: scanned, then deleted in batches (no KEYS, which
    would hold Redis for the whole keyspace)."""
    client = redis.client
    batch: list[str] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key.decode() if isinstance(key, bytes) else str(key))
        if len(batch) >= 1000:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)
