from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from gateway.settings import Settings
from stores import PostgresStore, roundtrips
from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.inputs import TaskFilter, TaskInput, TaskOrder, TaskPatch
from stores.postgres.outbox import OUTBOX_CHANNEL
from stores.postgres.pagination import PageRequest
from stores.postgres.records import Task
from stores.postgres.task_events import change_task_at
from stores.postgres.tasks import AssigneeTasks
from stores.postgres.writes import json_time, to_json
from tests.integration.stores import (
    audit_rows,
    new_agent,
    new_ctx,
    new_task,
    outbox_rows,
    unique,
)


async def _walk(store: PostgresStore, task: Task, *statuses: str) -> Task:
    assignee = None
    for status in statuses:
        if status == "assigned" and task.assignee_id is None:
            assignee = (await new_agent(store)).id
        task = await store.tasks.transition(
            new_ctx(),
            task.id,
            status,
            expected_version=task.version,
            assignee_id=assignee if status == "assigned" else None,
        )
    return task


async def test_create_appends_created_event_audit_and_outbox(store: PostgresStore) -> None:
    ctx = new_ctx()
    deadline = datetime.now(UTC) + timedelta(days=2)
    task = await store.tasks.create(
        ctx,
        TaskInput(
            title=unique("triage"),
            payload={"issue": 42},
            priority=8,
            deadline=deadline,
            repository="org/repo",
        ),
    )
    assert (task.status, task.version, task.retry_count, task.priority) == ("pending", 1, 0, 8)
    assert task.deadline == deadline and task.created_at == task.updated_at

    [event] = (await store.tasks.events_of([task.id]))[task.id]
    assert (event.type, event.version, event.actor_id) == ("created", 1, ctx.actor_id)
    assert event.data["title"] == task.title and event.data["payload"] == {"issue": 42}
    assert event.created_at == task.updated_at
    [audit] = await audit_rows(store, ctx)
    assert (audit["action"], audit["resource_type"]) == ("create", "task")
    # Rendered by PostgreSQL in the same statement, as Python renders the others.
    assert (audit["old_value"], audit["new_value"]) == (None, to_json(task))
    assert ctx.audited == ["task"] and len(ctx.outbox_ids) == 1
    assert await outbox_rows(store, id=str(task.id)) == [
        (
            "task.upserted",
            {
                "id": str(task.id),
                "title": task.title,
                "status": "pending",
                "priority": 8,
                "assignee_id": None,
                "workflow_id": None,
            },
        )
    ]


async def test_create_is_one_statement_and_with_a_key_happens_once(
    single: PostgresStore,
) -> None:
    agent = await new_agent(single)
    await new_task(single, assignee_id=agent.id)  # warm: the connection knows the types
    with roundtrips.counting() as trips:
        await new_task(single, assignee_id=agent.id)
    assert trips == {"postgres": 1}
    # With an idempotency key: the key's claim and the write in one transaction.
    first = new_ctx(key=unique("key"))
    created = await single.tasks.create(first, TaskInput(title=unique("task")))
    again = replace(first, request_id=unique("req"), outbox_ids=[], audited=[])
    assert (await single.tasks.create(again, TaskInput(title=unique("task")))).id == created.id
    [audit] = await audit_rows(single, first)
    assert audit["new_value"] == to_json(created) and len(first.outbox_ids) == 1
    assert await audit_rows(single, again) == [] and again.outbox_ids == []


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 6, 11, 25, 38, tzinfo=UTC),
        datetime(2026, 12, 6, 11, 25, 38, 120_000, tzinfo=UTC),
        datetime(2026, 12, 6, 11, 25, 38, 1, tzinfo=UTC),
        datetime(2026, 12, 6, 11, 25, 38, 999_999, tzinfo=UTC),
        datetime(1999, 1, 2, 23, 59, 59, 500_000, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
async def test_json_time_renders_a_time_as_python_does(
    store: PostgresStore, moment: datetime
) -> None:
    async with store.connection() as conn:
        rendered = await conn.fetchval(f"SELECT {json_time('$1::timestamptz')}", moment)
    # asyncpg decodes every timestamptz in UTC.
    assert to_json({"at": moment.astimezone(UTC)}) == {"at": rendered}


async def test_a_task_created_with_an_assignee_starts_assigned(store: PostgresStore) -> None:
    agent = await new_agent(store)
    task = await new_task(store, assignee_id=agent.id)
    assert (task.status, task.assignee_id) == ("assigned", agent.id)
    started = await store.tasks.transition(new_ctx(), task.id, "in_progress", expected_version=1)
    assert started.started_at == started.updated_at


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"priority": 0}, "priority"),
        ({"priority": 11}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_retries": 101}, "maxRetries"),
        ({"payload": {"blob": "x" * 300_000}}, "payload"),
        ({"payload": [1, 2]}, "payload"),
        ({"deadline": datetime(2030, 1, 1)}, "deadline"),
        ({"type": ""}, "type"),
    ],
)
async def test_create_refuses_bad_input(
    store: PostgresStore, fields: dict[str, object], field: str
) -> None:
    fields = {"title": unique("task"), **fields}
    with pytest.raises(InvalidInput) as refused:
        await store.tasks.create(new_ctx(), TaskInput(**fields))  # type: ignore[arg-type]
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("column", "field"),
    [("assignee_id", "assigneeId"), ("workflow_id", "workflowId"), ("creator_id", "creatorId")],
)
async def test_create_with_unknown_references_is_not_found(
    store: PostgresStore, column: str, field: str
) -> None:
    ctx = new_ctx()
    with pytest.raises(NotFound) as refused:
        reference: dict[str, Any] = {column: uuid4()}
        await store.tasks.create(ctx, TaskInput(title=unique("task"), **reference))
    assert refused.value.field == field
    assert await audit_rows(store, ctx) == []


