"""Events between gateway processes over Redis pub/sub, for GraphQL subscriptions.

Each process holds ONE pub/sub connection, subscribed to every channel some local
subscriber wants, and fans each event out to the subscribers' bounded queues. A
subscriber that falls behind loses its oldest events, not the process its memory.
Pub/sub delivers at most once: events published while the connection is down are
gone; the bus reconnects with backoff and subscribes again.

    async with bus.subscribe("task.updated") as events:
        async for event in events:
            ...

Every local subscriber of a channel gets the same `Event` object for one message:
work derived from it (e.g. a store read) can be done once per process with
`event.memo(key, build)` instead of once per subscriber.

Subscribers that would answer every event alike (the same GraphQL document,
variables and permission scope) subscribe with the same `group`: the bus then gives
each event to the group's first member only, its leader, with the others as its
followers, and the leader answers for them (`Subscription.answer_followers`). A
follower busy with events of its own gets the event in its queue instead, so its
events stay in order; so do all of them for an event whose answer is not to be
shared (`Subscription.hand_over`), and for the events a leaving leader had not
answered yet. A group falls behind as one: its leader's queue holds its events.

Under Redis Cluster the bus uses sharded pub/sub (SSUBSCRIBE, SPUBLISH): a message
stays on the shard that owns its channel instead of crossing every node. The
namespace becomes a hash tag (`{polygraph}:task.updated`), so all of a deployment's
channels share one slot and each process still needs one pub/sub connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, NoReturn, TypeVar, cast

import orjson
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from tenacity import AsyncRetrying, RetryCallState

from stores import roundtrips
from stores.errors import StoreMisuse
from stores.redis.store import UNAVAILABLE_ERRORS, RedisStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Event(dict[str, Any]):
    """One decoded message, the same object for every local subscriber of its channel.

    Read-only, because it is shared: mutating methods raise `TypeError` (nested values
    are not guarded: leave them alone too); `dict(event)` is a private copy. Besides
    the payload it carries per-event scratch, `memo`, so that subscribers share what
    they derive from it.
    """

    __slots__ = ("_memo",)

    def __init__(self, payload: Mapping[str, Any]) -> None:
        super().__init__(payload)
        self._memo: dict[str, object] = {}

    def memo(self, key: str, build: Callable[[], T]) -> T:
        """The value under `key` for this event: built by the first subscriber to ask,
        reused by the others; it lives as long as the event does.

        One key, one type: the value is returned as whatever the first `build` made.
        Nothing here is per subscriber, so store nothing that depends on who asks.
        """
        try:
            return cast(T, self._memo[key])
        except KeyError:
            value = self._memo[key] = build()
            return value

    def __reduce__(self) -> tuple[type[Event], tuple[dict[str, Any]]]:
        # copy/pickle would otherwise rebuild the payload item by item through __setitem__.
        return Event, (dict(self),)

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "events are shared by every subscriber of a channel; copy one with dict(event)"
        )

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


# How long the reader waits for a message before checking the connection's health.
_POLL_S = 1.0
# Message types of plain and of sharded pub/sub.
_DELIVERIES = ("message", "smessage")
_CONFIRMATIONS = ("subscribe", "ssubscribe")


class Subscription:
    """One local subscriber's events on one channel, in order; iterate it with `async for`.

    Events are shared between the local subscribers of a channel, hence read-only (`Event`).
    `tag` is the subscriber's own, for whoever answers events for it (see the module
    docstring).
    """

    __slots__ = (
        "_bus",
        "_closed",
        "_current",
        "_queue",
        "_waiting",
        "channel",
        "dropped",
        "tag",
    )

    def __init__(self, bus: EventBus, channel: str, queue_size: int, tag: object = None) -> None:
        self._bus = bus
        self.channel = channel
        self.tag = tag
        # Events this subscriber lost because it fell `queue_size` behind.
        self.dropped = 0
        # Each event with the followers it is answered for (none unless this leads a group).
        self._queue: asyncio.Queue[_Queued | None] = asyncio.Queue(queue_size)
        self._closed = False
        # True while waiting for the next event, nothing of its own left to answer.
        self._waiting = False
        # The event last returned, and the followers still owed its answer.
        self._current: _Queued | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        # Asking for the next event means the last one is answered: for every follower
        # that had it answered, as followers answer the same alike.
        self._current = None
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        self._waiting = True
        try:
            queued = await self._queue.get()
        finally:
            self._waiting = False
        if queued is None:
            raise StopAsyncIteration
        if queued[1]:
            self._current = queued
        return queued[0]

    @property
    def waiting(self) -> bool:
        """Whether this subscriber waits for its next event, every earlier one answered."""
        return self._waiting and self._queue.empty()

    async def answer_followers(self, send: Callable[[Subscription], Awaitable[None]]) -> None:
        """`send(follower)` the answer to the event last returned, for each follower
        waiting for its next event; one busy with events of its own gets this one in
        its queue too, and answers it after them. So does one whose `send` waits
        longer than `_FOLLOWER_PATIENCE_S` (a client that stopped reading): it holds up
        only itself, as it would have without a leader. Every `_SENDS_PER_TURN` sends
        the loop lets other tasks run: a large group does not hold up the process."""
        current = self._current
        if current is None:
            return
        event, followers = current
        loop = asyncio.get_running_loop()
        while followers:
            try:
                async with asyncio.timeout(None) as patience:
                    for _ in range(_SENDS_PER_TURN):
                        if not followers:
                            break
                        follower = followers[-1]
                        if follower.waiting:
                            patience.reschedule(loop.time() + _FOLLOWER_PATIENCE_S)
                            await send(follower)
                            self._bus.answered_for_followers += 1
                        elif not follower._closed:
                            follower._offer(event)
                        followers.pop()
            except TimeoutError:
                followers.pop()._offer(event)
            if followers:
                await asyncio.sleep(0)
        self._current = None

    def hand_over(self) -> None:
        """Let every follower answer the event last returned itself (an answer not to
        share: one with errors, say, which name each subscriber's own request)."""
        current, self._current = self._current, None
        if current is not None:
            _hand_over(*current)

    def _offer(self, event: Event, followers: list[Subscription] | None = None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._bus._count_drop()
        self._queue.put_nowait((event, followers or []))

    def _hand_over_all(self) -> None:
        """Every event this subscriber still owes its followers, oldest first, to each
        follower's own queue (it is leaving)."""
        self.hand_over()
        while not self._queue.empty():
            queued = self._queue.get_nowait()
            if queued is not None:
                _hand_over(*queued)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The end marker may push out an event unread: the subscriber is leaving anyway.
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


# How long a leader waits to send a follower its answer (a send waits only while the
# follower's connection has more unread than its buffer holds).
_FOLLOWER_PATIENCE_S = 0.05
# Sends a leader makes before letting other tasks run (a send to a waiting client
# does not wait, so a thousand of them would otherwise run as one step).
_SENDS_PER_TURN = 32
# An event, and the followers its answer is owed to (newest member first).
_Queued = tuple[Event, list[Subscription]]


def _hand_over(event: Event, followers: list[Subscription]) -> None:
    for follower in followers:
        if not follower._closed:
            follower._offer(event)


class EventBus:
    """Publishes to and fans out from Redis pub/sub; `start()` before subscribing.

    Counters, for metrics: `published`, `publish_failures`, `received`, `dropped`,
    `malformed`, `reconnects`, and `answered_for_followers` (events a group's leader
    answered for a follower).
    """

    def __init__(
        self,
        redis: RedisStore,
        *,
        namespace: str = "polygraph",
        queue_size: int = 256,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        subscribe_timeout: float = 2.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ValueError("reconnect_delay must be positive and at most max_reconnect_delay")
        self._redis = redis
        # Pub/sub channels are server-wide, not per database: the namespace keeps
        # deployments (and test runs) sharing one Redis apart.
        self._sharded = redis.topology == "cluster"
        self._prefix = f"{{{namespace}}}:" if self._sharded else f"{namespace}:"
        self._queue_size = queue_size
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._subscribe_timeout = subscribe_timeout
        # Per channel, each group's members in the order they came: the first leads.
        # A subscriber outside any group is a group of one, keyed by itself.
        self._subscribers: dict[str, dict[Hashable, list[Subscription]]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: PubSub | None = None
        # Set when a cluster pub/sub gets its first channel: until then it has no
        # connection to wait on (see `_session`).
        self._has_channels = asyncio.Event()
        # Held while the pub/sub connection is swapped or its subscriptions change.
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._outage = False
        self._publish_outage = False
        # The reader's attempt that last connected; its backoff counts from there. The
        # first attempt counts as one, so a first failure waits `reconnect_delay`.
        self._connected_on = 1
        self.published = 0
        self.publish_failures = 0
        self.received = 0
        self.dropped = 0
        self.malformed = 0
        self.reconnects = 0
        self.answered_for_followers = 0

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._pubsub is not None

    def subscribers(self, channel: str) -> int:
        """How many local subscribers `channel` has now (for metrics and tests)."""
        return sum(map(len, self._subscribers.get(channel, {}).values()))

    def waiting(self, channel: str) -> int:
        """How many local subscribers of `channel` wait for their next event (for tests)."""
        groups = self._subscribers.get(channel, {}).values()
        return sum(subscription.waiting for members in groups for subscription in members)

    async def start(self) -> None:
        if self._closed:
            raise StoreMisuse("cannot restart an event bus once closed; create a new one")
        if self._reader is not None:
            raise StoreMisuse("the event bus is already started")
        self._reader = asyncio.create_task(self._read(), name="polygraph-event-bus")

    async def aclose(self) -> None:
        """Stop reading and end every subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for groups in self._subscribers.values():
            for members in groups.values():
                for subscription in members:
                    subscription._close()
        self._subscribers.clear()

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def publish(self, channel: str, event: Mapping[str, Any]) -> None:
        """Send `event` to every process subscribed to `channel`; never raises.

        Events are best-effort: a failure is counted and logged, and the caller,
        whose write already succeeded, carries on.
        """
        await self.publish_all([(channel, event)])

    async def publish_all(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Each `(channel, event)` as `publish` sends it, in order and in one round trip
        (a pipeline) on a single Redis server; on a cluster, one each, since their
        channels may live on different shards. Never raises."""
        if not events:
            return
        try:
            sent = [(self._prefix + channel, orjson.dumps(event)) for channel, event in events]
            cluster = self._redis.cluster if self._sharded else None
            if cluster is not None:
                for channel, payload in sent:
                    roundtrips.record("redis")
                    await cluster.spublish(channel, payload)
            elif len(sent) == 1:
                roundtrips.record("redis")
                await self._redis.client.publish(*sent[0])
            else:
                pipe = self._redis.client.pipeline(transaction=False)
                for channel, payload in sent:
                    pipe.publish(channel, payload)
                roundtrips.record("redis")
                await pipe.execute()
        except Exception as exc:
            self.publish_failures += len(events)
            if not isinstance(exc, UNAVAILABLE_ERRORS):
                logger.error(
                    "%d event(s) on %s not published",
                    len(events),
                    ", ".join(sorted({channel for channel, _ in events})),
                    exc_info=exc,
                )
            elif not self._publish_outage:
                # Once per outage: every mutation publishes, so the log would flood.
                self._publish_outage = True
                logger.warning("events are not published while redis is unreachable: %s", exc)
        else:
            self.published += len(events)
            if self._publish_outage:
                self._publish_outage = False
                logger.warning(
                    "events are published again (%d failures since start)", self.publish_failures
                )

    @asynccontextmanager
    async def subscribe(
        self, channel: str, *, group: Hashable | None = None, tag: object = None
    ) -> AsyncIterator[Subscription]:
        """Events on `channel` from now on, until the block exits or the bus closes.

        Subscribers with the same `group` answer events alike: one answers for all (see
        the module docstring). `tag` goes on the subscription, for whoever answers for it.
        Returns once Redis confirmed the subscription, or after `subscribe_timeout`
        while Redis is away (the bus subscribes again when it is back).
        """
        if self._reader is None or self._closed:
            raise StoreMisuse("the event bus is not running; call `await bus.start()`")
        subscription = Subscription(self, channel, self._queue_size, tag)
        groups = self._subscribers.setdefault(channel, {})
        key: Hashable = subscription if group is None else ("group", group)
        groups.setdefault(key, []).append(subscription)
        try:
            await self._listen(channel)
            yield subscription
        finally:
            self._leave(groups, key, subscription)
            if not groups and self._subscribers.get(channel) is groups:
                del self._subscribers[channel]
                await self._unlisten(channel)

    @staticmethod
    def _leave(
        groups: dict[Hashable, list[Subscription]], key: Hashable, subscription: Subscription
    ) -> None:
        members = groups[key]
        members.remove(subscription)
        if not members:
            del groups[key]
        # What a leader had not answered yet, each follower answers itself (a
        # follower's own events owe no one).
        subscription._hand_over_all()
        subscription._close()

    def _count_drop(self) -> None:
        self.dropped += 1

    async def _listen(self, channel: str) -> None:
        confirmed = self._confirmed.setdefault(channel, asyncio.Event())
        if confirmed.is_set():
            return
        async with self._lock:
            if self._pubsub is not None:
                # A broken connection is the reader's to notice; it resubscribes everything.
                with contextlib.suppress(*UNAVAILABLE_ERRORS):
                    await self._subscribe(self._pubsub, [self._prefix + channel])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(confirmed.wait(), self._subscribe_timeout)

    async def _unlisten(self, channel: str) -> None:
        async with self._lock:
            if channel in self._subscribers:
                return  # someone subscribed again meanwhile
            self._confirmed.pop(channel, None)
            if self._pubsub is not None and not self._closed:
                with contextlib.suppress(*UNAVAILABLE_ERRORS):
                    if isinstance(self._pubsub, ClusterPubSub):
                        await self._pubsub.sunsubscribe(self._prefix + channel)
                    else:
                        await self._pubsub.unsubscribe(self._prefix + channel)

    async def _read(self) -> None:
        async for attempt in AsyncRetrying(
            wait=self._reconnect_wait, before_sleep=self._lost, reraise=True
        ):
            with attempt:
                await self._session(attempt.retry_state.attempt_number)

    async def _session(self, attempt: int) -> NoReturn:
        """Connect, subscribe to every channel with subscribers, and dispatch messages
        until the connection fails."""
        cluster = self._redis.cluster if self._sharded else None
        pubsub = cluster.pubsub() if cluster is not None else self._redis.client.pubsub()
        try:
            if cluster is not None:
                # A cluster pub/sub connects to a node per channel; this checks that
                # the cluster answers at all.
                await cluster.initialize()
            else:
                await pubsub.connect()  # type: ignore[no-untyped-call]
            async with self._lock:
                channels = [self._prefix + channel for channel in self._subscribers]
                if channels:
                    await self._subscribe(pubsub, channels)
                self._pubsub = pubsub
            self._connected_on = attempt
            if self._outage:
                self._outage = False
                self.reconnects += 1
                logger.warning("event bus reconnected to redis")
            while True:
                if isinstance(pubsub, ClusterPubSub):
                    if not pubsub.node_pubsub_mapping:
                        # No channel yet, so no connection: wait for one, not in a hot loop.
                        self._has_channels.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._has_channels.wait(), _POLL_S)
                        continue
                    message = await pubsub.get_sharded_message(timeout=_POLL_S)
                else:
                    message = await pubsub.get_message(timeout=_POLL_S)
                if message is not None:
                    self._dispatch(message)
        finally:
            self._pubsub = None
            for confirmed in self._confirmed.values():
                confirmed.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _subscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        if isinstance(pubsub, ClusterPubSub):
            await pubsub.ssubscribe(*channels)
            self._has_channels.set()
        else:
            await pubsub.subscribe(*channels)

    def _reconnect_wait(self, state: RetryCallState) -> float:
        # Doubling from `reconnect_delay` since the last connection that worked, with
        # jitter, so that many gateways do not reconnect in lockstep.
        failed_since = max(0, state.attempt_number - self._connected_on)
        delay: float = min(self._reconnect_delay * 2**failed_since, self._max_reconnect_delay)
        return delay * random.uniform(0.5, 1.0)

    def _lost(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, UNAVAILABLE_ERRORS):
            if not self._outage:
                self._outage = True
                logger.warning(
                    "event bus lost redis (%s); reconnecting, events published"
                    " meanwhile are missed",
                    str(failure) or type(failure).__name__,
                )
        else:
            # Keep the bus alive through the unexpected too; the backoff stops a hot loop.
            logger.error("event bus reader failed; reconnecting", exc_info=failure)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in _DELIVERIES and kind not in _CONFIRMATIONS:
            return
        name = message["channel"]
        channel = (name.decode() if isinstance(name, bytes) else name).removeprefix(self._prefix)
        if kind in _CONFIRMATIONS:
            if channel in self._confirmed:
                self._confirmed[channel].set()
            return
        self.received += 1
        try:
            event = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            self.malformed += 1
            logger.warning("ignored an event on %s that is not a JSON object", channel)
            return
        # One object for all: they share its memo, hence the work derived from it.
        shared = Event(event)
        for members in tuple(self._subscribers.get(channel, {}).values()):
            # The newest follower first: the leader answers them from the end.
            members[0]._offer(shared, members[:0:-1])
