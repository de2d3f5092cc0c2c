"""Task lists and writes: permissions, the state machine's verbs, the events they raise."""

from __future__ import annotations

from uuid import UUID

from resolvers.agent_grants import is_operator, require_acts_as
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.task_search import embedding_wanted
from resolvers.writes import publish
from stores.postgres.inputs import UNSET, TaskFilter, TaskInput, TaskOrder, TaskPatch
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import JSON, Task

TASK_UPDATED_CHANNEL = "task.updated"

# The task event each target status records (see stores/postgres/task_states.py).
_CHANGE_BY_STATUS = {
    "assigned": "assigned",
    "in_progress": "started",
    "completed": "completed",
    "failed": "failed",
    "pending": "retried",
    "cancelled": "cancelled",
}


async def list_tasks(
    ctx: RequestContext,
    filter: TaskFilter,
    order: TaskOrder,
    page: PageRequest,
    *,
    with_total: bool,
) -> Page[Task]:
    return await ctx.stores.postgres.tasks.list(filter, order, page, with_total=with_total)


async def create_task(ctx: RequestContext, data: TaskInput, *, idempotency_key: str | None) -> Task:
    require(ctx.principal, at_least=Role.OPERATOR)
    task = await ctx.stores.postgres.tasks.create(ctx.write_context(idempotency_key), data)
    await _task_event(ctx, task, "created")
    return task


async def update_task(
    ctx: RequestContext,
    task_id: UUID,
    patch: TaskPatch,
    *,
    expected_version: int | None,
    idempotency_key: str | None = None,
) -> Task:
    require(ctx.principal, at_least=Role.OPERATOR)
    task = await ctx.stores.postgres.tasks.update(
        ctx.write_context(idempotency_key), task_id, patch, expected_version=expected_version
    )
    if patch.title is not UNSET or patch.description is not UNSET:
        embedding_wanted(ctx)
    await _task_event(ctx, task, "updated")
    return task


async def transition_task(
    ctx: RequestContext,
    task_id: UUID,
    to_status: str,
    *,
    expected_version: int | None,
    idempotency_key: str | None = None,
    assignee_id: UUID | None = None,
    result: JSON | None = None,
    error_message: str | None = None,
) -> Task:
    await _require_may_move(ctx, task_id, to_status)
    task = await ctx.stores.postgres.tasks.transition(
        ctx.write_context(idempotency_key),
        task_id,
        to_status,
        expected_version=expected_version,
        assignee_id=assignee_id,
        result=result,
        error_message=error_message,
    )
    await _task_event(ctx, task, _CHANGE_BY_STATUS[to_status])
    return task


async def add_dependency(
    ctx: RequestContext, task_id: UUID, depends_on_id: UUID, *, idempotency_key: str | None
) -> bool:
    """True when the edge is new; False when it was there already."""
    require(ctx.principal, at_least=Role.OPERATOR)
    _, added = await ctx.stores.postgres.tasks.add_dependency(
        ctx.write_context(idempotency_key), task_id, depends_on_id
    )
    return added


async def remove_dependency(
    ctx: RequestContext, task_id: UUID, depends_on_id: UUID, *, idempotency_key: str | None
) -> bool:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await ctx.stores.postgres.tasks.remove_dependency(
        ctx.write_context(idempotency_key), task_id, depends_on_id
    )


async def _require_may_move(ctx: RequestContext, task_id: UUID, to_status: str) -> None:
    # Agents drive their own tasks through start/complete/fail; the rest needs an operator.
    principal = ctx.principal
    if is_operator(principal) or to_status == "assigned":
        require(principal, at_least=Role.OPERATOR)
        return
    require(principal, at_least=Role.AGENT)
    task = await ctx.loaders.task_by_id.load(task_id)
    if task is None or task.assignee_id is None:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            "agents may only move tasks assigned to the agent their session is bound to",
        )
    await require_acts_as(ctx.stores, principal, task.assignee_id, doing="moving a task")


async def _task_event(ctx: RequestContext, task: Task, change: str) -> None:
    await publish(
        ctx,
        TASK_UPDATED_CHANNEL,
        {
            "task_id": str(task.id),
            "status": task.status,
            "assignee_id": str(task.assignee_id) if task.assignee_id else None,
            "change": change,
            "version": task.version,
            "at": task.updated_at.isoformat(),
        },
    )
