"""Task mutations: one verb per state-machine move, plus dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import tasks as resolve
from resolvers.context import RequestContext
from resolvers.task_search import embedding_wanted, possible_duplicates
from resolvers.writes import await_projection
from schema.idempotency import idempotency_key
from schema.patch import given, given_nullable
from schema.relay import decode_id
from schema.scalars import JSON
from schema.selection import selects
from schema.task_search import TaskSearchEdge, edges
from schema.tasks import Task
from schema.user_errors import UserError, attempt
from stores.postgres import records
from stores.postgres.inputs import UNSET, TaskInput, TaskPatch

Info = strawberry.Info[RequestContext, None]

WAIT = "Wait, bounded, until the task graph in Neo4j shows this change."
FENCING = (
    "The fencing token claimNextTask returned: required of a claimer moving a claimed task;"
    " a stale one is refused with CONFLICT."
)


@strawberry.input
class CreateTaskInput:
    title: str = strawberry.field(description="1 to 200 characters.")
    description: str = ""
    repository: str | None = None
    type: str = "generic"
    payload: JSON = strawberry.field(default_factory=dict)
    priority: int = strawberry.field(default=5, description="1 (lowest) to 10 (highest).")
    assignee_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Given: the task starts ASSIGNED."
    )
    workflow_id: relay.GlobalID | None = None
    deadline: datetime | None = None
    max_retries: int = 3
    required_capabilities: list[str] = strawberry.field(
        default_factory=list, description="Only a claimer with all of these may claim it."
    )
    worktree_path: str | None = strawberry.field(default=None, description="1 to 1000 characters.")
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)

    def to_store(self, creator_id: UUID | None) -> TaskInput:
        return TaskInput(
            title=self.title,
            description=self.description,
            repository=self.repository,
            type=self.type,
            payload=self.payload,
            priority=self.priority,
            assignee_id=(
                decode_id(self.assignee_id, "Agent", field="assigneeId")
                if self.assignee_id
                else None
            ),
            creator_id=creator_id,
            workflow_id=(
                decode_id(self.workflow_id, "Workflow", field="workflowId")
                if self.workflow_id
                else None
            ),
            deadline=self.deadline,
            max_retries=self.max_retries,
            required_capabilities=self.required_capabilities,
            worktree_path=self.worktree_path,
        )


@strawberry.input(description="Only the fields given change; `null` clears a nullable one.")
class UpdateTaskInput:
    id: relay.GlobalID
    expected_version: int | None = None
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    repository: str | None = strawberry.UNSET
    type: str | None = strawberry.UNSET
    payload: JSON | None = strawberry.UNSET
    priority: int | None = strawberry.UNSET
    workflow_id: relay.GlobalID | None = strawberry.UNSET
    deadline: datetime | None = strawberry.UNSET
    max_retries: int | None = strawberry.UNSET
    required_capabilities: list[str] | None = strawberry.UNSET
    worktree_path: str | None = strawberry.UNSET
    idempotency_key: str | None = idempotency_key()

    def to_patch(self) -> TaskPatch:
        workflow = given_nullable(self.workflow_id)
        return TaskPatch(
            title=given(self.title, field="title"),
            description=given(self.description, field="description"),
            repository=given_nullable(self.repository),
            type=given(self.type, field="type"),
            payload=given(self.payload, field="payload"),
            priority=given(self.priority, field="priority"),
            workflow_id=(
                workflow
                if workflow is UNSET or workflow is None
                else decode_id(workflow, "Workflow", field="workflowId")
            ),
            deadline=given_nullable(self.deadline),
            max_retries=given(self.max_retries, field="maxRetries"),
            required_capabilities=given(self.required_capabilities, field="requiredCapabilities"),
            worktree_path=given_nullable(self.worktree_path),
        )


@strawberry.input
class AssignTaskInput:
    id: relay.GlobalID
    assignee_id: relay.GlobalID
    expected_version: int | None = None
    idempotency_key: str | None = idempotency_key()


@strawberry.input(description="Move a task on: start, cancel or retry it.")
class TaskMoveInput:
    id: relay.GlobalID
    expected_version: int | None = None
    fencing_token: int | None = strawberry.field(default=None, description=FENCING)
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class CompleteTaskInput:
    id: relay.GlobalID
    result: JSON | None = None
    expected_version: int | None = None
    fencing_token: int | None = strawberry.field(default=None, description=FENCING)
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class FailTaskInput:
    id: relay.GlobalID
    error_message: str
    expected_version: int | None = None
    fencing_token: int | None = strawberry.field(default=None, description=FENCING)
    idempotency_key: str | None = idempotency_key()


@strawberry.input(description="`taskId` cannot start before `dependsOnId` completes.")
class TaskDependencyInput:
    task_id: relay.GlobalID
    depends_on_id: relay.GlobalID
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.type
class TaskPayload:
    task: Task | None
    user_errors: list[UserError]
    projected: bool = strawberry.field(description="True when Neo4j already shows the change.")


@strawberry.type
class CreateTaskPayload(TaskPayload):
    @strawberry.field(
        description="Open tasks (pending, assigned, in progress) at least "
        "POLYGRAPH_TASK_DUPLICATE_THRESHOLD similar in meaning to the new one, most similar "
        "first: check them before doing the work twice. Asking for it embeds the new task's "
        "text now (bounded by POLYGRAPH_TASK_DUPLICATE_TIMEOUT_S; that vector becomes the "
        "task's own); null with STORE_UNAVAILABLE when the embedder cannot answer in time."
    )
    async def possible_duplicates(self, info: Info, first: int = 5) -> list[TaskSearchEdge] | None:
        if self.task is None:
            return None
        return edges(await possible_duplicates(info.context, self.task.record, first))


@strawberry.type
class TaskDependencyPayload:
    task: Task | None
    depends_on: Task | None
    changed: bool = strawberry.field(description="False when there was nothing to do.")
    user_errors: list[UserError]
    projected: bool


async def _task_payload(
    info: Info, work: Callable[[], Awaitable[records.Task]], *, wait: bool
) -> TaskPayload:
    async def run() -> Task:
        return Task.from_record(await work())

    task, errors = await attempt(run())
    projected = await await_projection(info.context, wait and task is not None)
    return TaskPayload(task=task, user_errors=errors, projected=projected)


def _id(value: relay.GlobalID) -> UUID:
    return decode_id(value, "Task", field="id")


@strawberry.type
class TaskMutations:
    @strawberry.mutation(
        description="Create a task. Operators and up. The task is written first; its "
        "embedding follows in the background (or at once, for `possibleDuplicates`)."
    )
    async def create_task(self, info: Info, input: CreateTaskInput) -> CreateTaskPayload:
        ctx = info.context
        created = await _task_payload(
            info,
            lambda: resolve.create_task(
                ctx,
                input.to_store(ctx.principal.user_id),
                idempotency_key=input.idempotency_key,
            ),
            wait=input.wait_for_projection,
        )
        if created.task is not None and not selects(info, "possibleDuplicates"):
            embedding_wanted(ctx)
        return CreateTaskPayload(
            task=created.task, user_errors=created.user_errors, projected=created.projected
        )

    @strawberry.mutation(description="Change a task's fields (not its status).")
    async def update_task(self, info: Info, input: UpdateTaskInput) -> TaskPayload:
        ctx = info.context
        return await _task_payload(
            info,
            lambda: resolve.update_task(
                ctx,
                _id(input.id),
                input.to_patch(),
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
            ),
            wait=True,
        )

    @strawberry.mutation(description="PENDING -> ASSIGNED.")
    async def assign_task(self, info: Info, input: AssignTaskInput) -> TaskPayload:
        ctx = info.context
        return await _task_payload(
            info,
            lambda: resolve.transition_task(
                ctx,
                _id(input.id),
                "assigned",
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
                assignee_id=decode_id(input.assignee_id, "Agent", field="assigneeId"),
            ),
            wait=True,
        )

    @strawberry.mutation(description="ASSIGNED -> IN_PROGRESS. The assigned agent or an operator.")
    async def start_task(self, info: Info, input: TaskMoveInput) -> TaskPayload:
        return await _move(info, input, "in_progress")

    @strawberry.mutation(description="IN_PROGRESS -> COMPLETED, with an optional result.")
    async def complete_task(self, info: Info, input: CompleteTaskInput) -> TaskPayload:
        ctx = info.context
        return await _task_payload(
            info,
            lambda: resolve.transition_task(
                ctx,
                _id(input.id),
                "completed",
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
                result=input.result,
                fencing_token=input.fencing_token,
            ),
            wait=True,
        )

    @strawberry.mutation(description="IN_PROGRESS -> FAILED, with the reason.")
    async def fail_task(self, info: Info, input: FailTaskInput) -> TaskPayload:
        ctx = info.context
        return await _task_payload(
            info,
            lambda: resolve.transition_task(
                ctx,
                _id(input.id),
                "failed",
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
                error_message=input.error_message,
                fencing_token=input.fencing_token,
            ),
            wait=True,
        )

    @strawberry.mutation(description="FAILED -> PENDING while retries remain.")
    async def retry_task(self, info: Info, input: TaskMoveInput) -> TaskPayload:
        return await _move(info, input, "pending")

    @strawberry.mutation(description="Any open state -> CANCELLED.")
    async def cancel_task(self, info: Info, input: TaskMoveInput) -> TaskPayload:
        return await _move(info, input, "cancelled")

    @strawberry.mutation(
        description="Add a dependency; refused with CONFLICT if it closes a cycle."
    )
    async def add_task_dependency(
        self, info: Info, input: TaskDependencyInput
    ) -> TaskDependencyPayload:
        return await _dependency(info, input, add=True)

    @strawberry.mutation(description="Remove a dependency.")
    async def remove_task_dependency(
        self, info: Info, input: TaskDependencyInput
    ) -> TaskDependencyPayload:
        return await _dependency(info, input, add=False)


async def _move(info: Info, input: TaskMoveInput, to_status: str) -> TaskPayload:
    ctx = info.context
    return await _task_payload(
        info,
        lambda: resolve.transition_task(
            ctx,
            _id(input.id),
            to_status,
            expected_version=input.expected_version,
            idempotency_key=input.idempotency_key,
            fencing_token=input.fencing_token,
        ),
        wait=True,
    )


async def _dependency(
    info: Info, input: TaskDependencyInput, *, add: bool
) -> TaskDependencyPayload:
    ctx = info.context

    async def run() -> tuple[bool, UUID, UUID]:
        task_id = decode_id(input.task_id, "Task", field="taskId")
        depends_on_id = decode_id(input.depends_on_id, "Task", field="dependsOnId")
        if add:
            added = await resolve.add_dependency(
                ctx, task_id, depends_on_id, idempotency_key=input.idempotency_key
            )
            return added, task_id, depends_on_id
        removed = await resolve.remove_dependency(
            ctx, task_id, depends_on_id, idempotency_key=input.idempotency_key
        )
        return removed, task_id, depends_on_id

    outcome, errors = await attempt(run())
    projected = await await_projection(ctx, input.wait_for_projection and not errors)
    if outcome is None:
        return TaskDependencyPayload(
            task=None, depends_on=None, changed=False, user_errors=errors, projected=False
        )
    changed, task_id, depends_on_id = outcome
    loaded = await Task.load_many(info, [task_id, depends_on_id])
    tasks = {task.record.id: task for task in loaded}
    return TaskDependencyPayload(
        task=tasks.get(task_id),
        depends_on=tasks.get(depends_on_id),
        changed=changed,
        user_errors=errors,
        projected=projected,
    )
