from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from stores import PostgresStore
from stores.errors import InvalidInput
from stores.postgres.agents import _ORDERS as _AGENT_ORDERS
from stores.postgres.inputs import AgentFilter, AgentOrder, TaskFilter, TaskOrder
from stores.postgres.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Page,
    PageRequest,
    cursor_for,
)
from stores.postgres.records import Agent, Task
from tests.integration.stores import new_agent, new_ctx, new_task, unique


def test_page_request_defaults_to_the_first_twenty() -> None:
    request = PageRequest()
    assert (request.first, request.last, request.size, request.backward) == (
        DEFAULT_PAGE_SIZE,
        None,
        20,
        False,
    )
    assert PageRequest(last=5).first is None


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"first": 1, "last": 1}, "last"),
        ({"first": -1}, "first"),
        ({"first": MAX_PAGE_SIZE + 1}, "first"),
        ({"last": -1}, "last"),
        ({"after": "not a cursor!"}, "after"),
        ({"after": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, "after"),
        ({"before": base64.urlsafe_b64encode(b"[1, 2]").decode()}, "before"),
        ({"before": ""}, "before"),
    ],
)
def test_page_request_refuses_bad_arguments(arguments: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        PageRequest(**arguments)  # type: ignore[arg-type]
    assert refused.value.field == field


async def _agents(store: PostgresStore, count: int) -> tuple[str, list[Agent]]:
    tag = unique("page")
    made = [await new_agent(store, tags=[tag]) for _ in range(count)]
    return tag, made


async def _walk_forward(
    store: PostgresStore, tag: str, order: AgentOrder, size: int
) -> list[Page[Agent]]:
    pages: list[Page[Agent]] = []
    after = None
    while True:
        page = await store.agents.list(
            AgentFilter(tags_any=[tag]),
            order,
            PageRequest(first=size, after=after),
            with_total=True,
        )
        pages.append(page)
        if not page.has_next_page:
            return pages
        after = page.cursors[-1]


async def test_forward_pages_cover_everything_once_with_totals(store: PostgresStore) -> None:
    tag, made = await _agents(store, 7)
    pages = await _walk_forward(store, tag, AgentOrder.CREATED_AT_ASC, 3)

    assert [len(page.items) for page in pages] == [3, 3, 1]
    assert [item for page in pages for item in page.items] == made
    assert [page.total_count for page in pages] == [7, 7, 7]
    assert [page.has_previous_page for page in pages] == [False, True, True]
    assert [page.has_next_page for page in pages] == [True, True, False]
    assert all(len(page.cursors) == len(page.items) for page in pages)


async def test_cursors_read_in_any_order_as_each_row_encodes(store: PostgresStore) -> None:
    # A page's cursors are encoded when read: from the end, by slice, twice.
    tag, made = await _agents(store, 4)
    page = await store.agents.list(
        AgentFilter(tags_any=[tag]), AgentOrder.NAME_ASC, PageRequest(first=4), with_total=False
    )
    expected = [
        cursor_for(_AGENT_ORDERS[AgentOrder.NAME_ASC], [agent.name, agent.id])
        for agent in page.items
    ]
    assert sorted(agent.id for agent in page.items) == sorted(agent.id for agent in made)
    assert page.cursors[-1] == expected[-1]
    assert page.cursors[1:3] == expected[1:3]
    assert list(page.cursors) == expected == list(page.cursors)


async def test_backward_pages_mirror_forward_pages(store: PostgresStore) -> None:
    tag, made = await _agents(store, 7)
    collected: list[Agent] = []
    before = None
    flags = []
    while True:
        page = await store.agents.list(
            AgentFilter(tags_any=[tag]),
            AgentOrder.CREATED_AT_ASC,
            PageRequest(last=3, before=before),
            with_total=True,
        )
        assert page.total_count == 7
        collected = page.items + collected
        flags.append((page.has_previous_page, page.has_next_page))
        if not page.has_previous_page:
            break
        before = page.cursors[0]
    assert collected == made
    assert flags == [(True, False), (True, True), (False, True)]


@pytest.mark.parametrize("order", list(AgentOrder))
async def test_every_agent_order_pages_consistently(
    store: PostgresStore, order: AgentOrder
) -> None:
    tag, made = await _agents(store, 5)
    whole = await store.agents.list(AgentFilter(tags_any=[tag]), order, PageRequest(first=50))
    pages = await _walk_forward(store, tag, order, 2)
    assert [item for page in pages for item in page.items] == whole.items
    key = {
        AgentOrder.CREATED_AT_ASC: lambda a: (a.created_at, a.id),
        AgentOrder.CREATED_AT_DESC: lambda a: (a.created_at, a.id),
        AgentOrder.NAME_ASC: lambda a: (a.name, a.id),
        AgentOrder.NAME_DESC: lambda a: (a.name, a.id),
    }[order]
    assert whole.items == sorted(made, key=key, reverse=order.name.endswith("DESC"))


async def test_after_and_before_together_bound_a_window(store: PostgresStore) -> None:
    tag, made = await _agents(store, 6)
    whole = await store.agents.list(
        AgentFilter(tags_any=[tag]), AgentOrder.CREATED_AT_ASC, PageRequest(first=6)
    )
    window = await store.agents.list(
        AgentFilter(tags_any=[tag]),
        AgentOrder.CREATED_AT_ASC,
        PageRequest(first=10, after=whole.cursors[0], before=whole.cursors[4]),
    )
    assert window.items == made[1:4]


async def test_rows_added_between_pages_do_not_shift_them(store: PostgresStore) -> None:
    tag, made = await _agents(store, 4)
    first = await store.agents.list(
        AgentFilter(tags_any=[tag]), AgentOrder.CREATED_AT_DESC, PageRequest(first=2)
    )
    newer = await new_agent(store, tags=[tag])
    rest = await store.agents.list(
        AgentFilter(tags_any=[tag]),
        AgentOrder.CREATED_AT_DESC,
        PageRequest(first=2, after=first.cursors[-1]),
    )
    assert first.items + rest.items == made[::-1]
    assert newer not in rest.items


async def test_a_cursor_from_another_ordering_is_refused(store: PostgresStore) -> None:
    tag, _ = await _agents(store, 2)
    page = await store.agents.list(
        AgentFilter(tags_any=[tag]), AgentOrder.NAME_ASC, PageRequest(first=1)
    )
    with pytest.raises(InvalidInput, match="different ordering") as refused:
        await store.agents.list(
            AgentFilter(tags_any=[tag]),
            AgentOrder.CREATED_AT_ASC,
            PageRequest(after=page.cursors[0]),
        )
    assert refused.value.field == "after"
    forged = base64.urlsafe_b64encode(orjson.dumps(["agents.name", 5, "nope"])).decode()
    with pytest.raises(InvalidInput, match="not a cursor from this API"):
        await store.agents.list(
            AgentFilter(tags_any=[tag]), AgentOrder.NAME_ASC, PageRequest(before=forged)
        )


async def test_empty_results_and_zero_sizes(store: PostgresStore) -> None:
    nothing = await store.agents.list(
        AgentFilter(tags_any=[unique("none")]),
        AgentOrder.NAME_ASC,
        PageRequest(),
        with_total=True,
    )
    assert (nothing.items, list(nothing.cursors), nothing.total_count) == ([], [], 0)
    assert (nothing.has_next_page, nothing.has_previous_page) == (False, False)

    tag, _ = await _agents(store, 2)
    peek = await store.agents.list(
        AgentFilter(tags_any=[tag]), AgentOrder.NAME_ASC, PageRequest(first=0), with_total=True
    )
    assert (peek.items, peek.has_next_page, peek.total_count) == ([], True, 2)
    untotalled = await store.agents.list(
        AgentFilter(tags_any=[tag]), AgentOrder.NAME_ASC, PageRequest()
    )
    assert untotalled.total_count is None and len(untotalled.items) == 2


async def test_deadline_order_pages_across_missing_deadlines(store: PostgresStore) -> None:
    workflow = await store.workflows.create(
        new_ctx(),
        unique("flow"),
        {"steps": [{"id": "a", "name": "A"}]},
    )
    soon = datetime.now(UTC) + timedelta(hours=1)
    made = [
        await new_task(store, workflow_id=workflow.id, deadline=deadline)
        for deadline in (None, soon + timedelta(hours=2), None, soon, soon + timedelta(hours=1))
    ]
    expected = [made[3], made[4], made[1], made[0], made[2]]
    expected[3:] = sorted(expected[3:], key=lambda task: task.id)
    collected = []
    after = None
    while True:
        page = await store.tasks.list(
            TaskFilter(workflow_id=workflow.id),
            TaskOrder.DEADLINE_ASC,
            PageRequest(first=2, after=after),
        )
        collected += page.items
        if not page.has_next_page:
            break
        after = page.cursors[-1]
    assert collected == expected


async def test_priority_order_pages_with_ties(store: PostgresStore) -> None:
    workflow = await store.workflows.create(
        new_ctx(),
        unique("flow"),
        {"steps": [{"id": "a", "name": "A"}]},
    )
    made = [
        await new_task(store, workflow_id=workflow.id, priority=priority)
        for priority in (3, 7, 3, 7, 3)
    ]
    expected = sorted(made, key=lambda t: (t.priority, t.created_at, t.id), reverse=True)
    collected: list[Task] = []
    before = None
    while True:
        page = await store.tasks.list(
            TaskFilter(workflow_id=workflow.id),
            TaskOrder.PRIORITY_DESC,
            PageRequest(last=2, before=before),
        )
        collected = page.items + collected
        if not page.has_previous_page:
            break
        before = page.cursors[0]
    assert collected == expected