async def test_update_changes_fields_and_refuses_stale_versions(store: PostgresStore) -> None:
    task = await new_task(store)
    ctx = new_ctx()
    updated = await store.tasks.update(
        ctx,
        task.id,
        TaskPatch(priority=9, repository=None, deadline=None),
        expected_version=1,
    )
    assert (updated.priority, updated.version) == (9, 2)
    [_, event] = (await store.tasks.events_of([task.id]))[task.id]
    assert (event.type, event.data) == ("updated", {"priority": 9})
    # The audit row and outbox message, written by the update's own statement.
    [audit] = await audit_rows(store, ctx)
    assert (audit["action"], audit["old_value"], audit["new_value"]) == (
        "update",
        to_json(task),
        to_json(updated),
    )
    assert len(ctx.outbox_ids) == 1
    [_, (kind, payload)] = await outbox_rows(store, id=str(task.id))
    assert (kind, payload["priority"], payload["status"]) == ("task.upserted", 9, "pending")

    with pytest.raises(Conflict) as refused:
        await store.tasks.update(new_ctx(), task.id, TaskPatch(title="x"), expected_version=1)
    assert str(refused.value) == f"task {task.id} is at version 2, you sent 1; reload and retry"
    with pytest.raises(NotFound):
        await store.tasks.update(new_ctx(), uuid4(), TaskPatch(title="x"), expected_version=None)


async def test_update_is_one_statement_and_writes_only_what_differs(
    single: PostgresStore,
) -> None:
    task = await new_task(single, payload={"a": [1, 2]})
    await single.tasks.update(new_ctx(), task.id, TaskPatch(priority=2), expected_version=1)
    ctx = new_ctx()
    with roundtrips.counting() as trips:  # warm: the connection knows the types
        updated = await single.tasks.update(
            ctx, task.id, TaskPatch(priority=3, payload={"a": [1, 2]}), expected_version=2
        )
    assert trips == {"postgres": 1}
    assert (updated.priority, updated.version) == (3, 3)
    # The event and the audit row hold what changed; the payload sent again did not.
    [*_, event] = (await single.tasks.events_of([task.id]))[task.id]
    assert (event.type, event.version, event.data) == ("updated", 3, {"priority": 3})
    [audit] = await audit_rows(single, ctx)
    assert (audit["old_value"]["priority"], audit["new_value"]) == (2, to_json(updated))
    assert len(ctx.outbox_ids) == 1
    # Nothing differs: the task as it is, no version, event, audit row or message.
    same = new_ctx()
    with roundtrips.counting() as trips:
        unchanged = await single.tasks.update(
            same, task.id, TaskPatch(priority=3), expected_version=3
        )
    assert trips == {"postgres": 1} and unchanged == updated
    assert await audit_rows(single, same) == [] and same.outbox_ids == []
    assert len((await single.tasks.events_of([task.id]))[task.id]) == 3
    # A stale version is refused even when nothing would change.
    with pytest.raises(Conflict, match="is at version 3, you sent 2"):
        await single.tasks.update(new_ctx(), task.id, TaskPatch(priority=3), expected_version=2)
    # With an idempotency key: the key's claim and the write in one transaction; a
    # refusal keeps no key, so the same key may try again.
    key = unique("key")
    with pytest.raises(Conflict):
        await single.tasks.update(
            new_ctx(key=key), task.id, TaskPatch(priority=4), expected_version=1
        )
    first = new_ctx(key=key)
    keyed = await single.tasks.update(first, task.id, TaskPatch(priority=4), expected_version=3)
    again = replace(first, request_id=unique("req"), outbox_ids=[], audited=[])
    replayed = await single.tasks.update(again, task.id, TaskPatch(priority=4), expected_version=3)
    assert (keyed.version, replayed) == (4, keyed)
    assert await audit_rows(single, again) == [] and again.outbox_ids == []


