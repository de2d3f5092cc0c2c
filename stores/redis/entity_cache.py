"""The shared level of the entity cache: encoded records in Redis, for every replica.

    cache:{e}:<kind>:<id>   an encoded record, or "" (a tombstone: changed just now)
    cache:{e}:gen:<kind>    incremented by every replica on each notice of `kind`
    cache:{e}:followers     replica -> when it last said it follows every change
                            (Redis server time, ms): see `EntityCache.start`

Every key shares the hash tag `{e}`, so one MGET or pipeline serves a page of ids
on a Redis Cluster too. A fill never overwrites (`SET NX`): a tombstone written on a
change keeps out, for its lifetime, a fill by a read that began before the change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, cast
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


FOLLOWERS_KEY = f"{KEY_PREFIX}followers"

# Redis's own clock, so that replicas' clocks never have to agree.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS[1] followers; ARGV[1] replica, ARGV[2] how long a mark lasts (ms) -> now.
_FOLLOWING_SCRIPT = (
    _NOW_MS
    + """
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now
"""
)
# KEYS[1] followers; ARGV[1] the asking replica, ARGV[2] how long a mark lasts (ms)
# -> {now, the newest mark of another replica or -1}; marks past their time go.
_OTHERS_SCRIPT = (
    _NOW_MS
    + """
local newest = -1
local marks = redis.call('HGETALL', KEYS[1])
for i = 1, #marks, 2 do
  local at = tonumber(marks[i + 1])
  if now - at > tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], marks[i])
  elseif marks[i] ~= ARGV[1] and at > newest then
    newest = at
  end
end
return {now, newest}
"""
)


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

    async def drop_kinds(self, kinds: Collection[str]) -> None:
        """Every entry of each of `kinds` (after a TRUNCATE, or changes Redis missed)
        deleted, in one scan of the keyspace."""
        wanted = {f"{KEY_PREFIX}{kind}:" for kind in kinds}
        pattern = f"{KEY_PREFIX}{next(iter(kinds))}:*" if len(wanted) == 1 else f"{KEY_PREFIX}*"

        def dropped(key: str) -> bool:
            return key[: key.find(":", len(KEY_PREFIX)) + 1] in wanted

        try:
            await delete_matching(self._redis, pattern, only=dropped)
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for kind in kinds:
                    pipe.incr(generation_key(kind))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def mark_following(self, replica: str, lasts_ms: int) -> None:
        """Say that `replica` has applied every change so far to this level."""
        await self._script(_FOLLOWING_SCRIPT, replica, lasts_ms)

    async def others_following(self, replica: str, lasts_ms: int) -> tuple[int, int | None]:
        """Redis's time now (ms), and the newest mark of a replica other than `replica`
        (None: no other has marked within `lasts_ms`)."""
        now, newest = await self._script(_OTHERS_SCRIPT, replica, lasts_ms)
        return int(now), (None if int(newest) < 0 else int(newest))

    async def stop_following(self, replica: str) -> None:
        try:
            await self._redis.client.hdel(FOLLOWERS_KEY, replica)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def _script(self, source: str, replica: str, lasts_ms: int) -> Any:
        try:
            return await self._redis.client.eval(source, 1, FOLLOWERS_KEY, replica, lasts_ms)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc


async def delete_matching(
    redis: RedisStore, pattern: str, only: Callable[[str], bool] | None = None
) -> None:
    """Every key matching `pattern` (of those, the ones `only` picks, when given):
    scanned, then deleted in batches (no KEYS, which would hold Redis for the whole
    keyspace)."""
    client = redis.client
    batch: list[str] = []
    async for found in client.scan_iter(match=pattern, count=1000):
        key = found.decode() if isinstance(found, bytes) else str(found)
        if only is not None and not only(key):
            continue
        batch.append(key)
        if len(batch) >= 1000:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)
