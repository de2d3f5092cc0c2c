"""The Task node: fields from PostgreSQL, blockers from Neo4j, history from its events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import strawberry
from strawberry import relay
from strawberry.relay.utils import to_base64

from resolvers.context import RequestContext
from schema.enums import TASK_STATUS, TaskStatus
from schema.federation import ENTITY_KEY, entity_by_reference
from schema.relay import CountedConnection, encode_id, node_id_field, nodes_by_ids
from schema.scalars import JSON
from stores.postgres import records

if TYPE_CHECKING:
    from schema.agents import Agent
    from schema.workflows import Workflow

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="One change to a task; the task is the sum of its events.")
class TaskEvent:
    version: int
    type: str
    data: JSON
    actor_id: strawberry.Private[UUID | None]
    created_at: datetime

    @classmethod
    def from_record(cls, event: records.TaskEvent) -> TaskEvent:
        return cls(
            version=event.version,
            type=event.type,
            data=event.data,
            actor_id=event.actor_id,
            created_at=event.created_at,
        )


@strawberry.type(description="A unit of work, assigned to an agent.", directives=[ENTITY_KEY])
class Task(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    title: str
    description: str
    repository: str | None
    type: str
    payload: JSON
    priority: int
    status: TaskStatus
    deadline: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    result: JSON | None
    error_message: str | None
    retry_count: int
    max_retries: int
    created_at: datetime
    updated_at: datetime
    version: int = strawberry.field(description="Send it back as `expectedVersion` to update.")
    record: strawberry.Private[records.Task]

    @classmethod
    def from_record(cls, task: records.Task) -> Task:
        return cls(
            id=str(task.id),
            _id=encode_id("Task", task.id),
            title=task.title,
            description=task.description,
            repository=task.repository,
            type=task.type,
            payload=task.payload,
            priority=task.priority,
            status=TASK_STATUS[task.status],
            deadline=task.deadline,
            started_at=task.started_at,
            completed_at=task.completed_at,
            result=task.result,
            error_message=task.error_message,
            retry_count=task.retry_count,
            max_retries=task.max_retries,
            created_at=task.created_at,
            updated_at=task.updated_at,
            version=task.version,
            record=task,
        )

    @classmethod
    def row_reader(cls, names: frozenset[str]) -> TaskRowReader | None:
        """How to build tasks for a selection of these field names from their columns
        alone (None: a selected field needs a whole task, e.g. a resolver's `record`)."""
        try:
            return _READERS[names]
        except KeyError:
            if len(_READERS) >= _MAX_READERS:
                _READERS.clear()
            reader = _READERS[names] = TaskRowReader.for_names(names)
            return reader

    @classmethod
    async def load_many(cls, info: Info, task_ids: Iterable[UUID]) -> list[Task]:
        found = await info.context.loaders.task_by_id.load_many(list(task_ids))
        return [cls.from_record(task) for task in found if task is not None]

    @classmethod
    async def resolve_reference(cls, info: Info, id: str) -> Task | None:
        return await entity_by_reference(cls, info, id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Task | None]:
        return await nodes_by_ids(info.context.loaders.task_by_id, node_ids, cls.from_record)

    @strawberry.field(description="The agent working on it (PostgreSQL).")
    async def assignee(
        self, info: Info
    ) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.record.assignee_id)

    @strawberry.field(description="The workflow this task belongs to, if any.")
    async def workflow(
        self, info: Info
    ) -> Annotated[Workflow, strawberry.lazy("schema.workflows")] | None:
        from schema.workflows import Workflow

        return await Workflow.load(info, self.record.workflow_id)

    @strawberry.field(description="Tasks this one directly depends on (PostgreSQL).")
    async def dependencies(self, info: Info) -> list[Task]:
        ids = await info.context.loaders.dependency_ids_by_task_id.load(self.record.id)
        return await Task.load_many(info, ids)

    @strawberry.field(
        description="Unfinished tasks this one transitively waits for (Neo4j); null if the "
        "graph is unavailable."
    )
    async def blockers(self, info: Info) -> list[Task] | None:
        ids = await info.context.loaders.blocker_ids_by_task_id.load(self.record.id)
        return await Task.load_many(info, ids)

    @strawberry.field(description="Every change, oldest first (event sourcing).")
    async def history(self, info: Info) -> list[TaskEvent]:
        events = await info.context.loaders.events_by_task_id.load(self.record.id)
        return [TaskEvent.from_record(event) for event in events]


