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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, NoReturn, TypeVar, cast

import orjson
from redis.asyncio.client import PubSub
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


class Subscription:
    """One local subscriber's events on one channel, in order; iterate it with `async for`.

    Events are shared between the local subscribers of a channel, hence read-only (`Event`).
    """

    __slots__ = ("_bus", "_closed", "_queue", "channel", "dropped")

    def __init__(self, bus: EventBus, channel: str, queue_size: int) -> None:
        self._bus = bus
        self.channel = channel
        # Events this subscriber lost because it fell `queue_size` behind.
        self.dropped = 0
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_size)
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def _offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._bus._count_drop()
        self._queue.put_nowait(event)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The end marker may push out an event unread: the subscriber is leaving anyway.
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class EventBus:
    """Publishes to and fans out from Redis pub/sub; `start()` before subscribing.

    Counters, for metrics: `published`, `publish_failures`, `received`, `dropped`,
    `malformed`, `reconnects`.
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
        self._prefix = f"{namespace}:"
        self._queue_size = queue_size
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._subscribe_timeout = subscribe_timeout
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: PubSub | None = None
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

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._pubsub is not None

    def subscribers(self, channel: str) -> int:
        """How many local subscribers `channel` has now (for metrics and tests)."""
        return len(self._subscribers.get(channel, ()))

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
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
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
        try:
            payload = orjson.dumps(event)
            roundtrips.record("redis")
            await self._redis.client.publish(self._prefix + channel, payload)
        except Exception as exc:
            self.publish_failures += 1
            if not isinstance(exc, UNAVAILABLE_ERRORS):
                logger.error("event on %s not published", channel, exc_info=exc)
            elif not self._publish_outage:
                # Once per outage: every mutation publishes, so the log would flood.
                self._publish_outage = True
                logger.warning("events are not published while redis is unreachable: %s", exc)
        else:
            self.published += 1
            if self._publish_outage:
                self._publish_outage = False
                logger.warning(
                    "events are published again (%d failures since start)", self.publish_failures
                )

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """Events on `channel` from now on, until the block exits or the bus closes.

        Returns once Redis confirmed the subscription, or after `subscribe_timeout`
        while Redis is away (the bus subscribes again when it is back).
        """
        if self._reader is None or self._closed:
            raise StoreMisuse("the event bus is not running; call `await bus.start()`")
        subscription = Subscription(self, channel, self._queue_size)
        subscribers = self._subscribers.setdefault(channel, set())
        subscribers.add(subscription)
        try:
            await self._listen(channel)
            yield subscription
        finally:
            subscribers.discard(subscription)
            subscription._close()
            if not subscribers and self._subscribers.get(channel) is subscribers:
                del self._subscribers[channel]
                await self._unlisten(channel)

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
                    await self._pubsub.subscribe(self._prefix + channel)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(confirmed.wait(), self._subscribe_timeout)

    async def _unlisten(self, channel: str) -> None:
        async with self._lock:
            if channel in self._subscribers:
                return  # someone subscribed again meanwhile
            self._confirmed.pop(channel, None)
            if self._pubsub is not None and not self._closed:
                with contextlib.suppress(*UNAVAILABLE_ERRORS):
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
        pubsub = self._redis.client.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
            async with self._lock:
                channels = [self._prefix + channel for channel in self._subscribers]
                if channels:
                    await pubsub.subscribe(*channels)
                self._pubsub = pubsub
            self._connected_on = attempt
            if self._outage:
                self._outage = False
                self.reconnects += 1
                logger.warning("event bus reconnected to redis")
            while True:
                message = await pubsub.get_message(timeout=_POLL_S)
                if message is not None:
                    self._dispatch(message)
        finally:
            self._pubsub = None
            for confirmed in self._confirmed.values():
                confirmed.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

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
        if kind not in ("message", "subscribe"):
            return
        name = message["channel"]
        channel = (name.decode() if isinstance(name, bytes) else name).removeprefix(self._prefix)
        if kind == "subscribe":
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
        for subscription in tuple(self._subscribers.get(channel, ())):
            subscription._offer(shared)
