from __future__ import annotations

import itertools
from typing import Any
from uuid import uuid4

import pytest

from stores import PostgresStore
from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.inputs import WorkflowFilter, WorkflowOrder
from stores.postgres.pagination import PageRequest
from tests.integration.stores import audit_rows, new_ctx, outbox_rows, unique

PIPELINE: dict[str, Any] = {
    "steps": [
        {"id": "fetch", "name": "Fetch", "estimate": 2.5},
        {"id": "build", "name": "Build"},
        {"id": "ship", "name": "Ship", "estimate": 0},
    ],
    "edges": [{"from": "fetch", "to": "build"}, {"from": "build", "to": "ship"}],
}


async def test_create_normalises_and_projects(store: PostgresStore) -> None:
    ctx = new_ctx()
    name = unique("pipeline")
    workflow = await store.workflows.create(ctx, name, PIPELINE)

    assert (workflow.name, workflow.status, workflow.version) == (name, "draft", 1)
    assert workflow.definition["steps"][1] == {"id": "build", "name": "Build", "estimate": 1}
    assert (await store.workflows.by_ids([workflow.id, uuid4()])) == {workflow.id: workflow}
    [audit] = await audit_rows(store, ctx)
    assert (audit["action"], audit["resource_type"]) == ("create", "workflow")
    assert await outbox_rows(store, id=str(workflow.id)) == [
        (
            "workflow.upserted",
            {
                "id": str(workflow.id),
                "name": name,
                "status": "draft",
                "steps": workflow.definition["steps"],
                "edges": PIPELINE["edges"],
            },
        )
    ]


def _steps(*ids: str) -> list[dict[str, Any]]:
    return [{"id": step, "name": step.upper()} for step in ids]


def _edges(*pairs: str) -> list[dict[str, str]]:
    return [{"from": pair[0], "to": pair[1]} for pair in pairs]


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ([], "must be a JSON object"),
        ({"steps": _steps("a"), "extra": 1}, "unknown keys extra"),
        ({"steps": "a"}, "must be lists"),
        ({}, "must be lists"),
        ({"steps": _steps("a", "a")}, "step id 'a' appears twice"),
        ({"steps": [{"id": "a"}]}, "needs a name"),
        ({"steps": [{"id": "", "name": "A"}]}, "needs an id"),
        ({"steps": [{"id": "a", "name": "A", "estimate": -1}]}, "estimate of 0 or more"),
        ({"steps": [{"id": "a", "name": "A", "estimate": True}]}, "estimate of 0 or more"),
        ({"steps": [{"id": "a", "name": "A", "estimate": "1"}]}, "estimate of 0 or more"),
        ({"steps": [{"id": "a", "name": "A", "owner": "x"}]}, "step 0 has unknown keys owner"),
        ({"steps": _steps("a"), "edges": _edges("ab")}, "unknown step 'b'"),
        ({"steps": _steps("a"), "edges": [{"from": "a"}]}, "unknown step None"),
        ({"steps": _steps("a", "b"), "edges": _edges("ab", "ab")}, "a -> b appears twice"),
        (
            {"steps": _steps("a", "b"), "edges": _edges("ab", "ba")},
            "steps a -> b -> a form a cycle",
        ),
        ({"steps": _steps("a"), "edges": _edges("aa")}, "steps a -> a form a cycle"),
        (
            {"steps": _steps("a", "b", "c", "d"), "edges": _edges("ab", "bc", "cd", "db")},
            "steps b -> c -> d -> b form a cycle",
        ),
    ],
)
async def test_bad_definitions_are_invalid_input(
    store: PostgresStore, definition: Any, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await store.workflows.create(new_ctx(), unique("wf"), definition)
    assert refused.value.field == "definition"
    assert message in refused.value.message


async def test_a_long_chain_is_checked_without_recursion(store: PostgresStore) -> None:
    ids = [f"s{i}" for i in range(1000)]
    definition = {
        "steps": _steps(*ids),
        "edges": [{"from": a, "to": b} for a, b in itertools.pairwise(ids)],
    }
    workflow = await store.workflows.create(new_ctx(), unique("chain"), definition)
    assert len(workflow.definition["edges"]) == 999


async def test_update_and_its_refusals(store: PostgresStore) -> None:
    workflow = await store.workflows.create(new_ctx(), unique("wf"), PIPELINE)
    ctx = new_ctx()
    renamed = await store.workflows.update(
        ctx, workflow.id, expected_version=1, name=unique("renamed"), status="active"
    )
    assert (renamed.status, renamed.version) == ("active", 2)
    assert renamed.definition == workflow.definition
    [audit] = await audit_rows(store, ctx)
    assert audit["old_value"]["status"] == "draft"
    kinds = [kind for kind, _ in await outbox_rows(store, id=str(workflow.id))]
    assert kinds == ["workflow.upserted", "workflow.upserted"]

    with pytest.raises(Conflict, match="at version 2, you sent 1; reload and retry"):
        await store.workflows.update(new_ctx(), workflow.id, expected_version=1, status="paused")
    with pytest.raises(InvalidInput) as bad_status:
        await store.workflows.update(new_ctx(), workflow.id, expected_version=2, status="done")
    assert bad_status.value.field == "status"
    with pytest.raises(InvalidInput) as cycle:
        await store.workflows.update(
            new_ctx(),
            workflow.id,
            expected_version=2,
            definition={"steps": _steps("a", "b"), "edges": _edges("ab", "ba")},
        )
    assert cycle.value.field == "definition"
    with pytest.raises(NotFound):
        await store.workflows.update(new_ctx(), uuid4(), expected_version=None, name="x")

    unchanged = new_ctx()
    same = await store.workflows.update(unchanged, workflow.id, expected_version=2, status="active")
    assert same == renamed and await audit_rows(store, unchanged) == []


async def test_idempotent_create(store: PostgresStore) -> None:
    actor, key = uuid4(), unique("key")
    first = await store.workflows.create(new_ctx(actor_id=actor, key=key), unique("wf"), PIPELINE)
    again = await store.workflows.create(new_ctx(actor_id=actor, key=key), unique("wf"), PIPELINE)
    assert again == first


async def test_list_filters_and_pages(store: PostgresStore) -> None:
    marker = unique("flows")
    made = [
        await store.workflows.create(new_ctx(), f"{marker} {index}", PIPELINE) for index in range(5)
    ]
    await store.workflows.update(new_ctx(), made[1].id, expected_version=1, status="archived")

    page = await store.workflows.list(
        WorkflowFilter(name_contains=marker),
        WorkflowOrder.NAME_DESC,
        PageRequest(first=2),
        with_total=True,
    )
    assert [w.name for w in page.items] == [made[4].name, made[3].name]
    assert (page.total_count, page.has_next_page) == (5, True)
    archived = await store.workflows.list(
        WorkflowFilter(name_contains=marker, statuses=["archived"]),
        WorkflowOrder.CREATED_AT_ASC,
        PageRequest(),
    )
    assert [w.id for w in archived.items] == [made[1].id]
