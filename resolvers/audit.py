"""The audit log: reading it, and the entries written beside writes of other stores."""

from __future__ import annotations

from resolvers.context import RequestContext
from stores.postgres.inputs import AuditFilter
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import AuditEntry, WriteContext


async def list_entries(
    ctx: RequestContext, filter: AuditFilter, page: PageRequest, *, with_total: bool
) -> Page[AuditEntry]:
    return await ctx.stores.postgres.audit.list(filter, page, with_total=with_total)


async def record(
    ctx: RequestContext,
    action: str,
    resource_type: str,
    resource_id: object,
    *,
    write: WriteContext | None = None,
) -> None:
    """An entry for a change PostgreSQL did not make itself (sessions live in Redis).
    `write` names the actor when it is not the caller, as at login."""
    await ctx.stores.postgres.audit.record(
        write or ctx.write_context(), action, resource_type, resource_id
    )
