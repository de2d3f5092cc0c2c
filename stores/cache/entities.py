"""The entity cache: agents, tasks, workflows and users by id, in two levels.

L1 is this process's memory, L2 is Redis, shared by every replica; PostgreSQL stays
the truth. A read looks in L1, then L2, then loads what is left from PostgreSQL, one
load per key at a time in this process (concurrent readers of a key share it).

Invalidation does not depend on any write path remembering to publish: triggers on
the four tables NOTIFY `polygraph_entity_changed` on every UPDATE, DELETE and
TRUNCATE, whoever makes it, and PostgreSQL delivers those on commit, in commit order,
to every replica's listener. Each listener drops its L1 entries and writes L2
tombstones. A writer then waits for its own changes to come back (`settle`): it
sends a NOTIFY after its transaction and, when its listener has seen that, has seen
everything committed before it. So a client never reads its own write stale on the
gateway that made it (and in L2); other replicas' memories follow within the notice's
delivery time. A Redis outage costs L2 and nothing else: Redis may come back with its
data, so a change whose tombstone it missed, and every kind after this process's
listener was away (a change then reached no listener here), leaves L2 unused until
Redis has been told, by the tombstones written late or the kind's entries dropped.

The same holds before a process first listens: what changed while no replica
listened (every gateway stopped, a worker or `psql` writing) is in no tombstone. So
a starting process trusts L2 only when another replica vouches for it, with the
barrier `settle` uses: once listening, it sends a vouch request on the channel; a
replica that follows every change has, when its tombstone writer reaches that
request, written to L2 everything committed before it, and says so in the Redis the
two share (`cache:{e}:vouch:<token>`); one starting too declines, so nobody waits
on it. Without a vouch (no other listener is connected, all declined, or no answer
in time), the starting process drops every kind's L2 entries before it serves.

The cache sits below the resolvers: every permission check runs on what it returns,
exactly as on a record read from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar, cast
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from stores.cache import reads
from stores.cache.aggregates import KIND as AGGREGATES
from stores.cache.aggregates import AggregateCache
from stores.cache.local import MISSING, LocalCache
from stores.cache.queries import KINDS as QUERY_KINDS
from stores.cache.queries import QueryResultCache
from stores.errors import StoreError, StoreUnavailable
from stores.postgres.listen import ChannelListener
from stores.postgres.records import Agent, Task, User, Workflow
from stores.postgres.store import PostgresStore
from stores.redis.entity_cache import SharedEntityCache
from stores.redis.store import RedisStore

logger = logging.getLogger(__name__)

CHANNEL = "polygraph_entity_changed"
# Every replica's listener connects under this name: how one starting finds others.
LISTENER_NAME = "polygraph-cache-listener"
_BARRIER = "barrier"
# As the triggers send them (migration 0012): a payload holds at most 8000 bytes.
_IDS_PER_NOTICE = 150
_RECONNECT_S = 1.0
# After L2 fails, reads skip it this long instead of each paying a connection timeout.
_SHARED_RETRY_S = 5.0
# Ids of one kind remembered for tombstones Redis missed; past this, the whole kind.
_MAX_UNWRITTEN_IDS = 10_000
_FINISHED_TASK_STATUSES = frozenset({"completed", "failed", "cancelled"})
_VOUCH = "vouch"
# How long a starting replica waits for another to vouch for L2, and how long an
# answer stays in Redis (only the replica that asked reads it).
_VOUCH_WAIT_S = 2.5
_VOUCH_LASTS_S = 30.0

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _VouchRequest:
    """A starting replica's question, queued behind the tombstones heard before it."""

    token: str


