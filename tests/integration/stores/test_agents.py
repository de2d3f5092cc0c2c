from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import pytest

from stores import PostgresStore, roundtrips
from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres import bulk
from stores.postgres.inputs import (
    UNSET,
    AgentFilter,
    AgentInput,
    AgentOrder,
    AgentPatch,
    TaskOrder,
    TasksOfEach,
)
from stores.postgres.pagination import PageRequest
from stores.postgres.records import Task
from stores.postgres.writes import to_json
from tests.integration.stores import (
    audit_rows,
    new_agent,
    new_ctx,
    new_task,
    outbox_rows,
    unique,
)


async def test_create_writes_row_audit_and_outbox_together(store: PostgresStore) -> None:
    ctx = new_ctx()
    name = unique("scout")
    agent = await store.agents.create(
        ctx,
        AgentInput(
            name=name,
            role="researcher",
            capabilities=["search", "search", "summarise"],
            tags=["blue"],
            metadata={"model": "small"},
        ),
    )

    assert (agent.name, agent.role, agent.status, agent.version) == (
        name,
        "researcher",
        "idle",
        1,
    )
    assert agent.capabilities == ("search", "summarise")
    assert (await store.agents.by_ids([agent.id]))[agent.id] == agent
    [audit] = await audit_rows(store, ctx)
    assert audit["action"] == "create" and audit["resource_type"] == "agent"
    assert audit["resource_id"] == str(agent.id) and audit["actor_id"] == ctx.actor_id
    assert audit["old_value"] is None and audit["new_value"]["name"] == name
    assert audit["client_address"] == "127.0.0.1"
    assert await outbox_rows(store, id=str(agent.id)) == [
        (
            "agent.upserted",
            {
                "id": str(agent.id),
                "name": name,
                "role": "researcher",
                "status": "idle",
                "parent_id": None,
            },
        )
    ]


async def test_duplicate_name_is_a_conflict_and_writes_nothing(store: PostgresStore) -> None:
    first = await new_agent(store)
    ctx = new_ctx()
    with pytest.raises(Conflict) as refused:
        await store.agents.create(ctx, AgentInput(name=first.name))
    assert refused.value.field == "name"
    assert first.name in str(refused.value) and "choose another name" in str(refused.value)
    assert await audit_rows(store, ctx) == []
    assert len(await outbox_rows(store, name=first.name)) == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"role": ""}, "role"),
        ({"status": "sleeping"}, "status"),
        ({"tags": "not-a-list"}, "tags"),
        ({"capabilities": [""]}, "capabilities"),
        ({"metadata": {"blob": "x" * 70_000}}, "metadata"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
    ],
)
async def test_bad_input_is_refused_before_writing(
    store: PostgresStore, fields: dict[str, object], field: str
) -> None:
    fields = {"name": unique("agent"), **fields}
    with pytest.raises(InvalidInput) as refused:
        await store.agents.create(new_ctx(), AgentInput(**fields))  # type: ignore[arg-type]
    assert refused.value.field == field


async def test_values_postgresql_cannot_store_are_invalid_input(store: PostgresStore) -> None:
    with pytest.raises(InvalidInput, match="cannot store"):
        await new_agent(store, name=unique("nul\x00"))
    with pytest.raises(InvalidInput, match="cannot store"):
        await new_agent(store, metadata={"text": "nul\u0000"})
    with pytest.raises(InvalidInput, match="cannot store"):
        await store.agents.list(
            AgentFilter(name_contains="\x00"), AgentOrder.NAME_ASC, PageRequest()
        )


async def test_metadata_limit_names_the_size(store: PostgresStore) -> None:
    with pytest.raises(InvalidInput, match="64 KiB"):
        await new_agent(store, metadata={"blob": "x" * 70_000})


async def test_unknown_parent_is_not_found(store: PostgresStore) -> None:
    missing = uuid4()
    with pytest.raises(NotFound) as refused:
        await new_agent(store, parent_id=missing)
    assert refused.value.field == "parentId" and refused.value.key == missing