async def test_a_write_that_writes_nothing_wakes_no_projector(
    settings: Settings, single: PostgresStore
) -> None:
    task = await new_task(single, priority=1)
    woken: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        await listener.add_listener(
            OUTBOX_CHANNEL, lambda _conn, _pid, _channel, payload: woken.put_nowait(payload)
        )
        # An update with nothing new, and a write at a version the row has left.
        same, stale = new_ctx(), new_ctx()
        await single.tasks.update(same, task.id, TaskPatch(priority=1), expected_version=1)
        moved = await single.tasks.update(
            new_ctx(), task.id, TaskPatch(priority=2), expected_version=None
        )
        assert await woken.get() == ""
        async with single.connection() as conn:
            written = await change_task_at(
                conn, stale, task, {"priority": 3}, "updated", audit="update"
            )
            # Notifications arrive in commit order: this one after any of the writes'.
            await conn.execute("SELECT pg_notify($1, 'marker')", OUTBOX_CHANNEL)
        assert written is None and await woken.get() == "marker"
        assert (same.audited, same.outbox_ids, stale.audited, stale.outbox_ids) == ([],) * 4
        assert (await single.tasks.by_ids([task.id]))[task.id] == moved
    finally:
        await listener.close()


async def test_transitions_stamp_times_and_keep_results(store: PostgresStore) -> None:
    agent = await new_agent(store)
    task = await new_task(store)
    assigned = await store.tasks.transition(
        new_ctx(), task.id, "assigned", expected_version=1, assignee_id=agent.id
    )
    assert (assigned.status, assigned.assignee_id) == ("assigned", agent.id)
    started = await store.tasks.transition(new_ctx(), task.id, "in_progress", expected_version=2)
    assert started.started_at is not None and started.completed_at is None
    done = await store.tasks.transition(
        new_ctx(), task.id, "completed", expected_version=3, result={"ok": True}
    )
    assert done.completed_at == done.updated_at and done.result == {"ok": True}
    events = (await store.tasks.events_of([task.id]))[task.id]
    assert [(e.type, e.version) for e in events] == [
        ("created", 1),
        ("assigned", 2),
        ("started", 3),
        ("completed", 4),
    ]
    assert events[2].data == {"status": "in_progress", "from": "assigned",
                              "started_at": events[2].data["started_at"]}  # fmt: skip
    assert [kind for kind, _ in await outbox_rows(store, id=str(task.id))] == ["task.upserted"] * 4


async def test_failed_tasks_retry_until_retries_run_out(store: PostgresStore) -> None:
    task = await new_task(store, max_retries=1)
    task = await _walk(store, task, "assigned", "in_progress")
    failed = await store.tasks.transition(
        new_ctx(), task.id, "failed", expected_version=task.version, error_message="boom"
    )
    assert (failed.error_message, failed.completed_at is not None) == ("boom", True)
    retried = await store.tasks.transition(
        new_ctx(), task.id, "pending", expected_version=failed.version
    )
    assert (retried.status, retried.retry_count) == ("pending", 1)
    assert (retried.error_message, retried.started_at, retried.completed_at) == (None, None, None)
    assert retried.assignee_id == task.assignee_id
    # The retried task keeps its assignee, so assigning again needs no new one.
    again = await _walk(store, retried, "assigned", "in_progress", "failed")
    with pytest.raises(Conflict, match="has used all 1 retries; raise maxRetries"):
        await store.tasks.transition(new_ctx(), task.id, "pending", expected_version=None)
    raised = await store.tasks.update(
        new_ctx(), task.id, TaskPatch(max_retries=2), expected_version=again.version
    )
    assert (await _walk(store, raised, "pending")).retry_count == 2


