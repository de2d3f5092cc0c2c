"""Metric aggregates over closed windows, in two levels.

A window that ended `metrics_closed_after_s` ago or more is immutable but for late
points: the store accepts a point as old as its retention, so a rule that cached only
buckets older than the accepted lateness would cache almost nothing. Late points end
entries instead. Whoever records a point older than `metrics_closed_after_s` (both
ingest paths go through `resolvers.metrics.record_points`) moves its agent's
generation on before answering: in Redis, and, through a change notice
(`metrics:<agent ids>` on the entity cache's channel, waited for as a mutation waits
for its own), in every replica's memory. A point younger than that cannot fall in a
cached window: such a window ended before the point's time when it was cached.

Entries carry the agent's generation read before the load, so a point recorded
during the load ends the entry it might be missing from. Keys carry everything that
changes the answer (agent, names, window, width, aggregate, fill, labels); the
permission checks run above, in the resolvers, on every read.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Final, cast
from uuid import UUID

import orjson
from pydantic import TypeAdapter, ValidationError

from stores.cache import reads
from stores.cache.local import MISSING, LocalCache
from stores.errors import StoreError
from stores.metrics import MetricPoint, Series, Window
from stores.redis.aggregate_cache import SharedAggregateCache
from stores.redis.store import RedisStore

if TYPE_CHECKING:
    from stores.cache.entities import EntityCache

KIND: Final = "metrics"
# Larger answers (a day of 1-minute buckets is 1,440) are read afresh: memory is
# bounded by `metrics_local_capacity` times this.
MAX_BUCKETS_KEPT: Final = 1_500
_ENCODED = TypeAdapter(list[Series])

Load = Callable[[list[UUID]], Awaitable[dict[UUID, list[Series]]]]


class AggregateCache:
    def __init__(self, entities: EntityCache, redis: RedisStore | None) -> None:
        options = entities.options
        self.options = options
        self._entities = entities
        self.local = LocalCache(options.metrics_local_capacity)
        self.shared = SharedAggregateCache(redis) if redis is not None and options.shared else None
        # Late points seen per agent, in this process.
        self._generations: dict[UUID, int] = {}
        self._in_flight: dict[str, asyncio.Future[list[Series] | None]] = {}

    def closed(self, window: Window, now: datetime | None = None) -> bool:
        """Whether `window` ended long enough ago for no on-time point to reach it."""
        now = now or datetime.now(UTC)
        return window.end <= now - timedelta(seconds=self.options.metrics_closed_after_s)

    def changed(self, agent_ids: list[UUID] | None) -> None:
        """A change notice: late points for `agent_ids` (None: anything may have changed)."""
        if agent_ids is None:
            self.local.clear()
            return
        for agent_id in agent_ids:
            self._generations[agent_id] = self._generations.get(agent_id, 0) + 1

    async def recorded(self, points: Sequence[MetricPoint]) -> None:
        """After points are written: end what late ones change, here, in Redis and, by a
        change notice, in every replica's memory."""
        horizon = datetime.now(UTC) - timedelta(seconds=self.options.metrics_closed_after_s)
        late = sorted({point.agent_id for point in points if point.time < horizon})
        if not late:
            return
        if self.shared is not None:
            try:
                await self.shared.bump(late)
            except StoreError:
                # Memory goes on; Redis gets the bump when it answers again, and is not
                # read until then.
                self._entities.shared_failed()
                self._entities.unwritten(KIND, late)
        await self._entities.announce(KIND, late)
        # Back through this process's listener too, before the writer's next read.
        await self._entities.settle()

    async def rewrite(self, agent_ids: Collection[UUID] | None) -> None:
        """After Redis missed late points: the generations of `agent_ids` moved on, or
        (None) every entry dropped. Raises `StoreError` if Redis still fails."""
        if self.shared is None:
            return
        if agent_ids is None:
            await self.shared.drop_all()
        else:
            await self.shared.bump(agent_ids)

    async def series(
        self, question: bytes, agent_ids: Sequence[UUID], load: Load
    ) -> dict[UUID, list[Series]]:
        """The answer to `question` (an encoding of every argument but the agent) for each
        of `agent_ids`, from the cache or `load`; one load per key at a time."""
        entities = self._entities
        if not entities.following:
            return await load(list(agent_ids))
        reads.served(KIND)
        keys = {agent_id: _key(question, agent_id) for agent_id in dict.fromkeys(agent_ids)}
        found: dict[UUID, list[Series]] = {}
        wanted: list[UUID] = []
        for agent_id, key in keys.items():
            entry = self.local.get((KIND, _local_id(key)))
            if entry is not MISSING:
                generation, value = cast(tuple[int, list[Series]], entry)
                if generation == self._generations.get(agent_id, 0):
                    found[agent_id] = value
                    continue
            wanted.append(agent_id)
        if found:
            entities.counts.hits[(KIND, "local")] += len(found)
        if not wanted:
            return found
        waiting = {a: self._in_flight[keys[a]] for a in wanted if keys[a] in self._in_flight}
        own = [a for a in wanted if a not in waiting]
        if own:
            loading = asyncio.ensure_future(self._load(keys, own, load))
            loop = asyncio.get_running_loop()
            for agent_id in own:
                self._in_flight[keys[agent_id]] = loop.create_future()
            loading.add_done_callback(partial(self._settle_waiters, keys=keys, own=own))
            found.update(await asyncio.shield(loading))
        for agent_id, waiter in waiting.items():
            shared_value = await asyncio.shield(waiter)
            if shared_value is None:
                shared_value = (await load([agent_id]))[agent_id]
            found[agent_id] = shared_value
        return found

    def _settle_waiters(
        self,
        loading: asyncio.Future[dict[UUID, list[Series]]],
        *,
        keys: dict[UUID, str],
        own: list[UUID],
    ) -> None:
        failed = loading.cancelled() or loading.exception() is not None
        for agent_id in own:
            waiter = self._in_flight.pop(keys[agent_id], None)
            if waiter is not None and not waiter.done():
                # A waiter whose load failed loads for itself.
                waiter.set_result(None if failed else loading.result().get(agent_id))

    async def _load(
        self, keys: dict[UUID, str], agent_ids: list[UUID], load: Load
    ) -> dict[UUID, list[Series]]:
        reads.cache_load()
        entities = self._entities
        local_generations = {a: self._generations.get(a, 0) for a in agent_ids}
        found: dict[UUID, list[Series]] = {}
        shared_generations: dict[UUID, int] | None = None
        if self.shared is not None and entities.shared_usable():
            try:
                entries, shared_generations = await self.shared.get_many(
                    [keys[a] for a in agent_ids], agent_ids
                )
            except StoreError:
                entities.shared_failed()
            else:
                for agent_id, entry in zip(agent_ids, entries, strict=True):
                    value = _decode(entry, shared_generations[agent_id])
                    if value is not None:
                        found[agent_id] = value
                if found:
                    entities.counts.hits[(KIND, "shared")] += len(found)
        rest = [a for a in agent_ids if a not in found]
        if rest:
            entities.counts.misses[KIND] += len(rest)
            loaded = await load(rest)
            found.update(loaded)
            loaded = {a: v for a, v in loaded.items() if _buckets(v) <= MAX_BUCKETS_KEPT}
            if shared_generations is not None and self.shared is not None:
                encoded = {
                    keys[a]: orjson.dumps(shared_generations[a]) + b"\n" + _ENCODED.dump_json(v)
                    for a, v in loaded.items()
                }
                try:
                    await self.shared.put_many(encoded, self.options.metrics_ttl_s)
                except StoreError:
                    entities.shared_failed()
        ticket = self.local.begin_load()
        try:
            for agent_id, value in found.items():
                if _buckets(value) > MAX_BUCKETS_KEPT:
                    continue
                self.local.fill(
                    (KIND, _local_id(keys[agent_id])),
                    (local_generations[agent_id], value),
                    self.options.metrics_ttl_s,
                    ticket,
                )
        finally:
            self.local.end_load()
        return found


def question_of(*parts: object) -> bytes:
    """Every argument of a series read but the agent, encoded for a key."""
    return orjson.dumps([str(part) for part in parts])


def _key(question: bytes, agent_id: UUID) -> str:
    return hashlib.sha256(question + b"\n" + agent_id.bytes).hexdigest()


def _buckets(value: list[Series]) -> int:
    return sum(len(series.buckets) for series in value)


def _local_id(key: str) -> UUID:
    return UUID(hex=key[:32])


def _decode(entry: bytes | None, generation: int) -> list[Series] | None:
    if entry is None:
        return None
    header, _, body = entry.partition(b"\n")
    try:
        if int(header) != generation:
            return None
        return _ENCODED.validate_json(body)
    except (ValueError, ValidationError):
        return None  # written by another version
