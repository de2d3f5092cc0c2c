"""Read your writes through the entity cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from resolvers.context import RequestContext


class SettleEntityCache(SchemaExtension):
    """After a mutation that wrote to PostgreSQL, waits until this process has dropped
    what it cached of the rows the mutation changed (`EntityCache.settle`), before the
    response leaves: the client's next read on this gateway sees its write (others drop
    their copies as PostgreSQL's notice reaches them, within milliseconds).

    Every write to an entity records an audit row or queues an outbox row in its
    transaction, so a mutation that did neither (a presence heartbeat in Redis, a
    refused input) changed nothing cached and skips the round trip."""

    async def on_execute(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        if not isinstance(context, RequestContext) or context.stores.entity_cache is None:
            return
        try:
            mutation = self.execution_context.operation_type is OperationType.MUTATION
        except RuntimeError:  # no operation to speak of
            return
        if mutation:
            await settle_writes(context)


async def settle_writes(context: RequestContext) -> None:
    """After a mutation: if it wrote, wait for the entity cache to drop what it held of
    the rows written. Whichever way the mutation ran (gateway/prepared.py)."""
    cache = context.stores.entity_cache
    if cache is not None and (context.outbox_ids or context.audited):
        await cache.settle()
