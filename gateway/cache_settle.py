"""Read your writes through the entity cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from resolvers.context import RequestContext


class SettleEntityCache(SchemaExtension):
    """After a mutation, waits until this process has dropped what it cached of the rows
    the mutation changed (`EntityCache.settle`), before the response leaves: the client's
    next read, on any replica, sees its write."""

    async def on_execute(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        if not isinstance(context, RequestContext):
            return
        cache = context.stores.entity_cache
        if cache is None:
            return
        try:
            mutation = self.execution_context.operation_type is OperationType.MUTATION
        except RuntimeError:  # no operation to speak of
            return
        if mutation:
            await cache.settle()
