"""Subscriptions' source: events from Redis pub/sub, so every replica sees every write."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.loaders import event_loaders
from stores.redis.events import Event


def live_events(ctx: RequestContext, channel: str) -> AsyncGenerator[Event, None]:
    """The events published on `channel` from now on. Before each is yielded, `ctx`
    gets fresh loaders, so what a subscriber reads about it is current."""
    events = ctx.stores.events
    if events is None:
        raise ClientError(ErrorCode.STORE_UNAVAILABLE, "live updates are not available")
    stores = ctx.stores

    async def stream() -> AsyncGenerator[Event, None]:
        async with events.subscribe(channel) as subscription:
            async for event in subscription:
                ctx.loaders = event_loaders(stores, event)
                yield event

    return stream()