@pytest.mark.parametrize(
    ("to_status", "arguments", "field"),
    [
        ("in_progress", {"assignee_id": uuid4()}, "assigneeId"),
        ("failed", {"result": {"x": 1}}, "result"),
        ("completed", {"error_message": "no"}, "errorMessage"),
        ("completed", {"result": [1]}, "result"),
        ("done", {}, "status"),
        ("assigned", {}, "assigneeId"),
    ],
)
async def test_transition_refuses_arguments_that_do_not_fit(
    store: PostgresStore, to_status: str, arguments: dict[str, object], field: str
) -> None:
    task = await new_task(store)
    if to_status in ("failed", "completed"):
        task = await _walk(store, task, "assigned", "in_progress")
    with pytest.raises(InvalidInput) as refused:
        await store.tasks.transition(
            new_ctx(),
            task.id,
            to_status,
            expected_version=None,
            **arguments,  # type: ignore[arg-type]
        )
    assert refused.value.field == field


async def test_assigning_to_an_unknown_agent_is_not_found(store: PostgresStore) -> None:
    task = await new_task(store)
    with pytest.raises(NotFound) as refused:
        await store.tasks.transition(
            new_ctx(), task.id, "assigned", expected_version=1, assignee_id=uuid4()
        )
    assert refused.value.field == "assigneeId"
    assert (await store.tasks.by_ids([task.id]))[task.id] == task


async def test_an_illegal_transition_writes_nothing(store: PostgresStore) -> None:
    task = await new_task(store)
    ctx = new_ctx()
    with pytest.raises(Conflict, match="cannot move from pending to completed"):
        await store.tasks.transition(ctx, task.id, "completed", expected_version=1)
    assert (await store.tasks.by_ids([task.id]))[task.id] == task
    assert len((await store.tasks.events_of([task.id]))[task.id]) == 1
    assert await audit_rows(store, ctx) == []
    assert len(await outbox_rows(store, id=str(task.id))) == 1


async def test_transition_with_an_idempotency_key_happens_once(store: PostgresStore) -> None:
    task = await _walk(store, await new_task(store), "assigned")
    actor, key = uuid4(), unique("key")
    results = await asyncio.gather(
        *(
            store.tasks.transition(
                new_ctx(actor_id=actor, key=key), task.id, "in_progress", expected_version=2
            )
            for _ in range(3)
        )
    )
    assert {result.version for result in results} == {3}
    events = (await store.tasks.events_of([task.id]))[task.id]
    assert [e.type for e in events].count("started") == 1
    with pytest.raises(Conflict) as reused:
        await store.tasks.transition(
            new_ctx(actor_id=actor, key=key), task.id, "cancelled", expected_version=None
        )
    assert reused.value.field == "idempotencyKey"


async def test_for_assignees_matches_one_query_per_agent(store: PostgresStore) -> None:
    agents = [await new_agent(store) for _ in range(3)]
    for index, agent in enumerate(agents):
        for _ in range(index * 2):
            await new_task(store, assignee_id=agent.id)
    busy = agents[2]
    started = (await store.tasks.list(
        TaskFilter(assignee_id=busy.id), TaskOrder.CREATED_AT_ASC, PageRequest(first=1)
    )).items[0]  # fmt: skip
    await _walk(store, started, "in_progress")

    for first, statuses in ((3, None), (0, None), (10, ["assigned"]), (2, ["in_progress"])):
        batched = await store.tasks.for_assignees(
            [agent.id for agent in agents], first=first, statuses=statuses, with_total=True
        )
        uncounted = await store.tasks.for_assignees(
            [agent.id for agent in agents], first=first, statuses=statuses
        )
        assert list(batched) == list(uncounted) == [agent.id for agent in agents]
        for agent in agents:
            page = await store.tasks.list(
                TaskFilter(assignee_id=agent.id, statuses=statuses),
                TaskOrder.CREATED_AT_DESC,
                PageRequest(first=first),
                with_total=True,
            )
            expected = AssigneeTasks(page.items, page.total_count, page.has_next_page)
            assert batched[agent.id] == expected
            assert uncounted[agent.id] == AssigneeTasks(page.items, None, page.has_next_page)

    with pytest.raises(InvalidInput):
        await store.tasks.for_assignees([agents[0].id], first=101, statuses=None)