async def test_update_bumps_version_and_refuses_stale_versions(store: PostgresStore) -> None:
    agent = await new_agent(store)
    ctx = new_ctx()
    updated = await store.agents.update(
        ctx, agent.id, AgentPatch(status="busy", tags=["red"]), expected_version=1
    )
    assert (updated.status, updated.tags, updated.version) == ("busy", ("red",), 2)
    assert updated.updated_at > agent.updated_at
    [audit] = await audit_rows(store, ctx)
    assert audit["old_value"]["status"] == "idle" and audit["new_value"]["status"] == "busy"

    stale = new_ctx()
    with pytest.raises(Conflict) as refused:
        await store.agents.update(stale, agent.id, AgentPatch(status="idle"), expected_version=1)
    assert str(refused.value) == (f"agent {agent.id} is at version 2, you sent 1; reload and retry")
    assert refused.value.field == "expectedVersion"
    assert (await store.agents.by_ids([agent.id]))[agent.id] == updated
    assert await audit_rows(store, stale) == []


async def test_update_without_changes_writes_nothing(store: PostgresStore) -> None:
    agent = await new_agent(store, role="critic")
    ctx = new_ctx()
    same = await store.agents.update(
        ctx, agent.id, AgentPatch(role="critic"), expected_version=None
    )
    assert same == agent
    assert await audit_rows(store, ctx) == []


async def test_update_unknown_agent_is_not_found(store: PostgresStore) -> None:
    with pytest.raises(NotFound):
        await store.agents.update(new_ctx(), uuid4(), AgentPatch(notes="x"), expected_version=None)


async def test_rename_onto_a_taken_name_is_a_conflict(store: PostgresStore) -> None:
    taken, agent = await new_agent(store), await new_agent(store)
    with pytest.raises(Conflict) as refused:
        await store.agents.update(
            new_ctx(), agent.id, AgentPatch(name=taken.name), expected_version=None
        )
    assert refused.value.field == "name"


async def test_parent_is_set_and_cleared_unset_leaves_it(store: PostgresStore) -> None:
    parent = await new_agent(store)
    child = await new_agent(store)
    moved = await store.agents.update(
        new_ctx(), child.id, AgentPatch(parent_id=parent.id), expected_version=None
    )
    assert moved.parent_id == parent.id
    kept = await store.agents.update(
        new_ctx(), child.id, AgentPatch(notes="still a child"), expected_version=None
    )
    assert kept.parent_id == parent.id
    cleared = await store.agents.update(
        new_ctx(), child.id, AgentPatch(parent_id=None), expected_version=None
    )
    assert cleared.parent_id is None and cleared.version == 4


async def test_parent_cycles_are_refused_naming_the_loop(store: PostgresStore) -> None:
    top = await new_agent(store)
    middle = await new_agent(store, parent_id=top.id)
    bottom = await new_agent(store, parent_id=middle.id)

    with pytest.raises(Conflict) as refused:
        await store.agents.update(
            new_ctx(), top.id, AgentPatch(parent_id=bottom.id), expected_version=None
        )
    message = str(refused.value)
    loop = " -> ".join(f"{a.name} ({a.id})" for a in (top, bottom, middle, top))
    assert f"would create a cycle: {loop}" in message
    assert refused.value.field == "parentId"

    with pytest.raises(Conflict, match="would create a cycle"):
        await store.agents.update(
            new_ctx(), top.id, AgentPatch(parent_id=top.id), expected_version=None
        )
    assert (await store.agents.by_ids([top.id]))[top.id].parent_id is None


async def test_concurrent_parent_moves_cannot_close_a_loop(store: PostgresStore) -> None:
    for _ in range(10):
        await _race_parent_moves(store)


async def _race_parent_moves(store: PostgresStore) -> None:
    one, two = await new_agent(store), await new_agent(store)
    results = await asyncio.gather(
        store.agents.update(new_ctx(), one.id, AgentPatch(parent_id=two.id), expected_version=1),
        store.agents.update(new_ctx(), two.id, AgentPatch(parent_id=one.id), expected_version=1),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in results) == ["Agent", "Conflict"]