@dataclass(frozen=True, kw_only=True)
class CacheOptions:
    """Lifetimes follow the platforms' persistence strategy: agent state 5 minutes,
    task results a day; workflows and users change as rarely as query results do."""

    enabled: bool = True
    shared: bool = True
    agent_ttl_s: float = 300
    task_ttl_s: float = 300
    finished_task_ttl_s: float = 86_400
    workflow_ttl_s: float = 600
    user_ttl_s: float = 600
    local_capacity: int = 50_000
    # Whole query results (`@cached`): the lifetime when the operation names none, and
    # the most it may name; the largest result kept (bytes) and how many each process
    # holds (at most `query_local_capacity * query_max_bytes` of memory).
    query_ttl_s: float = 600
    query_max_bytes: int = 65_536
    query_local_capacity: int = 2_000
    # Metric aggregates over windows that ended at least `metrics_closed_after_s` ago.
    metrics_ttl_s: float = 3_600
    metrics_closed_after_s: float = 60
    metrics_local_capacity: int = 2_000
    # How long a change keeps fills out of L2: longer than any read can take.
    tombstone_s: float = 30
    # How long a writer waits for its changes to come back before it drops all of L1.
    settle_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("agent_ttl_s", "task_ttl_s", "finished_task_ttl_s", "workflow_ttl_s",
                     "user_ttl_s", "tombstone_s", "settle_timeout_s", "query_ttl_s",
                     "metrics_ttl_s", "metrics_closed_after_s"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("local_capacity", "query_max_bytes", "query_local_capacity",
                     "metrics_local_capacity"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class CacheCounts:
    """Reads served by each level and by PostgreSQL, by kind; failures of L2."""

    hits: Counter[tuple[str, str]]  # (kind, level)
    misses: Counter[str]  # kind
    shared_failures: int = 0


class CachedKind(Generic[R]):
    """One kind of entity: `by_ids` with the cache in front of PostgreSQL."""

    __slots__ = ("_adapter", "_cache", "_fetch", "_in_flight", "_keep", "_ttl_of", "kind")

    def __init__(
        self,
        cache: EntityCache,
        kind: str,
        record: type[R],
        fetch: Callable[[Sequence[UUID]], Awaitable[Mapping[UUID, R]]],
        ttl_of: Callable[[R], float],
        keep: Callable[[R], bool] | None = None,
    ) -> None:
        self._cache = cache
        self.kind = kind
        self._adapter: TypeAdapter[R] = TypeAdapter(record)
        self._fetch = fetch
        self._ttl_of = ttl_of
        # Records it may hold: the database sends no notice for a change to the others.
        self._keep = keep
        self._in_flight: dict[UUID, asyncio.Future[R | None]] = {}

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, R]:
        cache = self._cache
        if not cache.following:
            return dict(await self._fetch(ids))
        reads.served(self.kind)
        local = cache.local
        found: dict[UUID, R] = {}
        wanted: list[UUID] = []
        for entity_id in dict.fromkeys(ids):
            value = local.get((self.kind, entity_id))
            if value is MISSING:
                wanted.append(entity_id)
            else:
                found[entity_id] = cast(R, value)
        if found:
            cache.counts.hits[(self.kind, "local")] += len(found)
        if not wanted:
            return found
        # Keys another reader is loading: their futures, taken now (each leaves
        # `_in_flight` when its load ends).
        waiting = {i: self._in_flight[i] for i in wanted if i in self._in_flight}
        own = [i for i in wanted if i not in waiting]
        if own:
            # A task of its own: a reader cancelled mid-load (its deadline) does not
            # fail the readers waiting on the same keys.
            load = asyncio.ensure_future(self._load(own))
            loop = asyncio.get_running_loop()
            for entity_id in own:
                self._in_flight[entity_id] = loop.create_future()
            load.add_done_callback(partial(self._settle_waiters, keys=own))
            found.update(await asyncio.shield(load))
        for entity_id, waiter in waiting.items():
            loaded = await asyncio.shield(waiter)
            if loaded is not None:
                found[entity_id] = loaded
        if self._keep is not None and not all(map(self._keep, found.values())):
            # No notice will end a result built on these: it must not be kept either.
            reads.not_cacheable()
        return found

    def _settle_waiters(self, load: asyncio.Future[dict[UUID, R]], *, keys: list[UUID]) -> None:
        error = None if load.cancelled() else load.exception()
        for entity_id in keys:
            waiter = self._in_flight.pop(entity_id, None)
            if waiter is None or waiter.done():
                continue
            if load.cancelled():
                waiter.cancel()
            elif error is not None:
                waiter.set_exception(error)
                waiter.exception()  # retrieved: the loading reader raises it already
            else:
                waiter.set_result(load.result().get(entity_id))

    async def _load(self, ids: list[UUID]) -> dict[UUID, R]:
        reads.cache_load()
        cache = self._cache
        ticket = cache.local.begin_load()
        try:
            found = await self._from_shared(ids, ticket)
            rest = [i for i in ids if i not in found]
            if rest:
                cache.counts.misses[self.kind] += len(rest)
                loaded = dict(await self._fetch(rest))
                kept = loaded
                if self._keep is not None:
                    kept = {i: r for i, r in loaded.items() if self._keep(r)}

                ttls = {i: self._ttl_of(record) for i, record in kept.items()}
                for entity_id, record in kept.items():
                    cache.local.fill((self.kind, entity_id), record, ttls[entity_id], ticket)
                if cache.shared_usable() and kept:
                    encoded = {i: self._adapter.dump_json(r) for i, r in kept.items()}
                    try:
                        await cache.shared.put_many(self.kind, encoded, ttls)  # type: ignore[union-attr]
                    except StoreError:
                        cache.shared_failed()
                found.update(loaded)
            return found
        finally:
            cache.local.end_load()

    async def _from_shared(self, ids: list[UUID], ticket: int) -> dict[UUID, R]:
        cache = self._cache
        if not cache.shared_usable():
            return {}
        try:
            raw = await cache.shared.get_many(self.kind, ids)  # type: ignore[union-attr]
        except StoreError:
            cache.shared_failed()
            return {}
        found: dict[UUID, R] = {}
        for entity_id, encoded in raw.items():
            try:
                record = self._adapter.validate_json(encoded)
            except ValidationError:
                continue  # written by another version of the record: load it afresh
            if self._keep is not None and not self._keep(record):
                continue
            found[entity_id] = record
            cache.local.fill((self.kind, entity_id), record, self._ttl_of(record), ticket)
        if found:
            cache.counts.hits[(self.kind, "shared")] += len(found)
        return found


def _not_pending(task: Task) -> bool:
    # A task in the queue is about to be claimed: claims send no notice (migration 0013),
    # which kept 20 claimers from queueing on PostgreSQL's notify lock at commit.
    return task.status != "pending"


class EntityCache:
    """The cache's two levels, its per-kind readers and the change listener."""

    def __init__(
        self, postgres: PostgresStore, redis: RedisStore | None, options: CacheOptions
    ) -> None:
        self.options = options
        self.local = LocalCache(options.local_capacity)
        self.shared = SharedEntityCache(redis) if redis is not None and options.shared else None
        self.counts = CacheCounts(hits=Counter(), misses=Counter())
        # Change notices seen per kind: what cached query results are checked against.
        self.generations: Counter[str] = Counter()
        # Told of each change notice of a kind that is not an entity (metrics aggregates).
        self.followers: dict[str, Callable[[list[UUID] | None], None]] = {}
        self._shared_retry_at = 0.0
        # Changes whose tombstones Redis missed, by kind (None: the whole kind).
        self._unwritten: dict[str, set[UUID] | None] = {}
        # True while those are being written: taken out of `_unwritten` one kind at a
        # time, they are not in Redis yet.
        self._writing_unwritten = False
        self._postgres = postgres
        self._listener = ChannelListener(
            postgres, CHANNEL, self._changed, application_name=LISTENER_NAME
        )
        # Changes to write to L2; barriers to resolve and starting replicas to answer
        # once those before them are written; None: a wake-up to write what Redis missed.
        self._tombstones: asyncio.Queue[
            tuple[str, list[UUID] | None] | asyncio.Future[None] | _VouchRequest | None
        ]
        self._tombstones = asyncio.Queue()
        self._barriers: dict[str, asyncio.Future[None]] = {}
        # Told of each drop from L1, as it happens (the invalidation bench times them).
        self.on_dropped: Callable[[str, list[UUID] | None], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # L1 serves reads only while invalidations arrive: a listener that lost its
        # connection may have missed some.
        self.following = False
        # The token of this process's own vouch request: it never answers it.
        self._asked: str | None = None
        self.agents = CachedKind(
            self, "agents", Agent, postgres.agents.by_ids, lambda _: options.agent_ttl_s
        )
        self.tasks = CachedKind(
            self, "tasks", Task, postgres.tasks.by_ids, self._task_ttl, keep=_not_pending
        )
        self.workflows = CachedKind(
            self, "workflows", Workflow, postgres.workflows.by_ids, lambda _: options.workflow_ttl_s
        )
        self.users = CachedKind(
            self, "users", User, postgres.users.by_ids, lambda _: options.user_ttl_s
        )
        self.queries = QueryResultCache(self, redis)
        self.aggregates = AggregateCache(self, redis)
        self.followers[AGGREGATES] = self.aggregates.changed

    def shared_usable(self) -> bool:
        return (
            self.shared is not None
            and not self._unwritten
            and not self._writing_unwritten
            and not self._shared_down()
        )

    def _shared_down(self) -> bool:
        return time.monotonic() < self._shared_retry_at

    def shared_failed(self) -> None:
        self.counts.shared_failures += 1
        if time.monotonic() >= self._shared_retry_at:
            logger.warning("cache: Redis unreachable; L1 only for %.0f s", _SHARED_RETRY_S)
        self._shared_retry_at = time.monotonic() + _SHARED_RETRY_S

    @property
    def shared_available(self) -> bool | None:
        """None without L2; False while it is skipped after a failure."""
        return None if self.shared is None else self.shared_usable()

    def _task_ttl(self, task: Task) -> float:
        if task.status in _FINISHED_TASK_STATUSES:
            return self.options.finished_task_ttl_s
        return self.options.task_ttl_s

    async def start(self) -> None:
        """Follow changes from now on; returns once following, L2 trusted or emptied
        (see the module's docstring), or once the first attempt failed: reads then go
        to PostgreSQL until a retry succeeds."""
        started = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._follow(started), name="cache-listener"),
            asyncio.create_task(self._write_tombstones(), name="cache-tombstones"),
        ]
        await started

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # Waited for, not awaited: a cancellation of the caller still reaches it, and a
            # task slow to stop (a Redis call finishing) cannot hold the shutdown.
            _, pending = await asyncio.wait(tasks, timeout=self.options.settle_timeout_s)
            if pending:
                logger.warning("cache: %d background tasks still stopping", len(pending))
        self.following = False
        await self._listener.aclose()

    async def _vouched_for(self) -> bool:
        """Whether another replica sharing this Redis has written to it every change
        committed before this process asked, which is after its listener began: what
        this listener never heard, L2 then holds (waited for up to `_VOUCH_WAIT_S`)."""
        assert self.shared is not None
        token = self._asked = uuid.uuid4().hex
        try:
            others = await self._listener.others_listening()
            if not others:
                return False
            await self._postgres.notify(CHANNEL, f"{_VOUCH}:{token}")
        except StoreError as exc:
            logger.warning("cache: cannot ask other replicas about L2 (%s)", exc)
            return False
        deadline = time.monotonic() + _VOUCH_WAIT_S
        pause = 0.005
        try:
            while True:
                vouched, declined = await self.shared.answers(token)
                # A listener that died may still be counted: the deadline bounds that.
                if vouched or declined >= others or time.monotonic() >= deadline:
                    return vouched
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)
        except StoreError:
            self.shared_failed()
            return False

    async def _answer(self, request: _VouchRequest) -> None:
        """Answer a starting replica, every change heard before its request written:
        vouch while following with nothing Redis missed; decline while starting too.
        Otherwise (a listener lost, or tombstones Redis missed) no answer: what this
        process would write is not known yet."""
        assert self.shared is not None
        try:
            if self.following and self.shared_usable():
                await self.shared.vouch(request.token, _VOUCH_LASTS_S)
            elif not self.following and not self._shared_down():
                await self.shared.decline(request.token, _VOUCH_LASTS_S)
        except StoreError:
            self.shared_failed()

    async def _empty_shared(self) -> None:
        """Every kind's L2 entries dropped: nothing says they are current (the
        entities' in one scan of the keyspace). What Redis cannot take now is left
        unwritten, and L2 unused until it is written."""
        assert self.shared is not None
        try:
            await self.shared.drop_kinds([kind for kind in QUERY_KINDS if kind != AGGREGATES])
            await self._tell_redis(AGGREGATES, None)
        except StoreError:
            self.shared_failed()
            for kind in QUERY_KINDS:
                self.unwritten(kind, None)

    async def settle(self) -> None:
        """Return once this process has applied every change committed before the call
        (its own writes included), L2 tombstones written; bounded by `settle_timeout_s`,
        after which L1 is dropped whole rather than trusted."""
        if not self.following:
            return
        token = uuid.uuid4().hex
        arrived = asyncio.get_running_loop().create_future()
        self._barriers[token] = arrived
        try:
            await self._postgres.notify(CHANNEL, f"{_BARRIER}:{token}")
            await asyncio.wait_for(asyncio.shield(arrived), self.options.settle_timeout_s)
        except (TimeoutError, StoreError) as exc:
            logger.warning("cache: changes did not come back in time (%s); dropped L1", exc)
            self.local.clear()
            for follower in self.followers.values():
                follower(None)
        finally:
            self._barriers.pop(token, None)

    async def announce(self, kind: str, ids: Sequence[UUID]) -> None:
        """Tell every replica (this one included) that `ids` of `kind` changed, for kinds
        no trigger announces."""
        for start in range(0, len(ids), _IDS_PER_NOTICE):
            chunk = ",".join(str(entity_id) for entity_id in ids[start : start + _IDS_PER_NOTICE])
            await self._postgres.notify(CHANNEL, f"{kind}:{chunk}")

    def _changed(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == _BARRIER:
            arrived = self._barriers.get(rest)
            if arrived is not None:
                # Resolved once the tombstones queued before it are written.
                self._tombstones.put_nowait(arrived)
            return
        if kind == _VOUCH:
            if self.shared is not None and rest != self._asked:
                self._tombstones.put_nowait(_VouchRequest(rest))
            return
        self.generations[kind] += 1
        follower = self.followers.get(kind)
        if follower is not None:
            if rest == "*":
                follower(None)
            else:
                try:
                    follower([UUID(part) for part in rest.split(",")])
                except ValueError:
                    logger.warning("cache: ignored a malformed change notice %r", payload[:100])
                    follower(None)
            self._tombstones.put_nowait((kind, []))
            return
        if rest == "*":
            self.local.invalidate_kind(kind)
            self._tombstones.put_nowait((kind, None))
            if self.on_dropped is not None:
                self.on_dropped(kind, None)
            return
        try:
            ids = [UUID(part) for part in rest.split(",")]
        except ValueError:
            logger.warning("cache: ignored a malformed change notice %r", payload[:100])
            return
        self.local.invalidate(kind, ids)
        self._tombstones.put_nowait((kind, ids))
        if self.on_dropped is not None:
            self.on_dropped(kind, ids)

    async def _write_tombstones(self) -> None:
        while True:
            if self._unwritten and not self._shared_down():
                await self._write_unwritten()
            try:
                # While something is unwritten, wake to retry even if no notice comes.
                async with asyncio.timeout(_SHARED_RETRY_S if self._unwritten else None):
                    item = await self._tombstones.get()
            except TimeoutError:
                continue
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            if isinstance(item, _VouchRequest):
                await self._answer(item)
                continue
            if self.shared is None or item is None:
                continue
            kind, ids = item
            if self._unwritten or self._shared_down():
                # Redis is failing: written with the rest once it answers again.
                self.unwritten(kind, ids)
                continue
            try:
                await self._tell_redis(kind, ids)
            except StoreError:
                self.shared_failed()
                self.unwritten(kind, ids)

    async def _tell_redis(self, kind: str, ids: Collection[UUID] | None) -> None:
        """L2's part of a change: tombstones for `ids` (None: every entry of `kind`
        dropped), or for late metric points their agents' generations moved on; then
        the kind's generation. Raises `StoreError` when Redis fails."""
        assert self.shared is not None
        if kind == AGGREGATES:
            await self.aggregates.rewrite(ids)
            await self.shared.tombstone(kind, [], self.options.tombstone_s)
        elif ids is None:
            await self.shared.drop_kinds([kind])
        else:
            await self.shared.tombstone(kind, ids, self.options.tombstone_s)

    def unwritten(self, kind: str, ids: Collection[UUID] | None) -> None:
        """Note a change Redis did not hear of (None: any entry of `kind` may be
        stale). L2 is left unused until it is written (`_write_unwritten`): Redis may
        come back with its data, and the entries the change made stale with it."""
        if self.shared is None:
            return
        if not self._unwritten:
            # Wakes the writer, which retries while anything is unwritten.
            self._tombstones.put_nowait(None)
        known = self._unwritten.get(kind, set())
        if ids is None or known is None or len(known) + len(ids) > _MAX_UNWRITTEN_IDS:
            self._unwritten[kind] = None
        else:
            known.update(ids)
            self._unwritten[kind] = known

    async def _write_unwritten(self) -> None:
        """The changes Redis missed, kind by kind: tombstones for the ids known, every
        entry of a kind dropped where they are not (or too many)."""
        assert self.shared is not None
        self._writing_unwritten = True
        try:
            while self._unwritten:
                kind, ids = self._unwritten.popitem()
                try:
                    await self._tell_redis(kind, ids)
                except StoreError:
                    self.shared_failed()
                    self.unwritten(kind, ids)
                    return
        finally:
            self._writing_unwritten = False
        logger.info("cache: Redis is back and has every change it missed; L2 in use again")

    async def _follow(self, started: asyncio.Future[None]) -> None:
        reconnected = False
        while True:
            try:
                await self._listener.connect()
            except StoreUnavailable as exc:
                logger.warning("cache: cannot follow changes (%s); reading through", exc)
            else:
                # Whatever changed while nobody listened is unknown: start empty.
                self.local.clear()
                for kind in QUERY_KINDS:
                    self.generations[kind] += 1
                for follower in self.followers.values():
                    follower(None)
                if reconnected:
                    # And Redis may hold it, if no other replica was listening either.
                    for kind in QUERY_KINDS:
                        self.unwritten(kind, None)
                elif self.shared is not None and not await self._vouched_for():
                    # The first time: what changed while no replica listened, too.
                    if self._shared_down():
                        # Unreachable just now: dropped once it answers, unused till then.
                        for kind in QUERY_KINDS:
                            self.unwritten(kind, None)
                    else:
                        logger.info("cache: no other replica vouched for Redis; emptied L2")
                        await self._empty_shared()
                reconnected = True
                self.following = True
                if not started.done():
                    started.set_result(None)
                await self._listener.wait_closed()
                self.following = False
                logger.warning("cache: lost the change listener; reading through until it is back")
            if not started.done():
                started.set_result(None)
            await asyncio.sleep(_RECONNECT_S)
