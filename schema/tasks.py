"""The Task node: fields from PostgreSQL, blockers from Neo4j, history from its events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers.context import RequestContext
from schema.enums import TASK_STATUS, TaskStatus
from schema.federation import ENTITY_KEY, entity_by_reference
from schema.relay import CountedConnection, edge_of, encode_id, node_id_field, nodes_by_ids
from schema.rows import ColumnField, RowEdges, RowReader, RowReaders
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
    required_capabilities: list[str] = strawberry.field(
        description="A claimer needs every one of these to claim it (claimNextTask)."
    )
    lease_expires_at: datetime | None = strawberry.field(
        description="While claimed: when the claim lapses unless its holder sends a heartbeat."
    )
    fencing_token: int = strawberry.field(
        description="Grows with every claim of the task; 0 if it was never claimed."
    )
    worktree_path: str | None = strawberry.field(
        description="Where the agent working on it checks its repository out."
    )
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
            required_capabilities=list(task.required_capabilities),
            lease_expires_at=task.lease_expires_at,
            fencing_token=task.fencing_token,
            worktree_path=task.worktree_path,
            created_at=task.created_at,
            updated_at=task.updated_at,
            version=task.version,
            record=task,
        )

    @classmethod
    def row_reader(cls, names: frozenset[str]) -> RowReader[Task] | None:
        """How to build tasks for a selection of these field names from their columns
        alone (None: a selected field needs a whole task, e.g. a resolver's `record`)."""
        return _READERS.reader(names)

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

    @strawberry.field(
        description="Tasks this one directly depends on (PostgreSQL), oldest link first, at "
        "most `first` of them (one query for a whole page of tasks)."
    )
    async def dependencies(self, info: Info, first: int = 10) -> list[Task]:
        loader = info.context.loaders.dependency_ids_by_task_id
        ids = await loader.load((self.record.id, first))
        return await Task.load_many(info, ids)

    @strawberry.field(
        description="Unfinished tasks this one transitively waits for (Neo4j), at most "
        "`first` of them in id order; null if the graph is unavailable."
    )
    async def blockers(self, info: Info, first: int = 10) -> list[Task] | None:
        loader = info.context.loaders.blocker_ids_by_task_id
        ids = await loader.load((self.record.id, first))
        return await Task.load_many(info, ids)

    @strawberry.field(
        description="Its changes, oldest first (event sourcing), at most `first` of them "
        "(one query for a whole page of tasks)."
    )
    async def history(self, info: Info, first: int = 10) -> list[TaskEvent]:
        events = await info.context.loaders.events_by_task_id.load((self.record.id, first))
        return [TaskEvent.from_record(event) for event in events]


# Task's fields that are a column (see schema/rows.py), by GraphQL name.
COLUMN_FIELDS = {
    "title": ColumnField("title", "title"),
    "description": ColumnField("description", "description"),
    "repository": ColumnField("repository", "repository"),
    "type": ColumnField("type", "type"),
    "payload": ColumnField("payload", "payload"),
    "priority": ColumnField("priority", "priority"),
    "status": ColumnField("status", "status", TASK_STATUS),
    "deadline": ColumnField("deadline", "deadline"),
    "startedAt": ColumnField("started_at", "started_at"),
    "completedAt": ColumnField("completed_at", "completed_at"),
    "result": ColumnField("result", "result"),
    "errorMessage": ColumnField("error_message", "error_message"),
    "retryCount": ColumnField("retry_count", "retry_count"),
    "maxRetries": ColumnField("max_retries", "max_retries"),
    "createdAt": ColumnField("created_at", "created_at"),
    "updatedAt": ColumnField("updated_at", "updated_at"),
    "version": ColumnField("version", "version"),
}
_READERS = RowReaders(Task, COLUMN_FIELDS)
_new = object.__new__


def _task_edges(tasks: list[Task]) -> list[relay.Edge[Task]]:
    return [edge_of(task.id, task) for task in tasks]


@strawberry.type
class TaskConnection(CountedConnection[Task]):
    @classmethod
    def from_task_list(
        cls, tasks: Sequence[records.Task], total: int | None, has_next_page: bool
    ) -> TaskConnection:
        """A first page built from a batched per-agent fetch (no cursors to continue from)."""
        edges = [relay.Edge(cursor=str(task.id), node=Task.from_record(task)) for task in tasks]
        return cls(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=has_next_page,
                has_previous_page=False,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            total_count=total,
        )

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[records.ColumnRow],
        total: int | None,
        has_next_page: bool,
        read: RowReader[Task],
    ) -> TaskConnection:
        """`from_task_list` over rows read for one selection (see schema/rows.py): the
        edges are made only if asked for (`RowEdges`), each without a dataclass
        `__init__`, and `pageInfo` too (`_RowsTaskConnection`); a task's cursor is
        its id."""
        # One per agent of a page.
        connection: TaskConnection = _new(_RowsTaskConnection)
        connection.__dict__ = {
            "edges": RowEdges(rows, read, _task_edges),
            "total_count": total,
            "_has_next_page": has_next_page,
        }
        return connection


class _RowsTaskConnection(TaskConnection):
    """A page of tasks over rows, its `pageInfo` made when first read (few selections
    of a nested page ask for it)."""

    def __getattr__(self, name: str) -> Any:
        # Reached only while `page_info` is not yet in the instance dict.
        if name != "page_info":
            raise AttributeError(name)
        rows = self.edges.rows  # type: ignore[attr-defined]
        # Filled as `_task_edges` fills an edge: a task's cursor is its id.
        page_info: relay.PageInfo = _new(relay.PageInfo)
        page_info.__dict__ = {
            "has_next_page": self._has_next_page,
            "has_previous_page": False,
            "start_cursor": str(rows[0][0]) if rows else None,
            "end_cursor": str(rows[-1][0]) if rows else None,
        }
        self.__dict__["page_info"] = page_info
        return page_info
