"""The task state machine, as a table.

    pending -> assigned -> in_progress -> completed
                                      -> failed -> pending   (while retries remain)
    pending | assigned | in_progress  -> cancelled

A task must be assigned before it starts. Completed and cancelled are final;
failed is final once `retry_count` reaches `max_retries`. Claims move a task from
pending to assigned too; a claim whose lease lapses sends an assigned or in-progress
task back to pending (or to failed, retries used up) outside this table: no one asks
for that move, the lease sweep makes it (stores/postgres/task_claims.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from stores.errors import Conflict, InvalidInput
from stores.postgres.records import Task

STATUSES = ("pending", "assigned", "in_progress", "completed", "failed", "cancelled")
OPEN_STATUSES = frozenset({"pending", "assigned", "in_progress"})

TRANSITIONS: Mapping[str, tuple[str, ...]] = {
    "pending": ("assigned", "cancelled"),
    "assigned": ("in_progress", "cancelled"),
    "in_progress": ("completed", "failed", "cancelled"),
    "completed": (),
    "failed": ("pending",),
    "cancelled": (),
}

# The task event each transition appends, by target status (failed -> pending is a retry).
EVENT_TYPES: Mapping[str, str] = {
    "assigned": "assigned",
    "in_progress": "started",
    "completed": "completed",
    "failed": "failed",
    "pending": "retried",
    "cancelled": "cancelled",
}


def allowed_next(task: Task) -> tuple[str, ...]:
    """Where `task` can go from here, retries left taken into account."""
    if task.status == "failed" and task.retry_count >= task.max_retries:
        return ()
    return TRANSITIONS[task.status]


def check_transition(task: Task, to_status: str) -> None:
    """Refuse a move the table does not allow, saying which moves are allowed."""
    if to_status not in TRANSITIONS:
        raise InvalidInput("status", f"unknown status {to_status!r}; use one of {_list(STATUSES)}")
    if to_status in allowed_next(task):
        return
    if task.status == "failed" and to_status == "pending":
        raise Conflict(
            f"task {task.id} has used all {task.max_retries} retries; "
            "raise maxRetries to retry it again",
            field="status",
        )
    allowed = allowed_next(task)
    hint = f"it can move to {_list(allowed)}" if allowed else "it is final"
    raise Conflict(
        f"task {task.id} cannot move from {task.status} to {to_status}; {hint}", field="status"
    )


def _list(statuses: tuple[str, ...]) -> str:
    return ", ".join(statuses)
