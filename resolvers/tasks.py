"""Task lists and writes: permissions, the state machine's verbs, the events they raise."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from resolvers.agent_grants import is_operator, require_acts_as, require_claimer
from resolvers.auth import Role, require
from resolvers.context import RequestContext, Stores
from resolvers.errors import ClientError, ErrorCode
from resolvers.task_search import embedding_wanted
from stores.postgres.inputs import UNSET, TaskFilter, TaskInput, TaskOrder, TaskPatch
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import JSON, Task

TASK_UPDATED_CHANNEL = "task.updated"
# Wakes claimers: a task may have become ready (resolvers/claims.py).
TASK_AVAILABLE_CHANNEL = "task.available"

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
    await publish_task_changes(ctx.stores, [task], "created", available=[task])
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
    await publish_task_update(ctx.stores, task, "updated")
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
    fencing_token: int | None = None,
) -> Task:
    """A claimer (a session bound to an agent) moving a claimed task sends its claim's
    `fencing_token`; a stale one is refused with CONFLICT."""
    holder_id = await _require_may_move(ctx, task_id, to_status, fencing_token)
    task = await ctx.stores.postgres.tasks.transition(
        ctx.write_context(idempotency_key),
        task_id,
        to_status,
        expected_version=expected_version,
        assignee_id=assignee_id,
        result=result,
        error_message=error_message,
        fencing_token=fencing_token,
        holder_id=holder_id,
    )
    # What the move made ready: the task back in the queue, or the dependents a
    # completion freed.
    ready: Sequence[Task] = [task]
    if task.status == "completed" and ctx.stores.events is not None:
        ready = await ctx.stores.postgres.claims.ready_dependents(task.id)
    await publish_task_changes(ctx.stores, [task], _CHANGE_BY_STATUS[to_status], available=ready)
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
    removed = await ctx.stores.postgres.tasks.remove_dependency(
        ctx.write_context(idempotency_key), task_id, depends_on_id
    )
    if removed:
        # The task may wait for nothing now.
        task = await ctx.loaders.task_by_id.load(task_id)
        await announce_available(ctx.stores, [task] if task is not None else [])
    return removed


async def _require_may_move(
    ctx: RequestContext, task_id: UUID, to_status: str, fencing_token: int | None
) -> UUID | None:
    """Who moves the task as its holder: the agent a non-operator acts as (the store
    then holds it to the task's claim); None for an operator."""
    # Agents drive their own tasks through start/complete/fail; the rest needs an operator.
    principal = ctx.principal
    if is_operator(principal) or to_status == "assigned":
        require(principal, at_least=Role.OPERATOR)
        return None
    require(principal, at_least=Role.AGENT)
    if fencing_token is not None:
        # A claimer: the token proves the claim (a stale one is a CONFLICT, whoever
        # holds the task now), the session and its grant prove the agent.
        return await require_claimer(ctx, doing="moving a claimed task")
    task = await ctx.loaders.task_by_id.load(task_id)
    if task is None or task.assignee_id is None:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            "agents may only move tasks assigned to the agent their session is bound to",
        )
    await require_acts_as(ctx.stores, principal, task.assignee_id, doing="moving a task")
    return task.assignee_id


async def publish_task_changes(
    stores: Stores, changed: Sequence[Task], change: str, *, available: Sequence[Task] = ()
) -> None:
    """Best effort, in one round trip: subscribers hear `change` of each task of
    `changed`, and claimers on every replica are woken for each pending task of
    `available`: it may have become ready (PostgreSQL decides at the claim; the
    signal only says "try again"). A failure loses events, never the write."""
    if stores.events is None:
        return
    events = [(TASK_UPDATED_CHANNEL, _update_event(task, change)) for task in changed]
    events += [
        (TASK_AVAILABLE_CHANNEL, _available_event(task))
        for task in available
        if task.status == "pending"
    ]
    await stores.events.publish_all(events)


async def publish_task_update(stores: Stores, task: Task, change: str) -> None:
    """`change` of `task`, to its subscribers alone."""
    await publish_task_changes(stores, [task], change)


async def announce_available(stores: Stores, tasks: Sequence[Task]) -> None:
    """The pending tasks of `tasks`, to claimers alone."""
    await publish_task_changes(stores, [], "", available=tasks)


def _update_event(task: Task, change: str) -> JSON:
    return {
        "task_id": str(task.id),
        "status": task.status,
        "assignee_id": str(task.assignee_id) if task.assignee_id else None,
        "change": change,
        "version": task.version,
        "at": task.updated_at.isoformat(),
    }


def _available_event(task: Task) -> JSON:
    return {
        "task_id": str(task.id),
        "repository": task.repository,
        "required_capabilities": list(task.required_capabilities),
        "priority": task.priority,
    }
