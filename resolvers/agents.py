"""Agent lists and writes: who may write, and what follows a write (projection, events)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from resolvers.agent_grants import require_acts_as
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.loaders import settle_tasks_pages
from resolvers.writes import publish
from stores.postgres.inputs import (
    AgentFilter,
    AgentInput,
    AgentOrder,
    AgentPatch,
    TasksOfEach,
    Unset,
)
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import Agent, AgentRelationship
from stores.postgres.tasks import AssigneeTasks

AGENT_STATUS_CHANNEL = "agent.status_changed"


async def list_agents(
    ctx: RequestContext,
    filter: AgentFilter,
    order: AgentOrder,
    page: PageRequest,
    *,
    with_total: bool,
) -> Page[Agent]:
    return await ctx.stores.postgres.agents.list(filter, order, page, with_total=with_total)


async def list_agent_rows(
    ctx: RequestContext,
    filter: AgentFilter,
    order: AgentOrder,
    page: PageRequest,
    columns: Sequence[str],
    *,
    with_total: bool,
) -> Page[tuple[Any, ...]]:
    """`list_agents` as tuples of `columns` (see schema/rows.py)."""
    return await ctx.stores.postgres.agents.list_columns(
        filter, order, page, columns, with_total=with_total
    )


async def list_agent_rows_with_tasks(
    ctx: RequestContext,
    filter: AgentFilter,
    order: AgentOrder,
    page: PageRequest,
    columns: Sequence[str],
    tasks: TasksOfEach,
    *,
    with_total: bool,
) -> tuple[Page[tuple[Any, ...]], Sequence[AssigneeTasks[tuple[Any, ...]]], Callable[[], None]]:
    """`list_agent_rows`, with each agent's page of `tasks` read in the same statement
    (in the rows' order), and a function that settles those pages for `Agent.tasks` to
    answer from (`settle_tasks_pages`): to be called before any agent of the page can
    ask, and only if one can (the planned executor may answer from the pages alone)."""
    rows, pages = await ctx.stores.postgres.agents.list_columns_with_tasks(
        filter, order, page, columns, tasks, with_total=with_total
    )
    loader = ctx.loaders.tasks_by_agent_id

    def settle() -> None:
        settle_tasks_pages(loader, [row[0] for row in rows.items], tasks, pages)

    return rows, pages, settle


async def create_agent(
    ctx: RequestContext, data: AgentInput, *, idempotency_key: str | None
) -> Agent:
    require(ctx.principal, at_least=Role.OPERATOR)
    agent = await ctx.stores.postgres.agents.create(ctx.write_context(idempotency_key), data)
    await _status_event(ctx, agent, previous=None)
    return agent


async def update_agent(
    ctx: RequestContext,
    agent_id: UUID,
    patch: AgentPatch,
    *,
    expected_version: int | None,
    idempotency_key: str | None = None,
) -> Agent:
    if _status_only(patch):
        # An agent may report its own status; everything else needs an operator.
        await require_acts_as(ctx.stores, ctx.principal, agent_id, doing="setting its status")
    else:
        require(ctx.principal, at_least=Role.OPERATOR)
    before = await ctx.loaders.agent_by_id.load(agent_id)
    agent = await ctx.stores.postgres.agents.update(
        ctx.write_context(idempotency_key), agent_id, patch, expected_version=expected_version
    )
    await _status_event(ctx, agent, previous=before.status if before else None)
    return agent


async def delete_agent(
    ctx: RequestContext,
    agent_id: UUID,
    *,
    expected_version: int | None,
    idempotency_key: str | None = None,
) -> Agent:
    require(ctx.principal, at_least=Role.ADMIN)
    return await ctx.stores.postgres.agents.delete(
        ctx.write_context(idempotency_key), agent_id, expected_version=expected_version
    )


async def relate_agents(
    ctx: RequestContext,
    source_id: UUID,
    target_id: UUID,
    type: str,
    weight: float,
    *,
    idempotency_key: str | None,
) -> AgentRelationship:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await ctx.stores.postgres.agents.relate(
        ctx.write_context(idempotency_key), source_id, target_id, type, weight
    )


async def unrelate_agents(
    ctx: RequestContext,
    source_id: UUID,
    target_id: UUID,
    type: str,
    *,
    idempotency_key: str | None = None,
) -> bool:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await ctx.stores.postgres.agents.unrelate(
        ctx.write_context(idempotency_key), source_id, target_id, type
    )


def _status_only(patch: AgentPatch) -> bool:
    changed = {
        name
        for name in AgentPatch.__dataclass_fields__
        if not isinstance(getattr(patch, name), Unset)
    }
    return changed <= {"status"}


async def _status_event(ctx: RequestContext, agent: Agent, *, previous: str | None) -> None:
    if previous == agent.status:
        return
    await publish(
        ctx,
        AGENT_STATUS_CHANNEL,
        {
            "agent_id": str(agent.id),
            "name": agent.name,
            "status": agent.status,
            "previous_status": previous,
            "version": agent.version,
            "at": agent.updated_at.isoformat(),
        },
    )