async def test_delete_unassigns_tasks_and_orphans_children(store: PostgresStore) -> None:
    agent = await new_agent(store)
    child = await new_agent(store, parent_id=agent.id)
    task = await new_task(store, assignee_id=agent.id)
    ctx = new_ctx()

    with pytest.raises(Conflict):
        await store.agents.delete(ctx, agent.id, expected_version=7)
    deleted = await store.agents.delete(ctx, agent.id, expected_version=1)

    assert deleted == agent
    assert await store.agents.by_ids([agent.id]) == {}
    orphan = (await store.agents.by_ids([child.id]))[child.id]
    assert orphan.parent_id is None and orphan.version == child.version + 1
    unassigned = (await store.tasks.by_ids([task.id]))[task.id]
    assert unassigned.assignee_id is None and unassigned.version == 2
    events = (await store.tasks.events_of([task.id]))[task.id]
    assert [(e.type, e.data) for e in events][-1] == (
        "updated",
        {"assignee_id": None, "reason": "assignee deleted"},
    )
    assert await store.tasks.rebuild_from_events(task.id) == unassigned
    assert (await outbox_rows(store, id=str(task.id)))[-2:] == [
        ("task.upserted", upserted(unassigned)),
        # Written again by the repair, from the same row.
        ("task.upserted", upserted(unassigned)),
    ]
    assert [a["action"] for a in await audit_rows(store, ctx)] == ["delete"]
    assert (await outbox_rows(store, id=str(agent.id)))[-1] == (
        "agent.deleted",
        {"id": str(agent.id)},
    )
    with pytest.raises(NotFound):
        await store.agents.delete(new_ctx(), agent.id, expected_version=None)


def upserted(task: Task) -> dict[str, object]:
    """The `task.upserted` payload the projector reads for `task`."""
    fields = ("id", "title", "status", "priority", "assignee_id", "workflow_id")
    return {field: to_json(task)[field] for field in fields}


async def test_deleting_an_agent_takes_as_many_round_trips_with_many_tasks_and_children(
    store: PostgresStore,
) -> None:
    async def delete_with(count: int) -> tuple[dict[str, int], list[UUID], list[UUID], list[int]]:
        agent = await new_agent(store)
        tasks = [(await new_task(store, assignee_id=agent.id)).id for _ in range(count)]
        children = [(await new_agent(store, parent_id=agent.id)).id for _ in range(count)]
        ctx = new_ctx()
        with roundtrips.counting() as trips:
            await store.agents.delete(ctx, agent.id, expected_version=None)
        return trips, tasks, children, ctx.outbox_ids

    one_trips, *_ = await delete_with(1)
    trips, task_ids, child_ids, outbox_ids = await delete_with(25)
    assert trips == one_trips
    unassigned = await store.tasks.by_ids(task_ids)
    orphans = await store.agents.by_ids(child_ids)
    assert all(task.assignee_id is None for task in unassigned.values())
    assert all(child.parent_id is None for child in orphans.values())
    async with store.connection() as conn:
        queued = await conn.fetch(
            "SELECT kind, payload FROM outbox WHERE id = ANY($1::bigint[])", outbox_ids
        )
    messages = {(row["kind"], row["payload"]["id"]): row["payload"] for row in queued}
    assert {key: value for key, value in messages.items() if key[0] == "task.upserted"} == {
        ("task.upserted", str(task.id)): upserted(task) for task in unassigned.values()
    }
    assert {key for key in messages if key[0] == "agent.upserted"} == {
        ("agent.upserted", str(child_id)) for child_id in child_ids
    }
    assert all(
        messages["agent.upserted", str(child.id)]["parent_id"] is None for child in orphans.values()
    )


