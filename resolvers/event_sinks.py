"""Event sinks: admins register HTTP endpoints that receive task and agent events.

Admins only, for every field and mutation: a sink receives every task's and agent's
data as it changes, and makes the gateway send requests to a URL of the caller's
choosing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from uuid import UUID

from resolvers.auth import Role, require
from resolvers.context import RequestContext
from stores.postgres.records import EventSink

SECRET_PREFIX = "whsec_"


async def create_sink(
    ctx: RequestContext,
    *,
    url: str,
    events: Sequence[str],
    description: str,
    idempotency_key: str | None = None,
) -> tuple[EventSink, str]:
    """The new sink and its signing secret, shown to this call (and to its retries with
    the same idempotency key) only."""
    require(ctx.principal, at_least=Role.ADMIN)
    delivery = ctx.stores.event_sinks
    return await ctx.stores.postgres.event_sinks.create(
        ctx.write_context(idempotency_key),
        url=url,
        events=events,
        description=description,
        secret=SECRET_PREFIX + secrets.token_urlsafe(32),
        allow_loopback=delivery is not None and delivery.options.allow_loopback,
    )


async def list_sinks(ctx: RequestContext) -> list[EventSink]:
    require(ctx.principal, at_least=Role.ADMIN)
    return await ctx.stores.postgres.event_sinks.list_sinks()


async def delete_sink(
    ctx: RequestContext, sink_id: UUID, *, idempotency_key: str | None = None
) -> bool:
    require(ctx.principal, at_least=Role.ADMIN)
    return await ctx.stores.postgres.event_sinks.delete(ctx.write_context(idempotency_key), sink_id)


async def pause_sink(
    ctx: RequestContext, sink_id: UUID, paused: bool, *, idempotency_key: str | None = None
) -> EventSink:
    require(ctx.principal, at_least=Role.ADMIN)
    # Audited, so the operation's end wakes the delivery (`operation_finished`): what
    # waited while the sink was paused goes at once.
    return await ctx.stores.postgres.event_sinks.set_paused(
        ctx.write_context(idempotency_key), sink_id, paused
    )