async def test_batch_reads_are_one_statement_each(single: PostgresStore) -> None:
    agent = await new_agent(single)
    tasks = [await new_task(single, assignee_id=agent.id) for _ in range(3)]
    ids = [task.id for task in tasks]
    await single.tasks.add_dependency(new_ctx(), ids[0], ids[1])

    async def baseline() -> None:
        async with single.connection() as conn:
            await conn.fetchval("SELECT 1")

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: single.tasks.by_ids(ids),
        lambda: single.tasks.events_of(ids),
        lambda: single.tasks.events_of(ids, first=2),
        lambda: single.tasks.dependencies_of(ids, first=10),
        lambda: single.tasks.dependents_of(ids),
        lambda: single.tasks.for_assignees([agent.id, uuid4()], first=2, statuses=None),
        lambda: single.tasks.for_assignees([agent.id], first=2, statuses=["assigned", "failed"]),
    ]
    await baseline()
    for call in calls:
        await call()  # warm: the first use of a type on a connection introspects it
    with roundtrips.counting() as one_statement:
        await baseline()
    for call in calls:
        with roundtrips.counting() as counter:
            await call()
        assert counter == one_statement


async def test_dependencies_and_dependents(store: PostgresStore) -> None:
    a, b, c = [await new_task(store) for _ in range(3)]
    ctx = new_ctx()
    after, added = await store.tasks.add_dependency(ctx, a.id, b.id)
    await store.tasks.add_dependency(new_ctx(), a.id, c.id)
    await store.tasks.add_dependency(new_ctx(), b.id, c.id)

    assert (after.version, added) == (2, True)
    assert (await store.tasks.dependencies_of([a.id, b.id, c.id], first=10)) == {
        a.id: [b.id, c.id],
        b.id: [c.id],
        c.id: [],
    }
    # At most `first` per task, oldest link first; none without a round trip.
    assert (await store.tasks.dependencies_of([a.id, b.id], first=1)) == {
        a.id: [b.id],
        b.id: [c.id],
    }
    with roundtrips.counting() as counter:
        assert (await store.tasks.dependencies_of([a.id], first=0)) == {a.id: []}
    assert counter == {}
    assert (await store.tasks.dependents_of([c.id]))[c.id] == [a.id, b.id]
    [audit] = await audit_rows(store, ctx)
    assert audit["action"] == "add_dependency"
    edge = {"task_id": str(a.id), "depends_on_id": str(b.id)}
    assert ("task.dependency_added", edge) in await outbox_rows(store, task_id=str(a.id))

    # Adding an existing edge changes nothing, and says so.
    same, added_again = await store.tasks.add_dependency(new_ctx(), a.id, b.id)
    assert (same.version, added_again) == (3, False)

    assert await store.tasks.remove_dependency(new_ctx(), a.id, b.id)
    assert not await store.tasks.remove_dependency(new_ctx(), a.id, b.id)
    assert ("task.dependency_removed", edge) in await outbox_rows(store, task_id=str(a.id))
    assert (await store.tasks.dependencies_of([a.id], first=10))[a.id] == [c.id]
    types = [e.type for e in (await store.tasks.events_of([a.id]))[a.id]]
    assert types == ["created", "dependency_added", "dependency_added", "dependency_removed"]
    # The oldest `first` of each task's history.
    oldest = await store.tasks.events_of([a.id, b.id], first=2)
    assert [e.type for e in oldest[a.id]] == ["created", "dependency_added"]
    assert [e.version for e in oldest[b.id]] == [1, 2]