async def test_relate_upserts_and_unrelate_removes(store: PostgresStore) -> None:
    one, two = await new_agent(store), await new_agent(store)
    ctx = new_ctx()
    first = await store.agents.relate(ctx, one.id, two.id, "COLLABORATES_WITH", 0.5)
    again = await store.agents.relate(new_ctx(), one.id, two.id, "COLLABORATES_WITH", 2.0)
    assert (first.weight, again.weight) == (0.5, 2.0)
    assert again.created_at == first.created_at
    await store.agents.relate(new_ctx(), two.id, one.id, "DELEGATES_TO")

    found = await store.agents.relationships_of([one.id, two.id, uuid4()])
    assert [(r.source_id, r.type, r.weight) for r in found[one.id]] == [
        (one.id, "COLLABORATES_WITH", 2.0),
        (two.id, "DELEGATES_TO", 1.0),
    ]
    assert found[one.id] == found[two.id]
    [audit] = await audit_rows(store, ctx)
    assert audit["action"] == "relate" and audit["resource_type"] == "agent_relationship"
    related = await outbox_rows(store, source_id=str(one.id))
    assert related[0] == (
        "agent.related",
        {
            "source_id": str(one.id),
            "target_id": str(two.id),
            "type": "COLLABORATES_WITH",
            "weight": 0.5,
        },
    )

    assert await store.agents.unrelate(new_ctx(), one.id, two.id, "COLLABORATES_WITH")
    assert not await store.agents.unrelate(new_ctx(), one.id, two.id, "COLLABORATES_WITH")
    assert (await outbox_rows(store, source_id=str(one.id)))[-1] == (
        "agent.unrelated",
        {"source_id": str(one.id), "target_id": str(two.id), "type": "COLLABORATES_WITH"},
    )
    remaining = await store.agents.relationships_of([one.id])
    assert [r.type for r in remaining[one.id]] == ["DELEGATES_TO"]


@pytest.mark.parametrize(
    ("kind", "weight", "same", "field"),
    [
        ("PARENT_OF", 1.0, False, "type"),
        ("LIKES", 1.0, False, "type"),
        ("DELEGATES_TO", -1.0, False, "weight"),
        ("DELEGATES_TO", float("nan"), False, "weight"),
        ("DELEGATES_TO", 1.0, True, "targetId"),
    ],
)
async def test_relate_refuses_bad_input(
    store: PostgresStore, kind: str, weight: float, same: bool, field: str
) -> None:
    one, two = await new_agent(store), await new_agent(store)
    with pytest.raises(InvalidInput) as refused:
        await store.agents.relate(new_ctx(), one.id, one.id if same else two.id, kind, weight)
    assert refused.value.field == field


async def test_relate_to_unknown_agents_is_not_found(store: PostgresStore) -> None:
    agent = await new_agent(store)
    with pytest.raises(NotFound) as target:
        await store.agents.relate(new_ctx(), agent.id, uuid4(), "DELEGATES_TO")
    with pytest.raises(NotFound) as source:
        await store.agents.relate(new_ctx(), uuid4(), agent.id, "DELEGATES_TO")
    assert (target.value.field, source.value.field) == ("targetId", "sourceId")


async def test_all_relationships_streams_every_row_in_batches(store: PostgresStore) -> None:
    agents = [await new_agent(store) for _ in range(4)]
    for source in agents:
        for target in agents:
            if source != target:
                await store.agents.relate(new_ctx(), source.id, target.id, "COLLABORATES_WITH")
    ids = {agent.id for agent in agents}
    streamed = [
        (r.source_id, r.target_id)
        async for r in store.agents.all_relationships(batch_size=5)
        if r.source_id in ids
    ]
    assert len(streamed) == 12 and len(set(streamed)) == 12
    assert await store.agents.count() >= 4


