"""Tasks: the state machine, the dependency DAG, and their event history.

Every change locks the row, checks `expected_version`, then writes the row and its
event (see `task_events`), an audit row and an outbox row in one transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID, uuid4

from asyncpg import Record

from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.inputs import (
    UNSET,
    TaskFilter,
    TaskInput,
    TaskOrder,
    TaskPatch,
    TasksOfEach,
    check_int,
    check_json_object,
    check_text,
    like_pattern,
)
from stores.postgres.options import PgConnection
from stores.postgres.outbox import OUTBOX_CHANNEL
from stores.postgres.pagination import (
    Page,
    PageRequest,
    Params,
    check_page_size,
    fetch_page,
    ordering,
)
from stores.postgres.records import JSON, Task, TaskEvent, WriteContext
from stores.postgres.task_claims import check_capabilities, check_holder
from stores.postgres.task_events import (
    EVENT_ROW,
    NOW,
    QUEUE_UPSERTED,
    ROW,
    TASK_COLUMNS,
    change_task,
    change_task_at,
    event_from_row,
    insert_task,
    patch_task,
    replay,
    task_from_row,
)
from stores.postgres.task_states import EVENT_TYPES, STATUSES, check_transition
from stores.postgres.writes import (
    Refusals,
    check_version,
    claim_idempotency_key,
    settle_idempotency_key,
    write_audit,
    write_statement,
    write_transaction,
)

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

MAX_PAYLOAD_BYTES = 256 * 1024
T = TypeVar("T")
# What `columns_for_assignees` may be asked to read.
_READABLE_COLUMNS = frozenset(("id", *TASK_COLUMNS, "created_at", "updated_at", "version"))
# Bounded like a knowledge item's content: it is indexed for full-text search and embedded.
MAX_DESCRIPTION_CHARS = 100_000
# Serialises dependency inserts, so two concurrent edges cannot jointly close a cycle.
_DEPENDENCY_LOCK = 0x706F6C79_64657073  # "polydeps"

_ORDERS = {
    TaskOrder.CREATED_AT_ASC: ordering(
        "tasks.created", ("created_at", "timestamp"), ("id", "uuid")
    ),
    TaskOrder.CREATED_AT_DESC: ordering(
        "tasks.-created", ("created_at", "timestamp"), ("id", "uuid"), descending=True
    ),
    TaskOrder.PRIORITY_DESC: ordering(
        "tasks.-priority",
        ("priority", "int"),
        ("created_at", "timestamp"),
        ("id", "uuid"),
        descending=True,
    ),
    TaskOrder.PRIORITY_ASC: ordering(
        "tasks.priority", ("priority", "int"), ("created_at", "timestamp"), ("id", "uuid")
    ),
    # Matches the tasks_deadline index; tasks without a deadline come last.
    TaskOrder.DEADLINE_ASC: ordering(
        "tasks.deadline",
        ("coalesce(deadline, 'infinity'::timestamptz)", "timestamp"),
        ("id", "uuid"),
    ),
}


@dataclass(slots=True)
class AssigneeTasks(Generic[T]):
    """The first tasks of one agent, from `TaskRepository.for_assignees`."""

    items: list[T]
    # How many tasks the agent has in all: None unless asked for.
    total: int | None
    has_more: bool


def _no_tasks(with_total: bool) -> AssigneeTasks[Any]:
    return AssigneeTasks([], 0 if with_total else None, False)


# Where `_first_of_assignees` puts the total in a row of `ROW`.
_ROW_WIDTH = len(ROW.split(", "))


def _pages_of_asked(
    rows: Sequence[Record], asked: Sequence[UUID], first: int, width: int, with_total: bool
) -> dict[UUID, AssigneeTasks[Record]]:
    """The rows of `_first_of_assignees` (`width` columns, then the total and the
    agent's position) as each asked agent's page, an empty one for an agent without
    tasks. An agent's rows come together and in order, so a row's agent is found by
    its position, and its rank by counting: hashing a freshly decoded UUID costs a
    page of 500 tasks 0.1 ms."""
    pages: list[AssigneeTasks[Record] | None] = [None] * len(asked)
    page = AssigneeTasks[Record]([], None, False)
    total_at, asked_at = width, width + 1
    current = taken = 0
    for row in rows:
        at = row[asked_at]
        if at != current:
            current, taken = at, 0
            page = pages[at - 1] = AssigneeTasks([], row[total_at], False)
        if taken < first:
            page.items.append(row)
            taken += 1
        else:
            page.has_more = True
    return {
        agent_id: page or _no_tasks(with_total) for agent_id, page in zip(asked, pages, strict=True)
    }


def _assignee_tasks(
    agent_id: str,
    select: str,
    first: int,
    statuses: Sequence[str] | None,
    order: TaskOrder,
    params: Params,
) -> tuple[str, str]:
    """The statements reading the first `first + 1` tasks (`select` of each) of the
    agent `agent_id` names (SQL of the statement around them), and counting its tasks.

    In creation order (the default) an agent's tasks are read through
    `tasks_assignee_created` and stop after `first + 1`: an agent with 30,000 tasks
    costs what one with ten does, unless the count is asked for. Other orders sort
    each agent's tasks (no index leads with the assignee and the priority)."""
    check_page_size(first)
    where = [f"assignee_id = {agent_id}"]
    if statuses is not None:
        where.append(params.any_of("status", statuses, "text"))
    matching = " AND ".join(where)
    ordering = _ORDERS[order]
    direction = "DESC" if ordering.descending else "ASC"
    by = ", ".join(f"{key.expression} {direction}" for key in ordering.keys)
    return (
        f"SELECT {select} FROM tasks WHERE {matching} ORDER BY {by} LIMIT {params(first + 1)}",
        f"SELECT count(*) FROM tasks WHERE {matching}",
    )


def tasks_of_each(agent_id: str, tasks: TasksOfEach, params: Params) -> str:
    """Two more columns for a statement over agents: `_tasks`, the first tasks of the
    agent `agent_id` names, each a record of `tasks.columns` (one more than `first`
    says there are more), and `_tasks_total`, how many it has (null unless asked).
    `assignee_page` reads them: a page of agents and their tasks in one statement."""
    if not tasks.columns or not set(tasks.columns) <= _READABLE_COLUMNS:
        raise ValueError(f"not task columns: {tasks.columns!r}")
    page, count = _assignee_tasks(
        agent_id,
        f"ROW({', '.join(tasks.columns)})",
        tasks.first,
        tasks.statuses,
        tasks.order,
        params,
    )
    total = f"({count})" if tasks.with_total else "NULL"
    return f"ARRAY({page}) AS _tasks, {total}::bigint AS _tasks_total"


def assignee_page(
    records: Sequence[tuple[Any, ...]], total: int | None, first: int
) -> AssigneeTasks[tuple[Any, ...]]:
    """An agent's page of tasks from the columns `tasks_of_each` adds."""
    return AssigneeTasks(list(records[:first]), total, len(records) > first)


class TaskRepository:
    """Tasks in PostgreSQL; the row is the projection of its events."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, Task]:
        if not ids:
            return {}
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {ROW} FROM tasks WHERE id = ANY($1::uuid[])", list(ids)
            )
        return {row["id"]: task_from_row(row) for row in rows}

    async def for_assignees(
        self,
        agent_ids: Sequence[UUID],
        *,
        first: int,
        statuses: Sequence[str] | None,
        order: TaskOrder = TaskOrder.CREATED_AT_DESC,
        with_total: bool = False,
    ) -> dict[UUID, AssigneeTasks[Task]]:
        """Each agent's first `first` tasks in `order` (and, `with_total`, how many it
        has), for a page of agents, in one query."""
        asked = list(dict.fromkeys(agent_ids))
        rows = await self._first_of_assignees(asked, first, statuses, order, ROW, with_total)
        pages = _pages_of_asked(rows, asked, first, _ROW_WIDTH, with_total)
        return {
            agent_id: AssigneeTasks(
                [task_from_row(row) for row in page.items], page.total, page.has_more
            )
            for agent_id, page in pages.items()
        }

    async def columns_for_assignees(
        self,
        agent_ids: Sequence[UUID],
        columns: Sequence[str],
        *,
        first: int,
        statuses: Sequence[str] | None,
        order: TaskOrder = TaskOrder.CREATED_AT_DESC,
        with_total: bool = False,
    ) -> dict[UUID, AssigneeTasks[Record]]:
        """`for_assignees` reading only `columns`, each task a row that starts with them
        in that order: a page that shows a task's title and status does not pay for a
        whole record or for decoding its JSON columns."""
        unknown = set(columns) - _READABLE_COLUMNS
        if unknown or not columns:
            raise ValueError(f"not task columns: {columns!r}")
        asked = list(dict.fromkeys(agent_ids))
        rows = await self._first_of_assignees(
            asked, first, statuses, order, ", ".join(columns), with_total
        )
        return _pages_of_asked(rows, asked, first, len(columns), with_total)

    async def _first_of_assignees(
        self,
        agent_ids: Sequence[UUID],
        first: int,
        statuses: Sequence[str] | None,
        order: TaskOrder,
        select: str,
        with_total: bool,
    ) -> list[Record]:
        """Up to `first + 1` tasks of each agent in `agent_ids` (no id twice; the extra
        task says there are more), each row ending with `with_total` the agent's count
        (else null) and the agent's position in `agent_ids` (from 1). An agent's rows
        come together and in `order`: its own lateral subquery reads them, once per
        asked id, and the asked ids are a CTE's, whose scan no plan splits across
        parallel workers. The agents come in any order: sorting them (with a window
        function for each task's rank) took 0.15 ms of S2-pg's 0.44 for this query."""
        params = Params([agent_ids])
        # Checks `first` even when no agent is asked for.
        page, count = _assignee_tasks("a.id", select, first, statuses, order, params)
        if not agent_ids:
            return []
        total = f"({count})" if with_total else "NULL"
        async with self._store.read_connection() as conn:
            # Materialized, so each agent is counted once, not once per task row.
            rows: list[Record] = await conn.fetch(
                f"WITH asked AS MATERIALIZED (SELECT a.id, a.at, {total}::bigint AS _total"
                " FROM unnest($1::uuid[]) WITH ORDINALITY AS a(id, at))"
                f" SELECT t.*, a._total, a.at FROM asked AS a CROSS JOIN LATERAL ({page}) AS t",
                *params.values,
            )
        return rows

    async def dependencies_of(
        self, task_ids: Sequence[UUID], *, first: int
    ) -> dict[UUID, list[UUID]]:
        """What each task waits for, oldest edge first, at most `first` per task (one
        query for them all, the limit applied per task inside it)."""
        found: dict[UUID, list[UUID]] = {task_id: [] for task_id in task_ids}
        if not found or first <= 0:
            return found
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                "SELECT t.id AS key, d.depends_on_id AS other FROM unnest($1::uuid[]) AS t(id)"
                " CROSS JOIN LATERAL (SELECT depends_on_id, created_at FROM task_dependencies"
                " WHERE task_id = t.id ORDER BY created_at, depends_on_id LIMIT $2) AS d"
                " ORDER BY t.id, d.created_at, d.depends_on_id",
                list(found),
                first,
            )
        for row in rows:
            found[row["key"]].append(row["other"])
        return found

    async def dependents_of(self, task_ids: Sequence[UUID]) -> dict[UUID, list[UUID]]:
        """Which tasks wait for each task, oldest edge first."""
        return await self._edges(task_ids, "depends_on_id", "task_id")

    async def events_of(
        self, task_ids: Sequence[UUID], *, first: int | None = None
    ) -> dict[UUID, list[TaskEvent]]:
        """Each task's history, oldest first; with `first`, at most that many events per
        task (the limit applied per task, through the (task, version) index; a null
        LIMIT is none)."""
        found: dict[UUID, list[TaskEvent]] = {task_id: [] for task_id in task_ids}
        if not found or (first is not None and first <= 0):
            return found
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT e.* FROM unnest($1::uuid[]) AS t(id) CROSS JOIN LATERAL"
                f" (SELECT {EVENT_ROW} FROM task_events WHERE task_id = t.id"
                " ORDER BY version LIMIT $2) AS e ORDER BY e.task_id, e.version",
                list(found),
                first,
            )
        for row in rows:
            found[row["task_id"]].append(event_from_row(row))
        return found

    async def create(self, ctx: WriteContext, data: TaskInput) -> Task:
        """A new task: `assigned` when it comes with an assignee, otherwise `pending`."""
        values = _checked({name: getattr(data, name) for name in _INPUT_COLUMNS})
        values["status"] = "pending" if data.assignee_id is None else "assigned"
        task_id = uuid4()
        if ctx.idempotency_key is None:
            async with write_statement(self._store, _refusals(values)) as conn:
                return await insert_task(conn, ctx, task_id, values)
        async with write_transaction(self._store, _refusals(values)) as conn:
            replay_of = await claim_idempotency_key(conn, ctx, "task.create", {"id": str(task_id)})
            if replay_of is not None:
                return await _get(conn, UUID(replay_of["id"]))
            return await insert_task(conn, ctx, task_id, values)

    async def update(
        self, ctx: WriteContext, task_id: UUID, patch: TaskPatch, *, expected_version: int | None
    ) -> Task:
        """Change fields other than status and assignee (those go through `transition`)."""
        given = {
            name: value for name in _PATCH_COLUMNS if (value := getattr(patch, name)) is not UNSET
        }
        values = _checked(given)
        if ctx.idempotency_key is None:
            async with write_statement(self._store, _refusals(values)) as conn:
                return await _patch(conn, ctx, task_id, values, expected_version)
        async with write_transaction(self._store, _refusals(values)) as conn:
            operation = f"task.update {task_id}"
            replay_of = await claim_idempotency_key(conn, ctx, operation, {"id": str(task_id)})
            if replay_of is not None:
                return await _get(conn, task_id)
            # Raised inside the transaction, so a refusal keeps no idempotency key.
            return await _patch(conn, ctx, task_id, values, expected_version)

    async def transition(
        self,
        ctx: WriteContext,
        task_id: UUID,
        to_status: str,
        *,
        expected_version: int | None,
        assignee_id: UUID | None = None,
        result: JSON | None = None,
        error_message: str | None = None,
        fencing_token: int | None = None,
        holder_id: UUID | None = None,
    ) -> Task:
        """Move a task along the state machine (see `task_states`).

        Assigning takes `assignee_id` (or keeps the current assignee of a retried task);
        starting stamps `started_at`; completing and failing stamp `completed_at` and keep
        `result` or `error_message`; a retry counts itself and clears the last attempt.
        A claimed task moved by its claimer (`holder_id`, the agent it acts as) needs
        the claim's `fencing_token` (see `task_claims.check_holder`); any move but a
        start ends the lease.
        """
        _check_transition_arguments(to_status, assignee_id, result, error_message)
        refusals: Refusals = {
            "tasks_assignee_id_fkey": lambda: NotFound("agent", assignee_id, field="assigneeId")
        }
        move = _Move(to_status, assignee_id, result, error_message, fencing_token, holder_id)
        if ctx.idempotency_key is None:
            async with write_statement(self._store, refusals) as conn:
                # Read, check, and write only if the row is still at the version read
                # (`change_task_at`): two round trips where BEGIN, a lock, the write
                # and COMMIT took four. A row that moved in between is read again.
                for _ in range(_MOVE_ATTEMPTS):
                    row = await conn.fetchrow(
                        f"SELECT {ROW}, now() AS now FROM tasks WHERE id = $1", task_id
                    )
                    if row is None:
                        raise NotFound("task", task_id)
                    current = task_from_row(row)
                    check_version("task", task_id, current.version, expected_version)
                    changes = move.changes(current, now=row["now"])
                    task = await change_task_at(
                        conn,
                        ctx,
                        current,
                        changes,
                        EVENT_TYPES[to_status],
                        {"from": current.status},
                        audit="transition",
                    )
                    if task is not None:
                        return task
            raise Conflict(
                f"task {task_id} changed {_MOVE_ATTEMPTS} times while it was being moved;"
                " read it again and retry",
                field="id",
            )
        async with write_transaction(self._store, refusals) as conn:
            operation = f"task.transition {task_id} {to_status}"
            replay_of = await claim_idempotency_key(conn, ctx, operation, {"id": str(task_id)})
            if replay_of is not None:
                return await _get(conn, task_id)
            current = await _lock(conn, task_id, expected_version)
            needs_now = move.checks_holder and current.lease_expires_at is not None
            now = await conn.fetchval("SELECT now()") if needs_now else None
            return await change_task(
                conn,
                ctx,
                current,
                move.changes(current, now=now),
                EVENT_TYPES[to_status],
                {"from": current.status},
                audit="transition",
            )

    async def add_dependency(
        self, ctx: WriteContext, task_id: UUID, depends_on_id: UUID
    ) -> tuple[Task, bool]:
        """Make `task_id` wait for `depends_on_id`; refuses an edge that closes a cycle.

        Returns the dependent task (a new version when the edge is new) and whether the
        edge is new: adding an edge that exists changes nothing."""
        refusals: Refusals = {
            "task_dependencies_depends_on_id_fkey": lambda: NotFound(
                "task", depends_on_id, field="dependsOnId"
            )
        }
        async with write_transaction(self._store, refusals) as conn:
            operation = f"task.add_dependency {task_id} {depends_on_id}"
            replay_of = await claim_idempotency_key(
                conn, ctx, operation, {"id": str(task_id), "added": False}
            )
            if replay_of is not None:
                # Keys stored before `added` was recorded answered that it was added.
                return await _get(conn, task_id), bool(replay_of.get("added", True))
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _DEPENDENCY_LOCK)
            current = await _lock(conn, task_id, None, field="taskId")
            await _refuse_cycle(conn, current, depends_on_id)
            added = await conn.fetchval(
                "INSERT INTO task_dependencies (task_id, depends_on_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                task_id,
                depends_on_id,
            )
            if not added:
                return current, False
            edge = {"task_id": str(task_id), "depends_on_id": str(depends_on_id)}
            task = await change_task(conn, ctx, current, {}, "dependency_added", edge)
            await write_audit(
                conn,
                ctx,
                "add_dependency",
                "task",
                task_id,
                None,
                edge,
                outbox=("task.dependency_added", edge),
            )
            await settle_idempotency_key(conn, ctx, {"id": str(task_id), "added": True})
        return task, True

    async def remove_dependency(
        self, ctx: WriteContext, task_id: UUID, depends_on_id: UUID
    ) -> bool:
        """Stop `task_id` waiting for `depends_on_id`; False when it was not waiting."""
        async with write_transaction(self._store) as conn:
            operation = f"task.remove_dependency {task_id} {depends_on_id}"
            replay_of = await claim_idempotency_key(conn, ctx, operation, {"removed": False})
            if replay_of is not None:
                return bool(replay_of["removed"])
            current = await _lock(conn, task_id, None, field="taskId")
            removed = await conn.fetchval(
                "DELETE FROM task_dependencies WHERE task_id = $1 AND depends_on_id = $2"
                " RETURNING true",
                task_id,
                depends_on_id,
            )
            if not removed:
                return False
            edge = {"task_id": str(task_id), "depends_on_id": str(depends_on_id)}
            await change_task(conn, ctx, current, {}, "dependency_removed", edge)
            await write_audit(
                conn,
                ctx,
                "remove_dependency",
                "task",
                task_id,
                edge,
                None,
                outbox=("task.dependency_removed", edge),
            )
            await settle_idempotency_key(conn, ctx, {"removed": True})
        return True

    async def rebuild_from_events(self, task_id: UUID) -> Task:
        """Recompute the row from its events alone and write it back (a repair tool)."""
        async with write_transaction(self._store) as conn:
            await _lock(conn, task_id, None)
            rows = await conn.fetch(
                f"SELECT {EVENT_ROW} FROM task_events WHERE task_id = $1 ORDER BY version", task_id
            )
            task = replay(task_id, [event_from_row(row) for row in rows])
            params = Params([task_id])
            assignments = ", ".join(
                f"{column} = {params(getattr(task, column))}"
                for column in (*TASK_COLUMNS, "created_at", "updated_at", "version")
            )
            row = await conn.fetchrow(
                f"WITH t AS (UPDATE tasks SET {assignments} WHERE id = $1 RETURNING {ROW}),"
                f" o AS ({QUEUE_UPSERTED})"
                f" SELECT t.* FROM t, pg_notify({params(OUTBOX_CHANNEL)}, '') AS notified",
                *params.values,
            )
            assert row is not None
        return task_from_row(row)

    async def _edges(
        self, task_ids: Sequence[UUID], key: str, other: str
    ) -> dict[UUID, list[UUID]]:
        found: dict[UUID, list[UUID]] = {task_id: [] for task_id in task_ids}
        if not found:
            return found
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {key} AS key, {other} AS other FROM task_dependencies"
                f" WHERE {key} = ANY($1::uuid[]) ORDER BY created_at, {other}",
                list(found),
            )
        for row in rows:
            found[row["key"]].append(row["other"])
        return found

    async def list(
        self,
        filter: TaskFilter,
        order: TaskOrder,
        page: PageRequest,
        *,
        with_total: bool = False,
    ) -> Page[Task]:
        params = Params()
        where = task_conditions(filter, params)
        async with self._store.read_connection() as conn:
            return await fetch_page(
                conn,
                select=ROW,
                source="tasks",
                where=where,
                params=params,
                order=_ORDERS[order],
                page=page,
                with_total=with_total,
                decode=task_from_row,
            )


def task_conditions(filter: TaskFilter, params: Params, alias: str = "") -> list[str]:
    """SQL conditions for `filter` on the tasks table (as `alias`, when given): the
    `tasks` list and task search narrow alike."""
    a = f"{alias}." if alias else ""
    where: list[str] = []
    if filter.statuses is not None:
        where.append(params.any_of(f"{a}status", filter.statuses, "text"))
    if filter.assignee_id is None:
        where.append(f"{a}assignee_id IS NULL")
    elif filter.assignee_id is not UNSET:
        where.append(f"{a}assignee_id = {params(filter.assignee_id)}")
    if filter.creator_id is not None:
        where.append(f"{a}creator_id = {params(filter.creator_id)}")
    if filter.workflow_id is not None:
        where.append(f"{a}workflow_id = {params(filter.workflow_id)}")
    if filter.types is not None:
        where.append(params.any_of(f"{a}type", filter.types, "text"))
    if filter.min_priority is not None:
        where.append(f"{a}priority >= {params(filter.min_priority)}")
    if filter.max_priority is not None:
        where.append(f"{a}priority <= {params(filter.max_priority)}")
    if filter.title_contains is not None:
        where.append(f"{a}title ILIKE {params(like_pattern(filter.title_contains))}")
    return where


_INPUT_COLUMNS = (
    "title",
    "description",
    "repository",
    "type",
    "payload",
    "priority",
    "assignee_id",
    "creator_id",
    "workflow_id",
    "deadline",
    "max_retries",
    "required_capabilities",
    "worktree_path",
)
_PATCH_COLUMNS = (
    "title",
    "description",
    "repository",
    "type",
    "payload",
    "priority",
    "workflow_id",
    "deadline",
    "max_retries",
    "required_capabilities",
    "worktree_path",
)


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    if "title" in values:
        check_text("title", values["title"], 200)
    if "type" in values:
        check_text("type", values["type"], 100)
    if "description" in values and (
        not isinstance(values["description"], str)
        or len(values["description"]) > MAX_DESCRIPTION_CHARS
    ):
        raise InvalidInput(
            "description", f"must be text of at most {MAX_DESCRIPTION_CHARS:,} characters"
        )
    if values.get("worktree_path") is not None:
        check_text("worktreePath", values["worktree_path"], 1000)
    if values.get("repository") is not None:
        check_text("repository", values["repository"], 500)
    if "payload" in values:
        check_json_object("payload", values["payload"], MAX_PAYLOAD_BYTES)
    if "priority" in values:
        check_int("priority", values["priority"], 1, 10)
    if "max_retries" in values:
        check_int("maxRetries", values["max_retries"], 0, 100)
    if "required_capabilities" in values:
        values["required_capabilities"] = check_capabilities(
            "requiredCapabilities", values["required_capabilities"]
        )
    deadline = values.get("deadline")
    if deadline is not None and (not isinstance(deadline, datetime) or deadline.tzinfo is None):
        raise InvalidInput("deadline", "must be a date and time with a time zone")
    return values


def _check_transition_arguments(
    to_status: str, assignee_id: UUID | None, result: JSON | None, error_message: str | None
) -> None:
    if to_status not in STATUSES:
        raise InvalidInput(
            "status", f"unknown status {to_status!r}; use one of {', '.join(STATUSES)}"
        )
    if assignee_id is not None and to_status != "assigned":
        raise InvalidInput("assigneeId", "only assigning a task takes an assignee")
    if result is not None:
        if to_status != "completed":
            raise InvalidInput("result", "only completing a task takes a result")
        check_json_object("result", result, MAX_PAYLOAD_BYTES)
    if error_message is not None and to_status != "failed":
        raise InvalidInput("errorMessage", "only failing a task takes an error message")


def _refusals(values: dict[str, Any]) -> Refusals:
    return {
        "tasks_assignee_id_fkey": lambda: NotFound(
            "agent", values.get("assignee_id"), field="assigneeId"
        ),
        "tasks_creator_id_fkey": lambda: NotFound(
            "user", values.get("creator_id"), field="creatorId"
        ),
        "tasks_workflow_id_fkey": lambda: NotFound(
            "workflow", values.get("workflow_id"), field="workflowId"
        ),
    }


async def _get(conn: PgConnection, task_id: UUID) -> Task:
    row = await conn.fetchrow(f"SELECT {ROW} FROM tasks WHERE id = $1", task_id)
    if row is None:
        raise NotFound("task", task_id)
    return task_from_row(row)


async def _patch(
    conn: PgConnection,
    ctx: WriteContext,
    task_id: UUID,
    values: dict[str, Any],
    expected_version: int | None,
) -> Task:
    """`patch_task`, and its answer read: the task, or the refusal (no such task, or
    one at another version)."""
    patched = await patch_task(conn, ctx, task_id, values, expected_version)
    if patched is None:
        raise NotFound("task", task_id)
    task, written = patched
    if not written:
        check_version("task", task_id, task.version, expected_version)
    return task


# How often a move without a lock reads a row that moved before it gives up.
_MOVE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class _Move:
    """A transition asked for, and what it changes in the row it moves."""

    to_status: str
    assignee_id: UUID | None
    result: JSON | None
    error_message: str | None
    fencing_token: int | None
    holder_id: UUID | None

    @property
    def checks_holder(self) -> bool:
        return self.fencing_token is not None or self.holder_id is not None

    def changes(self, current: Task, *, now: datetime | None) -> dict[str, Any]:
        """The columns the move sets on `current`, or its refusal. `now`: the
        database's time, against which a claim's lease is checked."""
        to_status = self.to_status
        # The claim first: a stale holder learns that, whatever the task's state now.
        if self.checks_holder:
            check_holder(current, self.fencing_token, self.holder_id, now=now)
        check_transition(current, to_status)
        changes: dict[str, Any] = {"status": to_status}
        if current.lease_expires_at is not None and to_status != "in_progress":
            changes["lease_expires_at"] = None
        if to_status == "assigned":
            assignee = self.assignee_id or current.assignee_id
            if assignee is None:
                raise InvalidInput("assigneeId", "assigning a task needs an assignee")
            changes["assignee_id"] = assignee
        elif to_status == "in_progress":
            changes["started_at"] = NOW
        elif to_status in ("completed", "failed"):
            changes.update(completed_at=NOW, result=self.result, error_message=self.error_message)
        elif to_status == "pending":
            changes.update(
                retry_count=current.retry_count + 1,
                started_at=None,
                completed_at=None,
                result=None,
                error_message=None,
            )
        return changes


async def _lock(
    conn: PgConnection, task_id: UUID, expected_version: int | None, *, field: str | None = None
) -> Task:
    # NO KEY UPDATE: dependency inserts that reference this task need not wait for it.
    row = await conn.fetchrow(f"SELECT {ROW} FROM tasks WHERE id = $1 FOR NO KEY UPDATE", task_id)
    if row is None:
        raise NotFound("task", task_id, field=field)
    task = task_from_row(row)
    check_version("task", task_id, task.version, expected_version)
    return task


async def _refuse_cycle(conn: PgConnection, task: Task, depends_on_id: UUID) -> None:
    """Refuse `task -> depends_on_id` when `depends_on_id` already (transitively) waits
    for `task`, naming the whole loop."""
    if depends_on_id == task.id:
        raise Conflict(
            f"would create a cycle: {_name(task.id, task.title)} -> "
            f"{_name(task.id, task.title)}; a task cannot depend on itself",
            field="dependsOnId",
        )
    # Every edge reachable from `depends_on_id`, each once (UNION), so a dense DAG
    # costs its edge count, not its path count. Only a cycle returns rows.
    rows = await conn.fetch(
        """
        WITH RECURSIVE reach (node, via) AS (
            SELECT $2::uuid, $1::uuid
          UNION
            SELECT d.depends_on_id, d.task_id
            FROM reach AS r JOIN task_dependencies AS d ON d.task_id = r.node
            WHERE r.node <> $1
        )
        SELECT r.node, r.via, t.title FROM reach AS r JOIN tasks AS t ON t.id = r.node
        WHERE EXISTS (SELECT FROM reach WHERE node = $1)
        """,
        task.id,
        depends_on_id,
    )
    if not rows:
        return
    titles = {row["node"]: row["title"] for row in rows}
    path = _shortest_path([(row["via"], row["node"]) for row in rows], depends_on_id, task.id)
    loop = " -> ".join(_name(node, titles[node]) for node in [task.id, *path])
    raise Conflict(
        f"would create a cycle: {loop}; each task waits for the next, so none could start",
        field="dependsOnId",
    )


def _shortest_path(edges: list[tuple[UUID, UUID]], start: UUID, goal: UUID) -> list[UUID]:
    following: dict[UUID, list[UUID]] = {}
    for source, target in edges:
        following.setdefault(source, []).append(target)
    came_from: dict[UUID, UUID | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for target in following.get(node, []):
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    path: list[UUID] = []
    step: UUID | None = goal
    while step is not None:
        path.append(step)
        step = came_from[step]
    return path[::-1]


def _name(task_id: UUID, title: str) -> str:
    return f"{title!r} ({task_id})"
