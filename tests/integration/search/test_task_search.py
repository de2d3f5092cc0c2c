"""searchTasks, similarTasks and createTask's possibleDuplicates, over real servers and
the real model; Task.worktreePath."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from stores import PostgresStore
from stores.embeddings import LocalEmbedder, Vector
from stores.postgres.inputs import TaskInput
from stores.postgres.records import WriteContext
from stores.search import SearchStore
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique
from tests.integration.search.conftest import FlakyEmbedder
from tests.support.waiting import until
from workers.embeddings import fill_pending

CREATE = """mutation($input: CreateTaskInput!) {
  createTask(input: $input) { task { id title worktreePath } userErrors { field code } }
}"""
CREATE_CHECKED = """mutation($input: CreateTaskInput!) {
  createTask(input: $input) {
    task { id }
    possibleDuplicates { score node { id title status } }
    userErrors { field code }
  }
}"""
SEARCH = """query($q: String, $mode: SearchMode, $filter: TaskFilter, $first: Int, $after: String) {
  searchTasks(query: $q, mode: $mode, filter: $filter, first: $first, after: $after) {
    edges { cursor score semanticRank keywordRank node { id title status } }
    pageInfo { hasNextPage endCursor }
  }
}"""
SIMILAR = """query($id: ID!, $first: Int) {
  similarTasks(id: $id, first: $first) { score node { id title } }
}"""
CANCEL = "mutation($id: ID!) { cancelTask(input: {id: $id}) { task { status } } }"

# One subject each; the marker keeps other tests' tasks out of filtered searches.
TASKS = (
    ("Fix the flaky login test", "The sign-in integration test fails one run in ten."),
    ("Rotate the database passwords", "PostgreSQL credentials expire every ninety days."),
    ("Bake bread for the team lunch", "Sourdough, proofed overnight."),
)


def _create(gql: GraphQL, operator: Caller, title: str, description: str = "") -> str:
    body = gql(
        CREATE,
        {"input": {"title": title, "description": description, "waitForProjection": False}},
        caller=operator,
    )
    task_id: str = data(body)["createTask"]["task"]["id"]
    return task_id


def _titles(body: dict[str, Any]) -> list[str]:
    return [edge["node"]["title"] for edge in data(body)["searchTasks"]["edges"]]


def _semantic(gql: GraphQL, viewer: Caller, query: str, marker: str) -> list[str]:
    return _titles(
        gql(
            SEARCH,
            {"q": query, "mode": "SEMANTIC", "filter": {"titleContains": marker}},
            caller=viewer,
        )
    )


def test_a_task_is_found_by_words_at_once_and_by_meaning_once_embedded(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    marker = unique("m")
    for title, description in TASKS:
        _create(gql, operator, f"{title} {marker}", description)
    keyword = gql(
        SEARCH,
        {"q": "passwords", "mode": "KEYWORD", "filter": {"titleContains": marker}},
        caller=viewer,
    )
    assert _titles(keyword) == [f"Rotate the database passwords {marker}"]
    assert data(keyword)["searchTasks"]["edges"][0]["keywordRank"] == 1

    # No word in common with the title or description: only meaning finds it, once the
    # background filler has embedded all three.
    query = "authentication check is unreliable in CI"
    asyncio.run(until(lambda: len(_semantic(gql, viewer, query, marker)) == 3))
    assert _semantic(gql, viewer, query, marker)[0] == f"Fix the flaky login test {marker}"

    hybrid = gql(
        SEARCH, {"q": "database credentials", "filter": {"titleContains": marker}}, caller=viewer
    )
    top = data(hybrid)["searchTasks"]["edges"][0]
    assert top["node"]["title"] == f"Rotate the database passwords {marker}"
    assert top["semanticRank"] == 1 and top["keywordRank"] == 1


def test_search_applies_the_tasks_filter_and_pages_by_cursor(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    marker = unique("m")
    ids = [_create(gql, operator, f"Migrate service {n} {marker}") for n in range(3)]
    data(gql(CANCEL, {"id": ids[0]}, caller=operator))
    variables = {"q": "migrate service", "mode": "KEYWORD", "first": 1}
    pending = {"titleContains": marker, "status": ["PENDING"]}
    first = data(gql(SEARCH, {**variables, "filter": pending}, caller=viewer))["searchTasks"]
    assert first["pageInfo"]["hasNextPage"] is True
    second = data(
        gql(
            SEARCH,
            {**variables, "filter": pending, "after": first["pageInfo"]["endCursor"]},
            caller=viewer,
        )
    )["searchTasks"]
    found = {edge["node"]["id"] for edge in first["edges"] + second["edges"]}
    assert found == set(ids[1:])
    assert second["pageInfo"]["hasNextPage"] is False
    cancelled = gql(
        SEARCH,
        {**variables, "filter": {"titleContains": marker, "status": ["CANCELLED"]}},
        caller=viewer,
    )
    assert [edge["node"]["id"] for edge in data(cancelled)["searchTasks"]["edges"]] == [ids[0]]


def test_possible_duplicates_are_open_tasks_similar_enough(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    marker = unique("m")
    # Asking for duplicates embeds the new task at once, so the next one can match it.
    original = data(
        gql(
            CREATE_CHECKED,
            {
                "input": {
                    "title": f"Fix the flaky login test in the auth service {marker}",
                    "description": "The sign-in integration test fails one run in ten.",
                }
            },
            caller=operator,
        )
    )["createTask"]["task"]["id"]
    closed = data(
        gql(
            CREATE_CHECKED,
            {
                "input": {
                    "title": f"Fix the flaky login test in the auth service {marker} again",
                    "description": "The sign-in integration test fails one run in ten.",
                }
            },
            caller=operator,
        )
    )["createTask"]
    data(gql(CANCEL, {"id": closed["task"]["id"]}, caller=operator))
    unrelated = data(
        gql(
            CREATE_CHECKED,
            {"input": {"title": f"Bake bread for the team lunch {marker}"}},
            caller=operator,
        )
    )["createTask"]["task"]["id"]

    created = data(
        gql(
            CREATE_CHECKED,
            {
                "input": {
                    "title": f"The login test of the auth service is flaky {marker}",
                    "description": "Sign-in integration test fails about one run in ten.",
                }
            },
            caller=operator,
        )
    )["createTask"]
    duplicates = {edge["node"]["id"]: edge["score"] for edge in created["possibleDuplicates"]}
    assert original in duplicates and duplicates[original] >= 0.8
    # Cancelled work is not a duplicate, nor is a task about something else.
    assert closed["task"]["id"] not in duplicates and unrelated not in duplicates
    assert created["task"]["id"] not in duplicates

    # Its vector is stored: similarTasks answers for it at once, nearest first.
    similar = data(gql(SIMILAR, {"id": created["task"]["id"], "first": 3}, caller=viewer))
    assert similar["similarTasks"][0]["node"]["id"] in (original, closed["task"]["id"])


def test_worktree_path_is_written_read_cleared_and_bounded(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    body = gql(
        CREATE,
        {"input": {"title": unique("wt"), "worktreePath": "/work/wt/feature-x"}},
        caller=operator,
    )
    task = data(body)["createTask"]["task"]
    assert task["worktreePath"] == "/work/wt/feature-x"
    cleared = gql(
        "mutation($id: ID!) { updateTask(input: {id: $id, worktreePath: null}) "
        "{ task { worktreePath } } }",
        {"id": task["id"]},
        caller=operator,
    )
    assert data(cleared)["updateTask"]["task"] == {"worktreePath": None}
    read = gql(
        "query($id: ID!) { node(id: $id) { ... on Task { worktreePath } } }",
        {"id": task["id"]},
        caller=viewer,
    )
    assert data(read)["node"] == {"worktreePath": None}
    too_long = gql(
        CREATE, {"input": {"title": unique("wt"), "worktreePath": "x" * 1001}}, caller=operator
    )
    assert data(too_long)["createTask"]["userErrors"] == [
        {"field": "worktreePath", "code": "BAD_USER_INPUT"}
    ]


def test_who_may_search_tasks_and_see_duplicates(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    task_id = _create(gql, operator, unique("perm"))
    assert error_codes(gql(SEARCH, {"q": "anything"})) == ["UNAUTHENTICATED"]
    assert error_codes(gql(SIMILAR, {"id": task_id})) == ["UNAUTHENTICATED"]
    # Viewers read every task, so they search them all.
    assert data(gql(SEARCH, {"q": "anything", "mode": "KEYWORD"}, caller=viewer))
    assert data(gql(SIMILAR, {"id": task_id}, caller=viewer))["similarTasks"] is not None
    # Duplicates come with creating a task: operators and up.
    refused = gql(CREATE_CHECKED, {"input": {"title": unique("perm")}}, caller=viewer)
    assert error_codes(refused) == ["FORBIDDEN"] and refused["data"] is None


def test_search_arguments_are_bounded(gql: GraphQL, viewer: Caller) -> None:
    too_long = gql(SEARCH, {"q": "x" * 2001, "mode": "KEYWORD"}, caller=viewer)
    assert error_codes(too_long) == ["BAD_USER_INPUT"]
    too_many = gql(SEARCH, {"q": "x", "mode": "KEYWORD", "first": 101}, caller=viewer)
    assert error_codes(too_many) == ["BAD_USER_INPUT"]
    no_text = gql(SEARCH, {"mode": "KEYWORD"}, caller=viewer)
    assert error_codes(no_text) == ["BAD_USER_INPUT"]
    bad_cursor = gql(SEARCH, {"q": "x", "mode": "KEYWORD", "after": "nope"}, caller=viewer)
    assert error_codes(bad_cursor) == ["BAD_USER_INPUT"]
    duplicates = gql(
        'mutation { createTask(input: {title: "t"}) { possibleDuplicates(first: 500) { score } } }',
        caller=viewer,
    )
    assert error_codes(duplicates) == ["BAD_USER_INPUT"]


def test_an_edited_text_is_embedded_again(gql: GraphQL, operator: Caller, viewer: Caller) -> None:
    marker = unique("m")
    task_id = _create(gql, operator, f"Bake bread for the team lunch {marker}")
    query = "rotate expiring postgres credentials"

    def top_for_query() -> str | None:
        found = gql(
            SEARCH,
            {"q": query, "mode": "SEMANTIC", "filter": {"titleContains": marker}, "first": 1},
            caller=viewer,
        )
        edges = data(found)["searchTasks"]["edges"]
        return edges[0]["node"]["title"] if edges and edges[0]["score"] > 0.5 else None

    asyncio.run(until(lambda: bool(_semantic(gql, viewer, "bread", marker))))
    assert top_for_query() is None
    edited = gql(
        "mutation($id: ID!, $t: String!) { updateTask(input: {id: $id, title: $t, "
        'description: "PostgreSQL credentials expire every ninety days."}) { task { id } } }',
        {"id": task_id, "t": f"Rotate the database passwords {marker}"},
        caller=operator,
    )
    data(edited)
    asyncio.run(until(lambda: top_for_query() == f"Rotate the database passwords {marker}"))


@pytest.fixture(scope="module")
def flaky(settings: Settings) -> Iterator[tuple[GraphQL, FlakyEmbedder]]:
    """A second gateway on the same database whose embedder the test switches off."""
    embedder = FlakyEmbedder(LocalEmbedder())
    with TestClient(create_app(settings, embedder=embedder)) as client:
        yield GraphQL(client), embedder


def test_an_embedder_down_nulls_possible_duplicates_and_keeps_the_task(
    flaky: tuple[GraphQL, FlakyEmbedder], operator: Caller, viewer: Caller
) -> None:
    run, embedder = flaky
    marker = unique("m")
    embedder.failing = True
    body = run(
        CREATE_CHECKED,
        {"input": {"title": f"Fix the flaky login test {marker}"}},
        caller=operator,
    )
    assert body["data"]["createTask"]["task"]["id"]
    assert body["data"]["createTask"]["possibleDuplicates"] is None
    assert body["data"]["createTask"]["userErrors"] == []
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["createTask", "possibleDuplicates"], "STORE_UNAVAILABLE")
    ]
    # Written, pending, and embedded by a filler once one can: the test's shared gateway.
    embedder.failing = False
    asyncio.run(until(lambda: bool(_semantic(run, viewer, "authentication test", marker))))


class _CountingEmbedder(FlakyEmbedder):
    """The local model, recording every text it is asked for."""

    def __init__(self, inner: LocalEmbedder) -> None:
        super().__init__(inner, failing=False)
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.texts.extend(texts)
        return await super().embed(texts)


async def test_the_filler_embeds_each_distinct_text_once(
    postgres: PostgresStore, settings: Settings
) -> None:
    search = SearchStore(postgres, settings.search_options())
    title = unique("Review the session cache in platform/api")
    write = WriteContext(actor_id=None, request_id="test", client_address=None)
    created = [await postgres.tasks.create(write, TaskInput(title=title)) for _ in range(5)]
    embedder = _CountingEmbedder(LocalEmbedder())
    try:
        await fill_pending(search, embedder, batch_size=2)
    finally:
        await embedder.aclose()
    # Another gateway's filler may have taken some first; never more than one embedding.
    assert embedder.texts.count(f"{title}\n") <= 1
    pending = {task_id for task_id, _ in await search.tasks.pending(10_000)}
    assert not pending & {task.id for task in created}
