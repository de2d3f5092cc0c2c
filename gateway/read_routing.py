"""Queries read from PostgreSQL replicas; a principal never misses its own writes.

Only query operations may read from a replica (stores/postgres/replicas.py), and
only from one that has replayed the caller's last write. After a mutation the
primary's WAL position is noted for its principal (stores/redis/write_positions.py):
one more PostgreSQL and one Redis round trip per mutation, and one Redis round
trip per query that reads from PostgreSQL, paid only where replicas are configured.
Anonymous callers cannot be told apart, so their queries have no floor.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from resolvers.context import RequestContext
from stores import StoreError
from stores.postgres.replicas import replica_reads
from stores.redis.write_positions import WritePositions

logger = logging.getLogger(__name__)


class ReadYourWrites(SchemaExtension):
    """Bound to one gateway's write positions by `read_your_writes(positions)`."""

    positions: WritePositions

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if not isinstance(context, RequestContext):
            yield
            return
        try:
            kind = self.execution_context.operation_type
        except Exception:  # no single operation to run: nothing reads
            kind = None
        user_id = context.principal.user_id
        principal = str(user_id) if user_id is not None else None
        if kind is OperationType.QUERY:
            with replica_reads(lambda: self._floor(principal)):
                yield
            return
        yield
        if kind is OperationType.MUTATION and principal is not None:
            await self._note_write(context, principal)

    async def _floor(self, principal: str | None) -> int | None:
        if principal is None:
            return None
        return await self.positions.latest(principal)

    async def _note_write(self, context: RequestContext, principal: str) -> None:
        try:
            position = await context.stores.postgres.wal_position()
        except StoreError as exc:
            # Nothing was written if the primary is away.
            logger.debug("no write position after a mutation: %s", exc)
            return
        try:
            await self.positions.note(principal, position)
        except StoreError as exc:
            logger.warning(
                "write position of a mutation kept in this process only (%s): another"
                " gateway may serve its author's next reads from a replica behind it",
                exc,
            )


def read_your_writes(positions: WritePositions) -> type[ReadYourWrites]:
    """The extension class bound to one app's write positions."""
    return type("BoundReadYourWrites", (ReadYourWrites,), {"positions": positions})