async def test_a_cycle_is_refused_with_its_path_named(store: PostgresStore) -> None:
    a, b, c, d = [await new_task(store) for _ in range(4)]
    for task, depends_on in ((a, b), (b, c), (c, d), (a, d)):
        await store.tasks.add_dependency(new_ctx(), task.id, depends_on.id)
    ctx = new_ctx()

    with pytest.raises(Conflict) as refused:
        await store.tasks.add_dependency(ctx, d.id, a.id)
    loop = " -> ".join(f"{t.title!r} ({t.id})" for t in (d, a, d))
    # The shortest way back: a waits for d directly.
    assert f"would create a cycle: {loop}" in str(refused.value)
    assert refused.value.field == "dependsOnId"

    with pytest.raises(Conflict) as longer:
        await store.tasks.add_dependency(ctx, c.id, a.id)
    loop = " -> ".join(f"{t.title!r} ({t.id})" for t in (c, a, b, c))
    assert f"would create a cycle: {loop}" in str(longer.value)

    with pytest.raises(Conflict, match="cannot depend on itself"):
        await store.tasks.add_dependency(ctx, a.id, a.id)
    assert await audit_rows(store, ctx) == []
    assert (await store.tasks.dependents_of([a.id]))[a.id] == []


async def test_dependencies_on_unknown_tasks_are_not_found(store: PostgresStore) -> None:
    task = await new_task(store)
    with pytest.raises(NotFound) as missing_target:
        await store.tasks.add_dependency(new_ctx(), task.id, uuid4())
    with pytest.raises(NotFound) as missing_source:
        await store.tasks.add_dependency(new_ctx(), uuid4(), task.id)
    assert (missing_target.value.field, missing_source.value.field) == ("dependsOnId", "taskId")


async def test_concurrent_opposite_edges_cannot_both_land(store: PostgresStore) -> None:
    for _ in range(5):
        a, b = await new_task(store), await new_task(store)
        results = await asyncio.gather(
            store.tasks.add_dependency(new_ctx(), a.id, b.id),
            store.tasks.add_dependency(new_ctx(), b.id, a.id),
            return_exceptions=True,
        )
        assert sorted(type(result).__name__ for result in results) == ["Conflict", "tuple"]


async def test_concurrent_updates_each_land_on_the_version_before_them(
    store: PostgresStore,
) -> None:
    task = await new_task(store)
    # Unconditional updates, each of a title no other sends: all land, one version
    # each, events without a gap, the row as the last event left it.
    titles = [unique("title") for _ in range(8)]
    await asyncio.gather(
        *(
            store.tasks.update(new_ctx(), task.id, TaskPatch(title=t), expected_version=None)
            for t in titles
        )
    )
    events = (await store.tasks.events_of([task.id]))[task.id]
    assert [event.version for event in events] == list(range(1, len(titles) + 2))
    current = (await store.tasks.by_ids([task.id]))[task.id]
    assert current.title == events[-1].data["title"]
    # Updates sent against the same version: one lands, the others are refused.
    results = await asyncio.gather(
        *(
            store.tasks.update(
                new_ctx(), task.id, TaskPatch(title=unique("t")), expected_version=current.version
            )
            for _ in range(4)
        ),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in results) == [
        "Conflict",
        "Conflict",
        "Conflict",
        "Task",
    ]


async def test_a_move_reads_then_writes_at_the_version_it_read(single: PostgresStore) -> None:
    agent = await new_agent(single)
    task = await new_task(single)
    await single.tasks.transition(  # warm: the connection knows the statements' types
        new_ctx(), task.id, "assigned", expected_version=1, assignee_id=agent.id
    )
    with roundtrips.counting() as trips:
        started = await single.tasks.transition(
            new_ctx(), task.id, "in_progress", expected_version=None
        )
    # The read and the write; BEGIN, the lock, the write and COMMIT before.
    assert trips == {"postgres": 2} and started.version == 3
    # Moves racing on one task, without versions: each lands on the row as the one
    # before it left it (a row that moved after it was read is read again), or is
    # refused by the state machine; the events have no gap.
    racing = await new_task(single)
    moves = [("assigned", agent.id)] * 3 + [("cancelled", None)] * 3
    results = await asyncio.gather(
        *(
            single.tasks.transition(
                new_ctx(), racing.id, status, expected_version=None, assignee_id=assignee
            )
            for status, assignee in moves
        ),
        return_exceptions=True,
    )
    landed = [result for result in results if isinstance(result, Task)]
    assert all(isinstance(result, (Task, Conflict)) for result in results), results
    events = (await single.tasks.events_of([racing.id]))[racing.id]
    assert [event.version for event in events] == list(range(1, len(landed) + 2))
    assert sorted(task.version for task in landed) == list(range(2, len(landed) + 2))
    assert (await single.tasks.by_ids([racing.id]))[racing.id].status == "cancelled"


