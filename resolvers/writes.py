"""What every mutation does around its store write: permission, projection wait, events."""

from __future__ import annotations

import logging

from resolvers.context import RequestContext
from stores.postgres import outbox

logger = logging.getLogger(__name__)


# A replayed or no-op write queued nothing of its own; it waits for what is pending,
# unless that is a backlog no bounded wait would see through.
_MAX_PENDING_TO_WAIT_FOR = 1000


async def await_projection(ctx: RequestContext, wait: bool) -> bool:
    """Wait, bounded, until Neo4j shows the outbox rows this request queued (read your
    writes).

    Returns True when the graph caught up in time, False at once while the projector
    knows Neo4j is down; the write itself is durable either way.
    """
    projector = ctx.stores.projector
    if not wait or projector is None or projector.graph_unavailable:
        return False
    own = ctx.outbox_ids
    if not own:
        pending = await outbox.pending_through(ctx.stores.postgres, _MAX_PENDING_TO_WAIT_FOR)
        if pending is None:
            return False
        own = pending
    return await projector.wait_for_all(own, ctx.projection_wait_s)


async def publish(ctx: RequestContext, channel: str, event: dict[str, object]) -> None:
    """Best effort: subscribers miss an event rather than a client losing its write."""
    events = ctx.stores.events
    if events is not None:
        await events.publish(channel, event)
