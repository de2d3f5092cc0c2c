"""Workflow reads and writes; permissions are checked by the fields that call these."""

from __future__ import annotations

from uuid import UUID

from resolvers.context import RequestContext
from stores.postgres.inputs import WorkflowFilter, WorkflowOrder
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import JSON, Workflow


async def list_workflows(
    ctx: RequestContext,
    filter: WorkflowFilter,
    order: WorkflowOrder,
    page: PageRequest,
    *,
    with_total: bool,
) -> Page[Workflow]:
    return await ctx.stores.postgres.workflows.list(filter, order, page, with_total=with_total)


async def create_workflow(
    ctx: RequestContext, name: str, definition: JSON, *, idempotency_key: str | None
) -> Workflow:
    return await ctx.stores.postgres.workflows.create(
        ctx.write_context(idempotency_key), name, definition
    )


async def update_workflow(
    ctx: RequestContext,
    workflow_id: UUID,
    *,
    expected_version: int | None,
    name: str | None,
    definition: JSON | None,
    status: str | None,
    idempotency_key: str | None = None,
) -> Workflow:
    return await ctx.stores.postgres.workflows.update(
        ctx.write_context(idempotency_key),
        workflow_id,
        expected_version=expected_version,
        name=name,
        definition=definition,
        status=status,
    )
