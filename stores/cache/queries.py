"""Whole query results, for operations that ask for it (`@cached`), in two levels.

A result is kept only when every read that produced it was served by a cache whose
entries the database's change notices end (`stores.cache.reads`): then a change
notice is all that can make it wrong. Each kind counts its notices, its generation:
in each process's memory as the notices arrive, and in Redis, where every replica
increments it after writing the change's tombstones. An entry records the
generations of the kinds it read, taken before it was computed, and is served only
while they are current; so a change read during the computation ends the entry too.

Keys are made by the caller (`gateway.query_cache`): the document, the variables and
the caller's permission scope. One computation per key at a time in this process;
concurrent requests for the key wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast
from uuid import UUID

import orjson

from stores.cache.local import MISSING, LocalCache
from stores.errors import StoreError
from stores.redis.query_cache import SharedQueryCache
from stores.redis.store import RedisStore

if TYPE_CHECKING:
    from stores.cache.entities import EntityCache

KIND: Final = "queries"
# Kinds whose notices end cached results (the entity kinds and metrics aggregates).
KINDS: Final = ("agents", "tasks", "workflows", "users", "metrics")


@dataclass(frozen=True, slots=True)
class Lookup:
    """A hit (`body` and its `level`), or a miss with what a fill needs."""

    body: bytes | None
    level: str | None
    local_generations: Mapping[str, int]
    shared_generations: Mapping[str, int] | None


# In memory: the generations an entry was computed at, and its encoded result.
_LocalEntry = tuple[tuple[tuple[str, int], ...], bytes]


def key_of(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _local_key(key: str) -> tuple[str, UUID]:
    return (KIND, UUID(hex=key[:32]))


class QueryResultCache:
    def __init__(self, entities: EntityCache, redis: RedisStore | None) -> None:
        options = entities.options
        self.options = options
        self._entities = entities
        self.local = LocalCache(options.query_local_capacity)
        self.shared = SharedQueryCache(redis) if redis is not None and options.shared else None
        self._in_flight: dict[str, asyncio.Future[bytes | None]] = {}

    @property
    def usable(self) -> bool:
        """Only while change notices arrive: a listener that lost its connection may have
        missed some."""
        return self._entities.following

    async def lookup(self, key: str, ttl_s: float) -> Lookup:
        entities = self._entities
        counts = entities.counts
        local_generations = {kind: entities.generations[kind] for kind in KINDS}
        found = self.local.get(_local_key(key))
        if found is not MISSING:
            generations, body = cast(_LocalEntry, found)
            if all(local_generations[k] == g for k, g in generations):
                counts.hits[(KIND, "local")] += 1
                return Lookup(body, "local", local_generations, None)
        shared_generations: dict[str, int] | None = None
        if self.shared is not None and entities.shared_usable():
            try:
                entry, shared_generations = await self.shared.get(key, KINDS)
            except StoreError:
                entities.shared_failed()
            else:
                current = _current(entry, shared_generations)
                if current is not None:
                    kinds, expires_at, body = current
                    counts.hits[(KIND, "shared")] += 1
                    # Checked against this process's generations from now on: taken
                    # before the lookup, so a notice arriving after it ends the copy.
                    left_s = min(ttl_s, expires_at - time.time())
                    if left_s > 0:
                        local = tuple((k, local_generations[k]) for k in kinds)
                        self._fill_local(key, local, body, left_s)
                    return Lookup(body, "shared", local_generations, shared_generations)
        counts.misses[KIND] += 1
        return Lookup(None, None, local_generations, shared_generations)

    async def store(
        self, key: str, body: bytes, kinds: set[str], lookup: Lookup, ttl_s: float
    ) -> bool:
        """Keep `body`, computed from reads of `kinds` after `lookup`; False when it is
        larger than an entry may be."""
        if len(body) > self.options.query_max_bytes:
            return False
        local = tuple((k, lookup.local_generations[k]) for k in sorted(kinds))
        self._fill_local(key, local, body, ttl_s)
        shared = lookup.shared_generations
        if self.shared is not None and shared is not None and self._entities.shared_usable():
            header = orjson.dumps({"g": {k: shared[k] for k in kinds}, "x": time.time() + ttl_s})
            try:
                await self.shared.put(key, header + b"\n" + body, ttl_s)
            except StoreError:
                self._entities.shared_failed()
        return True

    def begin(self, key: str) -> asyncio.Future[bytes | None] | None:
        """The computation of `key` under way to wait for, or None after registering this
        caller's (end it with `end`)."""
        running = self._in_flight.get(key)
        if running is not None:
            return running
        self._in_flight[key] = asyncio.get_running_loop().create_future()
        return None

    def end(self, key: str, body: bytes | None) -> None:
        waiter = self._in_flight.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(body)

    def _fill_local(
        self, key: str, generations: tuple[tuple[str, int], ...], body: bytes, ttl_s: float
    ) -> None:
        self.local.fill(_local_key(key), (generations, body), ttl_s, self.local.begin_load())
        self.local.end_load()


def _current(
    entry: bytes | None, generations: Mapping[str, int]
) -> tuple[list[str], float, bytes] | None:
    """An L2 entry's kinds, expiry and body, if its generations are all current."""
    if entry is None:
        return None
    header, _, body = entry.partition(b"\n")
    try:
        recorded = orjson.loads(header)
        read: dict[str, int] = recorded["g"]
        expires_at = float(recorded["x"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # written by another version
    if any(generations.get(kind) != generation for kind, generation in read.items()):
        return None
    return sorted(read), expires_at, body