async def test_idempotent_dependency_writes(store: PostgresStore) -> None:
    a, b = await new_task(store), await new_task(store)
    actor = uuid4()
    add = new_ctx(actor_id=actor, key=unique("key"))
    first = await store.tasks.add_dependency(add, a.id, b.id)
    assert first[1] is True
    # The retry replays the first answer: added, although the edge exists now.
    assert await store.tasks.add_dependency(add, a.id, b.id) == first
    remove = new_ctx(actor_id=actor, key=unique("key"))
    assert await store.tasks.remove_dependency(remove, a.id, b.id)
    assert await store.tasks.remove_dependency(remove, a.id, b.id)
    types = [e.type for e in (await store.tasks.events_of([a.id]))[a.id]]
    assert types == ["created", "dependency_added", "dependency_removed"]


async def test_rebuild_from_events_equals_the_row(store: PostgresStore) -> None:
    workflow = await store.workflows.create(
        new_ctx(), unique("flow"), {"steps": [{"id": "a", "name": "A"}], "edges": []}
    )
    other = await new_task(store)
    task = await new_task(store, payload={"a": [1, 2]}, max_retries=2)
    task = await store.tasks.update(
        new_ctx(),
        task.id,
        TaskPatch(
            title=unique("renamed"),
            workflow_id=workflow.id,
            priority=2,
            deadline=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        ),
        expected_version=task.version,
    )
    task = await _walk(store, task, "assigned", "in_progress")
    task = await store.tasks.transition(
        new_ctx(), task.id, "failed", expected_version=task.version, error_message="flaky"
    )
    task = await _walk(store, task, "pending", "assigned", "in_progress")
    await store.tasks.add_dependency(new_ctx(), task.id, other.id)
    task = (await store.tasks.by_ids([task.id]))[task.id]
    task = await store.tasks.transition(
        new_ctx(), task.id, "completed", expected_version=task.version, result={"n": 3}
    )

    assert await store.tasks.rebuild_from_events(task.id) == task
    # A row that drifted from its events is put back.
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE tasks SET title = 'drifted', retry_count = 0, version = 99 WHERE id = $1",
            task.id,
        )
    assert await store.tasks.rebuild_from_events(task.id) == task
    assert (await store.tasks.by_ids([task.id]))[task.id] == task
    with pytest.raises(NotFound):
        await store.tasks.rebuild_from_events(uuid4())


async def test_list_filters_and_orders(store: PostgresStore) -> None:
    workflow = await store.workflows.create(
        new_ctx(), unique("flow"), {"steps": [{"id": "a", "name": "A"}]}
    )
    marker = unique("batch")
    low = await new_task(store, title=f"{marker} low", priority=1, workflow_id=workflow.id)
    high = await new_task(store, title=f"{marker} high", priority=9, workflow_id=workflow.id,
                          type="review")  # fmt: skip
    mid = await new_task(store, title=f"{marker} mid", priority=5, workflow_id=workflow.id)
    mid = await _walk(store, mid, "assigned")

    async def titles(order: TaskOrder, **criteria: object) -> list[str]:
        page = await store.tasks.list(
            TaskFilter(workflow_id=workflow.id, **criteria),  # type: ignore[arg-type]
            order,
            PageRequest(first=10),
        )
        return [task.title for task in page.items]

    assert await titles(TaskOrder.PRIORITY_DESC) == [high.title, mid.title, low.title]
    assert await titles(TaskOrder.PRIORITY_ASC) == [low.title, mid.title, high.title]
    assert await titles(TaskOrder.CREATED_AT_DESC) == [mid.title, high.title, low.title]
    assert await titles(TaskOrder.CREATED_AT_ASC, statuses=["pending"]) == [low.title, high.title]
    assert await titles(TaskOrder.CREATED_AT_ASC, assignee_id=None) == [low.title, high.title]
    assert await titles(TaskOrder.CREATED_AT_ASC, types=["review"]) == [high.title]
    assert await titles(TaskOrder.CREATED_AT_ASC, min_priority=2, max_priority=8) == [mid.title]
    assert await titles(TaskOrder.CREATED_AT_ASC, title_contains=f"{marker} h") == [high.title]
