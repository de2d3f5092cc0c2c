"""The shared level of the entity cache: encoded records in Redis, for every replica.

    cache:{e}:<kind>:<id>   an encoded record, or "" (a tombstone: changed just now)
    cache:{e}:gen:<kind>    incremented by every replica on each notice of `kind`
    cache:{e}:vouch:<token> a replica's answer to one starting: see `EntityCache.start`
    cache:{e}:vouch:<token>:declined   how many starting replicas could not vouch

Every key shares the hash tag `{e}`, so one MGET or pipeline serves a page of ids
on a Redis Cluster too. A fill never overwrites (`SET NX`): a tombstone written on a
change keeps out, for its lifetime, a fill by a read that began before the change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
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


def vouch_key(token: str) -> str:
    """Set by a replica that has applied to this level every change committed before
    a starting replica asked, under the token it asked with (see `EntityCache.start`)."""
    return f"{KEY_PREFIX}vouch:{token}"


def declined_key(token: str) -> str:
    """How many replicas that cannot vouch (starting themselves) answered `token`."""
    return f"{KEY_PREFIX}vouch:{token}:declined"


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

    async def vouch(self, token: str, lasts_s: float) -> None:
        """Answer the starting replica that asked with `token`: this level holds every
        change committed before it asked."""
        try:
            await self._redis.client.set(vouch_key(token), b"1", px=int(lasts_s * 1000))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def decline(self, token: str, lasts_s: float) -> None:
        """Answer that this replica cannot vouch, so the one asking need not wait for it."""
        try:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                pipe.incr(declined_key(token))
                pipe.pexpire(declined_key(token), int(lasts_s * 1000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc

    async def answers(self, token: str) -> tuple[bool, int]:
        """Whether a replica vouched under `token`, and how many declined."""
        try:
            vouched, declined = await self._redis.client.mget(
                [vouch_key(token), declined_key(token)]
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        return vouched is not None, int(declined or 0)


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
