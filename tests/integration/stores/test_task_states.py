"""Every (from, to) pair of task statuses, against the table and against the database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from stores import PostgresStore
from stores.errors import Conflict, InvalidInput
from stores.postgres.records import Task
from stores.postgres.task_states import STATUSES, check_transition
from tests.integration.stores import new_agent, new_ctx, new_task

# Written out again here, independently of the module, so a change to either shows.
ALLOWED = {
    ("pending", "assigned"),
    ("pending", "cancelled"),
    ("assigned", "in_progress"),
    ("assigned", "cancelled"),
    ("in_progress", "completed"),
    ("in_progress", "failed"),
    ("in_progress", "cancelled"),
    ("failed", "pending"),
}
EVENTS = {
    "assigned": "assigned",
    "in_progress": "started",
    "completed": "completed",
    "failed": "failed",
    "pending": "retried",
    "cancelled": "cancelled",
}
# How to reach each status from a new, pending task.
PATHS = {
    "pending": (),
    "assigned": ("assigned",),
    "in_progress": ("assigned", "in_progress"),
    "completed": ("assigned", "in_progress", "completed"),
    "failed": ("assigned", "in_progress", "failed"),
    "cancelled": ("cancelled",),
}
PAIRS = list(itertools.product(STATUSES, STATUSES))


def _task(status: str, *, retry_count: int = 0, max_retries: int = 3) -> Task:
    now = datetime.now(UTC)
    return Task(
        id=uuid4(),
        title="t",
        description="",
        repository=None,
        type="generic",
        payload={},
        priority=5,
        status=status,
        assignee_id=None,
        creator_id=None,
        workflow_id=None,
        deadline=None,
        started_at=None,
        completed_at=None,
        result=None,
        error_message=None,
        retry_count=retry_count,
        max_retries=max_retries,
        created_at=now,
        updated_at=now,
        version=1,
    )


@pytest.mark.parametrize(("from_status", "to_status"), PAIRS)
def test_table(from_status: str, to_status: str) -> None:
    task = _task(from_status)
    if (from_status, to_status) in ALLOWED:
        check_transition(task, to_status)
        return
    with pytest.raises(Conflict) as refused:
        check_transition(task, to_status)
    allowed = [to for (frm, to) in sorted(ALLOWED) if frm == from_status]
    message = str(refused.value)
    assert f"cannot move from {from_status} to {to_status}" in message
    for status in allowed:
        assert status in message.split(";")[1]
    if not allowed:
        assert message.endswith("it is final")


def test_retries_run_out() -> None:
    check_transition(_task("failed", retry_count=2, max_retries=3), "pending")
    with pytest.raises(Conflict, match="used all 3 retries"):
        check_transition(_task("failed", retry_count=3, max_retries=3), "pending")
    with pytest.raises(Conflict, match="it is final"):
        check_transition(_task("failed", max_retries=0), "cancelled")


def test_unknown_status_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_transition(_task("pending"), "paused")
    assert refused.value.field == "status"


@pytest.mark.parametrize(("from_status", "to_status"), PAIRS)
async def test_database(store: PostgresStore, from_status: str, to_status: str) -> None:
    agent = await new_agent(store)
    task = await new_task(store)
    for step in PATHS[from_status]:
        task = await store.tasks.transition(
            new_ctx(),
            task.id,
            step,
            expected_version=task.version,
            assignee_id=agent.id if step == "assigned" else None,
        )
    assert task.status == from_status

    attempt = store.tasks.transition(
        new_ctx(),
        task.id,
        to_status,
        expected_version=task.version,
        assignee_id=agent.id if to_status == "assigned" else None,
    )
    if (from_status, to_status) not in ALLOWED:
        with pytest.raises(Conflict):
            await attempt
        assert (await store.tasks.by_ids([task.id]))[task.id] == task
        return
    moved = await attempt
    assert (moved.status, moved.version) == (to_status, task.version + 1)
    last = (await store.tasks.events_of([task.id]))[task.id][-1]
    assert (last.type, last.version, last.data["from"]) == (
        EVENTS[to_status],
        moved.version,
        from_status,
    )
