"""Subscriptions' source: events from Redis pub/sub, so every replica sees every write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextvars import ContextVar
from typing import Protocol, TypeVar
from uuid import UUID

from aiodataloader import DataLoader

from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.loaders import event_loaders
from stores.postgres.records import Agent, Task
from stores.redis.events import Event, Subscription


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


R = TypeVar("R", bound=_Versioned)


class SharedAnswers:
    """Set (in `SHARED_ANSWERS`) by the transport around one subscription operation whose
    answers equal those of every other operation with the same `key`: the same
    document, variables and permission scope. Its events then come through the bus's
    group of that key (stores/redis/events.py), and `subscription` is its place there."""

    __slots__ = ("key", "subscription")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.subscription: Subscription | None = None


SHARED_ANSWERS: ContextVar[SharedAnswers | None] = ContextVar("shared_answers", default=None)


def live_events(
    ctx: RequestContext, channel: str, *, shareable: bool = False
) -> AsyncGenerator[Event, None]:
    """The events published on `channel` from now on. Before each is yielded, `ctx`
    gets fresh loaders, so what a subscriber reads about it is current.

    `shareable`: the caller is a subscription that yields at most one value per event,
    decided by the event, its arguments and the principal alone; operations with the
    same document, variables and principal may then share its answers (see
    `SharedAnswers`). One that yields several per event (a metric event's points) or
    waits for a single event (a claim) must not say so."""
    events = ctx.stores.events
    if events is None:
        raise ClientError(ErrorCode.STORE_UNAVAILABLE, "live updates are not available")
    stores = ctx.stores

    async def stream() -> AsyncGenerator[Event, None]:
        shared = SHARED_ANSWERS.get() if shareable else None
        if shared is not None and shared.subscription is not None:
            shared = None  # an operation's second stream: on its own
        stores.subscriptions.open += 1
        try:
            async with events.subscribe(
                channel,
                group=None if shared is None else shared.key,
                tag=shared,
            ) as subscription:
                if shared is not None:
                    shared.subscription = subscription
                async for event in subscription:
                    ctx.loaders = event_loaders(stores, event)
                    yield event
        finally:
            stores.subscriptions.open -= 1

    return stream()


async def agent_of_event(ctx: RequestContext, event: Event, agent_id: UUID) -> Agent | None:
    """Agent `agent_id`, which `event` names, as of that event or later (see
    `_as_of_event`)."""
    return await _as_of_event(
        event, ctx.loaders.agent_by_id, ctx.stores.postgres.agents.by_ids, agent_id
    )


async def task_of_event(ctx: RequestContext, event: Event, task_id: UUID) -> Task | None:
    """Task `task_id`, which `event` names, as of that event or later (see
    `_as_of_event`)."""
    return await _as_of_event(
        event, ctx.loaders.task_by_id, ctx.stores.postgres.tasks.by_ids, task_id
    )


async def _as_of_event(
    event: Event,
    loader: DataLoader[UUID, R | None],
    fetch: Callable[[Sequence[UUID]], Awaitable[Mapping[UUID, R]]],
    key: UUID,
) -> R | None:
    record = await loader.load(key)
    version = event.get("version")
    if record is None or not isinstance(version, int) or record.version >= version:
        return record
    # Redis brought the event before PostgreSQL's notice of the change reached this
    # replica's entity cache, which still holds the row as it was: read it from
    # PostgreSQL, once for every local subscriber of the event.
    fresh = event.memo(f"fresh:{key}", lambda: asyncio.ensure_future(fetch([key])))
    return (await asyncio.shield(fresh)).get(key)