async def test_list_filters(store: PostgresStore) -> None:
    tag = unique("t")
    parent = await new_agent(store, tags=[tag])
    a = await new_agent(store, name=unique("50%_off"), tags=[tag, "x"], role="critic",
                        capabilities=["read", "write"], metadata={"tier": {"gold": True}},
                        parent_id=parent.id)  # fmt: skip
    b = await new_agent(store, tags=[tag], status="busy", capabilities=["read"])
    await new_agent(store, name=unique("50xyoff"), tags=["elsewhere"])

    async def names(**criteria: object) -> list[str]:
        page = await store.agents.list(
            AgentFilter(**criteria),  # type: ignore[arg-type]
            AgentOrder.NAME_ASC,
            PageRequest(first=100),
        )
        return [agent.name for agent in page.items]

    assert await names(tags_any=[tag]) == sorted([parent.name, a.name, b.name])
    assert await names(tags_any=[tag], statuses=["busy"]) == [b.name]
    assert await names(tags_any=[tag], roles=["critic"]) == [a.name]
    assert await names(tags_any=[tag], capabilities_all=["read", "write"]) == [a.name]
    assert await names(tags_any=[tag], capabilities_all=["read"]) == sorted([a.name, b.name])
    assert await names(name_contains=a.name[:8]) == [a.name]
    # The wildcards in "50%_off" are matched literally.
    assert await names(name_contains="50%_off", tags_any=[tag, "elsewhere"]) == [a.name]
    assert await names(tags_any=[tag], parent_id=parent.id) == [a.name]
    assert await names(tags_any=[tag], parent_id=None) == sorted([parent.name, b.name])
    assert await names(tags_any=[tag], parent_id=UNSET) == sorted([parent.name, a.name, b.name])
    assert await names(metadata_contains={"tier": {"gold": True}}, tags_any=[tag]) == [a.name]


async def test_by_key_reads_are_one_statement_each(single: PostgresStore) -> None:
    agent = await new_agent(single)
    other = await new_agent(single)
    await single.agents.relate(new_ctx(), agent.id, other.id, "DELEGATES_TO")

    async def baseline() -> None:
        async with single.connection() as conn:
            await conn.fetchval("SELECT 1")

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: single.agents.by_ids([agent.id, other.id, uuid4()]),
        lambda: single.agents.relationships_of([agent.id, other.id]),
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
    with roundtrips.counting() as counter:
        assert await single.agents.by_ids([]) == {}
    assert counter["postgres"] == 0


async def test_same_idempotency_key_creates_once(store: PostgresStore) -> None:
    actor, key = uuid4(), unique("key")
    name = unique("agent")
    first = await store.agents.create(new_ctx(actor_id=actor, key=key), AgentInput(name=name))
    # A retry with the same key returns the first agent, even with another name.
    retried = await store.agents.create(
        new_ctx(actor_id=actor, key=key), AgentInput(name=unique("agent"))
    )
    assert retried == first
    assert len(await outbox_rows(store, id=str(first.id))) == 1

    with pytest.raises(Conflict) as reused:
        await store.agents.update(
            new_ctx(actor_id=actor, key=key), first.id, AgentPatch(notes="x"), expected_version=1
        )
    assert reused.value.field == "idempotencyKey"
    # Keys belong to their principal: another caller's key of the same text is theirs.
    other = await store.agents.create(new_ctx(key=key), AgentInput(name=unique("agent")))
    assert other.id != first.id


async def test_concurrent_duplicates_create_once(store: PostgresStore) -> None:
    actor, key, name = uuid4(), unique("key"), unique("agent")
    results = await asyncio.gather(
        *(
            store.agents.create(new_ctx(actor_id=actor, key=key), AgentInput(name=name))
            for _ in range(4)
        )
    )
    assert len({agent.id for agent in results}) == 1
    page = await store.agents.list(
        AgentFilter(name_contains=name), AgentOrder.NAME_ASC, PageRequest(), with_total=True
    )
    assert page.total_count == 1


