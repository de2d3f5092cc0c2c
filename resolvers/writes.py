"""What every mutation does around its store write: permission, projection wait, events."""

from __future__ import annotations

import logging

from resolvers.context import RequestContext
from stores.postgres import outbox

logger = logging.getLogger(__name__)


async def await_projection(ctx: RequestContext, wait: bool) -> bool:
    """Wait, bounded, until Neo4j shows every change committed so far (read your writes).

    Returns True when the graph caught up in time; the write itself is durable either way.
    """
    projector = ctx.stores.projector
    if not wait or projector is None:
        return False
    latest = await outbox.latest_id(ctx.stores.postgres)
    if latest is None:
        return True
    projector.wake()
    return await projector.wait_for(latest, ctx.projection_wait_s)


async def publish(ctx: RequestContext, channel: str, event: dict[str, object]) -> None:
    """Best effort: subscribers miss an event rather than a client losing its write."""
    events = ctx.stores.events
    if events is not None:
        await events.publish(channel, event)