def _status(value: str) -> TaskStatus:
    return TASK_STATUS[value]


# Task's fields that are a column as it is (or through a conversion), by GraphQL name:
# (attribute, column, conversion). `id` is the global id, made from the `id` column.
_COLUMN_FIELDS: dict[str, tuple[str, str, Callable[[Any], Any] | None]] = {
    "title": ("title", "title", None),
    "description": ("description", "description", None),
    "repository": ("repository", "repository", None),
    "type": ("type", "type", None),
    "payload": ("payload", "payload", None),
    "priority": ("priority", "priority", None),
    "status": ("status", "status", _status),
    "deadline": ("deadline", "deadline", None),
    "startedAt": ("started_at", "started_at", None),
    "completedAt": ("completed_at", "completed_at", None),
    "result": ("result", "result", None),
    "errorMessage": ("error_message", "error_message", None),
    "retryCount": ("retry_count", "retry_count", None),
    "maxRetries": ("max_retries", "max_retries", None),
    "createdAt": ("created_at", "created_at", None),
    "updatedAt": ("updated_at", "updated_at", None),
    "version": ("version", "version", None),
}
_NO_COLUMN_FIELDS = frozenset(("id", "__typename"))
_new = object.__new__


class TaskRowReader:
    """Builds `Task` objects holding only the selected fields, from rows holding only
    their columns: no store record, no JSON column nobody asked for, the global id only
    when `id` is selected. Such a task has no `record`, so it serves only selections
    without a resolver field (`row_reader` decides)."""

    __slots__ = ("attributes", "columns", "converted", "global_id")

    def __init__(
        self,
        columns: tuple[str, ...],
        attributes: tuple[str, ...],
        converted: list[tuple[str, Callable[[Any], Any]]],
        global_id: bool,
    ) -> None:
        # The columns to read, `id` first; a row is a tuple starting with them.
        self.columns = columns
        # The attribute each column after `id` fills.
        self.attributes = attributes
        self.converted = converted
        self.global_id = global_id

    @classmethod
    def for_names(cls, names: frozenset[str]) -> TaskRowReader | None:
        found = []
        for name in sorted(names):
            if name in _NO_COLUMN_FIELDS:
                continue
            field = _COLUMN_FIELDS.get(name)
            if field is None:
                return None
            found.append(field)
        return cls(
            ("id", *(column for _, column, _ in found)),
            tuple(attribute for attribute, _, _ in found),
            [(attribute, convert) for attribute, _, convert in found if convert is not None],
            "id" in names,
        )

    def __call__(self, row: Sequence[Any]) -> Task:
        values = dict(zip(self.attributes, row[1:], strict=False))
        for attribute, convert in self.converted:
            values[attribute] = convert(values[attribute])
        node_id = values["id"] = str(row[0])
        if self.global_id:
            # What the ID scalar makes of `encode_id(...)`, made directly.
            values["_id"] = to_base64("Task", node_id)
        task: Task = _new(Task)
        vars(task).update(values)
        return task


_READERS: dict[frozenset[str], TaskRowReader | None] = {}
_MAX_READERS = 1000


@strawberry.type
class TaskConnection(CountedConnection[Task]):
    @classmethod
    def from_task_list(cls, tasks: Sequence[records.Task], total: int) -> TaskConnection:
        """A first page built from a batched per-agent fetch (no cursors to continue from)."""
        edges = [relay.Edge(cursor=str(task.id), node=Task.from_record(task)) for task in tasks]
        return cls(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=total > len(tasks),
                has_previous_page=False,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            total_count=total,
        )

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence[Any]], total: int, read: TaskRowReader
    ) -> TaskConnection:
        """`from_task_list` over rows read for one selection (see `TaskRowReader`)."""
        edges = []
        for row in rows:
            task = read(row)
            edges.append(relay.Edge(cursor=task.id, node=task))
        return cls(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=total > len(rows),
                has_previous_page=False,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            total_count=total,
        )
