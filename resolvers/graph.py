"""Graph reads (Neo4j): argument checks and store calls; schema/graph.py shapes the answers."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from stores.graph.records import CriticalPath, Neighbourhood
from stores.postgres.records import Workflow

MAX_DEPTH = 5


async def neighbourhood(
    ctx: RequestContext, agent_id: UUID, depth: int, types: Sequence[str] | None
) -> Neighbourhood:
    require(ctx.principal, at_least=Role.VIEWER)
    if not 1 <= depth <= MAX_DEPTH:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"depth must be between 1 and {MAX_DEPTH}", field="depth"
        )
    return await ctx.stores.graph.queries.neighbourhood(agent_id, depth=depth, types=types)


async def shortest_path(
    ctx: RequestContext, from_id: UUID, to_id: UUID, types: Sequence[str] | None
) -> list[UUID] | None:
    require(ctx.principal, at_least=Role.VIEWER)
    return await ctx.stores.graph.queries.shortest_path(from_id, to_id, types=types)


async def dependents(ctx: RequestContext, task_id: UUID, *, first: int) -> list[UUID]:
    require(ctx.principal, at_least=Role.VIEWER)
    return await ctx.stores.graph.queries.dependents_of(task_id, first=first, transitive=True)


async def task_critical_path(ctx: RequestContext, task_id: UUID) -> list[UUID]:
    require(ctx.principal, at_least=Role.VIEWER)
    return await ctx.stores.graph.queries.task_critical_path(task_id)


async def workflow_critical_path(
    ctx: RequestContext, workflow_id: UUID
) -> tuple[CriticalPath, Workflow] | None:
    """The path from Neo4j, with the workflow's definition to name its steps."""
    require(ctx.principal, at_least=Role.VIEWER)
    path = await ctx.stores.graph.queries.critical_path(workflow_id)
    workflow = await ctx.loaders.workflow_by_id.load(workflow_id)
    if path is None or workflow is None:
        return None
    return path, workflow


async def most_connected(
    ctx: RequestContext, first: int, types: Sequence[str] | None
) -> list[tuple[UUID, int]]:
    require(ctx.principal, at_least=Role.VIEWER)
    if first == 0:
        return []
    found = await ctx.stores.graph.queries.most_connected(first=first, types=types)
    return [(entry.agent_id, entry.degree) for entry in found]
