"""Event sourcing for tasks: the `tasks` row is the projection of its `task_events`.

Every change writes the row and appends its event in ONE statement. The event's
version is the row's new version, its time is the row's `updated_at`, and its data
holds the changed columns exactly as the row now stores them (so `replay` can
rebuild every column), plus context that is not a column (`from`, `depends_on_id`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from asyncpg import Record

from stores.postgres.options import PgConnection
from stores.postgres.outbox import OUTBOX_CHANNEL, wake_when_queued
from stores.postgres.pagination import Params
from stores.postgres.records import JSON, Task, TaskEvent, WriteContext
from stores.postgres.writes import audit_in_statement, json_time

EVENT_TYPES = (
    "created",
    "updated",
    "assigned",
    "started",
    "completed",
    "failed",
    "retried",
    "cancelled",
    "dependency_added",
    "dependency_removed",
    # Work distribution (stores/postgres/task_claims.py).
    "claimed",
    "heartbeat",
    "lease_expired",
)

# What replay rebuilds from event data; id, created_at, updated_at and version come
# from the events themselves.
TASK_COLUMNS = (
    "title",
    "description",
    "repository",
    "type",
    "payload",
    "priority",
    "status",
    "assignee_id",
    "creator_id",
    "workflow_id",
    "deadline",
    "started_at",
    "completed_at",
    "result",
    "error_message",
    "retry_count",
    "max_retries",
    "required_capabilities",
    "lease_expires_at",
    "fencing_token",
    "worktree_path",
)
_UUID_COLUMNS = frozenset({"assignee_id", "creator_id", "workflow_id"})
_TIME_COLUMNS = frozenset({"deadline", "started_at", "completed_at", "lease_expires_at"})
_JSON_TIMES = _TIME_COLUMNS | {"created_at", "updated_at"}

_ROW_COLUMNS = ("id", *TASK_COLUMNS, "created_at", "updated_at", "version")
ROW = ", ".join(_ROW_COLUMNS)
EVENT_ROW = "id, task_id, version, type, data, actor_id, created_at"


class _Now:
    def __repr__(self) -> str:
        return "NOW"


# A change value meaning "the transaction's time", the same instant as `updated_at`.
NOW: Final = _Now()


def _event_insert(
    params: Params,
    event_type: str,
    columns: Sequence[str],
    extra: JSON,
    ctx: WriteContext,
    *,
    changed_from: str | None = None,
) -> str:
    """The event of the row `t`: its `columns` as the row stores them; with
    `changed_from` (a CTE holding the row before), only those whose value changed."""
    changed = ""
    if changed_from is not None:
        before = f"(SELECT to_jsonb({changed_from}) FROM {changed_from})"
        changed = f" AND value IS DISTINCT FROM ({before} -> key)"
    return (
        "INSERT INTO task_events (task_id, version, type, data, actor_id, created_at)"
        f" SELECT t.id, t.version, {params(event_type)},"
        " coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(to_jsonb(t))"
        f" WHERE key = ANY({params(list(columns))}::text[]){changed}), '{{}}')"
        f" || {params(extra)}::jsonb,"
        f" {params(ctx.actor_id)}::uuid, t.updated_at FROM t"
    )


def task_json(alias: str) -> str:
    """SQL for the task row `alias` as jsonb, as `to_json` renders its `Task`."""

    def value(column: str) -> str:
        qualified = f"{alias}.{column}"
        return json_time(qualified) if column in _JSON_TIMES else qualified

    fields = ", ".join(f"'{column}', {value(column)}" for column in _ROW_COLUMNS)
    return f"jsonb_build_object({fields})"


# The `task.upserted` outbox payload of the task row `t` (what the projector reads),
# rendered inside the statement of every task write.
UPSERTED = (
    "jsonb_build_object('id', t.id, 'title', t.title, 'status', t.status,"
    " 'priority', t.priority, 'assignee_id', t.assignee_id, 'workflow_id', t.workflow_id)"
)
# The outbox insert of that message for every row of `t`: a CTE's body (add RETURNING).
QUEUE_UPSERTED = f"INSERT INTO outbox (kind, payload) SELECT 'task.upserted', {UPSERTED} FROM t"


async def insert_task(
    conn: PgConnection, ctx: WriteContext, task_id: UUID, values: dict[str, Any]
) -> Task:
    """Insert a task with its `created` event, its audit row and its `task.upserted`
    outbox message, in one statement; `values` holds every column it sets."""
    params = Params([task_id])
    columns = ", ".join(("id", *values))
    placeholders = ", ".join(("$1", *(params(value) for value in values.values())))
    audit, select = _audited(params, ctx, "create", None)
    row = await conn.fetchrow(
        f"WITH t AS (INSERT INTO tasks ({columns}) VALUES ({placeholders}) RETURNING {ROW}),"
        f" e AS ({_event_insert(params, 'created', TASK_COLUMNS, {}, ctx)}), {audit} {select}",
        *params.values,
    )
    assert row is not None
    _written(ctx, row)
    return task_from_row(row)


def _audited(
    params: Params,
    ctx: WriteContext,
    action: str,
    old: Task | None,
    *,
    old_value: str | None = None,
) -> tuple[str, str]:
    """The audit row and `task.upserted` message of the task row `t`, as CTEs, and the
    statement's final SELECT: the row, and the message's id as `outbox_id`. The task
    before is `old`, or `old_value` when the statement reads it (see
    `audit_in_statement`)."""
    ctes, sources = audit_in_statement(
        params,
        ctx,
        action,
        "task",
        written="t",
        new_value=task_json("t"),
        outbox=("task.upserted", UPSERTED),
        old=old,
        old_value=old_value,
    )
    return ctes, f"SELECT t.*, queued.id AS outbox_id FROM t, {sources}"


def _written(ctx: WriteContext, row: Record) -> None:
    """Note what a statement built with `_audited` wrote, once it has written."""
    ctx.audited.append("task")
    ctx.outbox_ids.append(row["outbox_id"])


async def change_task(
    conn: PgConnection,
    ctx: WriteContext,
    task: Task,
    changes: dict[str, Any],
    event_type: str,
    extra: JSON | None = None,
    *,
    audit: str | None = None,
) -> Task:
    """`change_task_at` for a task the caller has locked at `task.version`."""
    changed = await change_task_at(conn, ctx, task, changes, event_type, extra, audit=audit)
    assert changed is not None, "the caller holds the row lock, so the version cannot have moved"
    return changed


async def change_task_at(
    conn: PgConnection,
    ctx: WriteContext,
    task: Task,
    changes: dict[str, Any],
    event_type: str,
    extra: JSON | None = None,
    *,
    audit: str | None = None,
) -> Task | None:
    """Apply `changes` to the task if its row is still at `task.version`, bump its
    version and append the event; None if the row has moved on. An empty `changes`
    still records the event (dependencies). With `audit` (the action), the same
    statement also writes the audit row (the task before and after) and the
    `task.upserted` outbox message."""
    assert event_type in EVENT_TYPES, event_type
    params = Params([task.id, task.version])
    assignments = [
        f"{column} = {'now()' if value is NOW else params(value)}"
        for column, value in changes.items()
        if _check_column(column)
    ]
    assignments += ["version = version + 1", "updated_at = now()"]
    audited, select = "", "SELECT * FROM t"
    if audit is not None:
        ctes, select = _audited(params, ctx, audit, task)
        audited = f", {ctes}"
    row = await conn.fetchrow(
        f"WITH t AS (UPDATE tasks SET {', '.join(assignments)}"
        f" WHERE id = $1 AND version = $2 RETURNING {ROW}),"
        f" e AS ({_event_insert(params, event_type, list(changes), extra or {}, ctx)}){audited}"
        f" {select}",
        *params.values,
    )
    if row is None:
        return None
    if audit is not None:
        _written(ctx, row)
    return task_from_row(row)


async def patch_task(
    conn: PgConnection,
    ctx: WriteContext,
    task_id: UUID,
    values: dict[str, Any],
    expected_version: int | None,
) -> tuple[Task, bool] | None:
    """Apply `values` to a task in ONE statement: it locks the row, and only when the
    row is at `expected_version` (any, for None) and some value differs, writes it with
    a new version, its `updated` event (the columns that changed), its audit row and
    its `task.upserted` message. Returns the task and whether it was written (if not,
    the caller compares versions: the row may be at another); None if there is none."""
    params = Params([task_id, expected_version])
    placeholders = {
        column: params(value) for column, value in values.items() if _check_column(column)
    }
    assignments = [f"{column} = {value}" for column, value in placeholders.items()]
    assignments += ["version = version + 1", "updated_at = now()"]
    differs = " OR ".join(
        f"old.{column} IS DISTINCT FROM {value}" for column, value in placeholders.items()
    )
    event = _event_insert(params, "updated", list(placeholders), {}, ctx, changed_from="old")
    audit, select = _audited(
        params, ctx, "update", None, old_value=f"(SELECT {task_json('old')} FROM old)"
    )
    row = await conn.fetchrow(
        # NO KEY UPDATE: dependency inserts that reference this task need not wait for it.
        f"WITH old AS (SELECT {ROW} FROM tasks WHERE id = $1 FOR NO KEY UPDATE),"
        f" t AS (UPDATE tasks SET {', '.join(assignments)} WHERE id = $1 AND (SELECT"
        f" old.version = coalesce($2::int, old.version) AND ({differs or 'false'}) FROM old)"
        f" RETURNING {ROW}),"
        f" e AS ({event}), {audit} {select}"
        # Nothing written: the row as it is, for the caller's version check.
        " UNION ALL SELECT old.*, NULL FROM old WHERE NOT EXISTS (SELECT FROM t)",
        *params.values,
    )
    if row is None:
        return None
    if row["outbox_id"] is None:
        return task_from_row(row), False
    _written(ctx, row)
    return task_from_row(row), True


async def unassign_tasks_of(conn: PgConnection, ctx: WriteContext, agent_id: UUID) -> None:
    """Unassign every task of an agent that is going away, each with an `updated` event
    and a `task.upserted` outbox message (its id to `ctx.outbox_ids`): one statement
    however many tasks it had."""
    params = Params([agent_id])
    event = _event_insert(params, "updated", ["assignee_id"], {"reason": "assignee deleted"}, ctx)
    outbox_ids = await conn.fetchval(
        "WITH t AS (UPDATE tasks SET assignee_id = NULL, version = version + 1,"
        f" updated_at = now() WHERE assignee_id = $1 RETURNING {ROW}),"
        f" e AS ({event}),"
        f" o AS ({QUEUE_UPSERTED} RETURNING id),"
        f" woken AS ({wake_when_queued('o', params(OUTBOX_CHANNEL))})"
        " SELECT array_agg(o.id ORDER BY o.id) FROM o, woken",
        *params.values,
    )
    ctx.outbox_ids.extend(outbox_ids or ())


def replay(task_id: UUID, events: Sequence[TaskEvent]) -> Task:
    """Fold a task's events, oldest first, into the row they describe."""
    if not events or events[0].type != "created":
        raise ValueError(f"task {task_id} has no created event to replay from")
    state: dict[str, Any] = {}
    for expected, event in enumerate(events, start=1):
        if event.version != expected:
            raise ValueError(f"task {task_id} is missing event version {expected}")
        for column in TASK_COLUMNS:
            if column in event.data:
                state[column] = _decode(column, event.data[column])
    return Task(
        id=task_id,
        **state,
        created_at=events[0].created_at,
        updated_at=events[-1].created_at,
        version=events[-1].version,
    )