async def test_idempotent_update_delete_and_unrelate_replay(store: PostgresStore) -> None:
    actor = uuid4()
    agent, other = await new_agent(store), await new_agent(store)
    update_ctx = new_ctx(actor_id=actor, key=unique("key"))
    updated = await store.agents.update(
        update_ctx, agent.id, AgentPatch(notes="one"), expected_version=1
    )
    # The retry does not trip over the version its first attempt moved.
    replayed = await store.agents.update(
        update_ctx, agent.id, AgentPatch(notes="one"), expected_version=1
    )
    assert replayed == updated and replayed.version == 2

    unrelate_ctx = new_ctx(actor_id=actor, key=unique("key"))
    await store.agents.relate(new_ctx(), agent.id, other.id, "DELEGATES_TO")
    assert await store.agents.unrelate(unrelate_ctx, agent.id, other.id, "DELEGATES_TO")
    assert await store.agents.unrelate(unrelate_ctx, agent.id, other.id, "DELEGATES_TO")

    delete_ctx = new_ctx(actor_id=actor, key=unique("key"))
    deleted = await store.agents.delete(delete_ctx, agent.id, expected_version=None)
    assert await store.agents.delete(delete_ctx, agent.id, expected_version=None) == deleted


async def test_idempotency_key_needs_a_principal(store: PostgresStore) -> None:
    anonymous = new_ctx(key=unique("key"))
    anonymous = type(anonymous)(actor_id=None, request_id="r", idempotency_key="k")
    with pytest.raises(InvalidInput) as refused:
        await store.agents.create(anonymous, AgentInput(name=unique("agent")))
    assert refused.value.field == "idempotencyKey"
    with pytest.raises(InvalidInput):
        await store.agents.create(new_ctx(key="k" * 201), AgentInput(name=unique("agent")))


async def test_bulk_agent_ids_are_every_agent_in_id_order(store: PostgresStore) -> None:
    created = {(await new_agent(store)).id for _ in range(3)}
    ids = await bulk.agent_ids(store)
    assert ids == sorted(ids)
    assert created <= set(ids)


@pytest.mark.parametrize(
    ("tasks", "with_total"),
    [
        (TasksOfEach(("id", "title", "priority"), first=2), False),
        (TasksOfEach(("id",), first=2, order=TaskOrder.PRIORITY_DESC, with_total=True), True),
        (TasksOfEach(("id", "status"), first=5, statuses=("pending",), with_total=True), False),
        (TasksOfEach(("title",), first=0, with_total=True), True),
    ],
)
async def test_a_page_with_its_tasks_is_the_page_then_its_tasks_in_one_round_trip(
    store: PostgresStore, tasks: TasksOfEach, with_total: bool
) -> None:
    tag = unique("with-tasks")
    agents = [await new_agent(store, tags=[tag]) for _ in range(3)]
    # None, one, three tasks; priorities out of creation order.
    for agent, priorities in zip(agents, ([], [4], [2, 9, 5]), strict=True):
        for priority in priorities:
            await new_task(store, assignee_id=agent.id, priority=priority)
    page_filter, order, request = (
        AgentFilter(tags_any=[tag]),
        AgentOrder.NAME_ASC,
        PageRequest(first=3),
    )
    columns = ["id", "name"]

    with roundtrips.counting() as trips:
        page, pages = await store.agents.list_columns_with_tasks(
            page_filter, order, request, columns, tasks, with_total=with_total
        )

    assert trips == {"postgres": 1}
    alone = await store.agents.list_columns(
        page_filter, order, request, columns, with_total=with_total
    )
    assert [agent[:2] for agent in alone.items] == page.items
    assert (page.has_next_page, page.total_count, list(page.cursors)) == (
        alone.has_next_page,
        alone.total_count,
        list(alone.cursors),
    )
    ids = [agent[0] for agent in page.items]
    separately = await store.tasks.columns_for_assignees(
        ids,
        tasks.columns,
        first=tasks.first,
        statuses=tasks.statuses,
        order=tasks.order,
        with_total=tasks.with_total,
    )
    assert [(list(p.items), p.total, p.has_more) for p in pages] == [
        (
            [tuple(row[: len(tasks.columns)]) for row in separately[i].items],
            separately[i].total,
            separately[i].has_more,
        )
        for i in ids
    ]


def test_tasks_of_each_agent_takes_a_page_size_the_store_serves() -> None:
    with pytest.raises(InvalidInput, match="first"):
        TasksOfEach(("id",), first=101)
    with pytest.raises(InvalidInput, match="first"):
        TasksOfEach(("id",), first=-1)