def task_from_row(row: Record) -> Task:
    return Task(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        repository=row["repository"],
        type=row["type"],
        payload=row["payload"],
        priority=row["priority"],
        status=row["status"],
        assignee_id=row["assignee_id"],
        creator_id=row["creator_id"],
        workflow_id=row["workflow_id"],
        deadline=row["deadline"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        result=row["result"],
        error_message=row["error_message"],
        retry_count=row["retry_count"],
        max_retries=row["max_retries"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        required_capabilities=tuple(row["required_capabilities"]),
        lease_expires_at=row["lease_expires_at"],
        fencing_token=row["fencing_token"],
        worktree_path=row["worktree_path"],
    )


def event_from_row(row: Record) -> TaskEvent:
    return TaskEvent(
        id=row["id"],
        task_id=row["task_id"],
        version=row["version"],
        type=row["type"],
        data=row["data"],
        actor_id=row["actor_id"],
        created_at=row["created_at"],
    )


def _check_column(column: str) -> bool:
    # Column names become SQL text, so only the known ones may pass.
    if column not in TASK_COLUMNS:
        raise ValueError(f"{column!r} is not a task column")
    return True


def _decode(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _UUID_COLUMNS:
        return UUID(value)
    if column in _TIME_COLUMNS:
        return datetime.fromisoformat(value)
    if column == "required_capabilities":
        return tuple(value)
    return value
