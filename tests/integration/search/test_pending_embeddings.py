"""A failing embedder never loses a write; the background filler and `reembed`
catch up once it answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient
from strawberry import relay

from gateway.app import create_app
from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore
from stores.embeddings import LocalEmbedder
from stores.postgres.records import WriteContext
from stores.search import (
    EmbeddingSpace,
    EmbeddingSpaceMismatch,
    KnowledgeInput,
    SearchStore,
    ensure_space,
    stored_space,
)
from tests.conftest import recreate_database
from tests.integration.api.conftest import Caller, GraphQL, data, unique
from tests.integration.search.conftest import CREATE, SEARCH, FlakyEmbedder, titles
from workers.embeddings import fill_pending, reembed


@pytest.fixture(scope="module")
def flaky(settings: Settings) -> Iterator[tuple[GraphQL, FlakyEmbedder]]:
    """A second gateway on the same database whose embedder the test switches off."""
    embedder = FlakyEmbedder(LocalEmbedder())
    with TestClient(create_app(settings, embedder=embedder)) as client:
        yield GraphQL(client), embedder


def _uuid(global_id: str) -> UUID:
    return UUID(relay.GlobalID.from_id(global_id).node_id)


def test_a_failing_embedder_leaves_the_write_pending_until_the_filler_runs(
    flaky: tuple[GraphQL, FlakyEmbedder], operator: Caller, viewer: Caller
) -> None:
    gql, embedder = flaky
    tag = unique("pending")
    embedder.failing = True
    payload = data(
        gql(
            CREATE,
            {
                "input": {
                    "title": "Circuit breakers",
                    "tags": [tag],
                    "content": "Stop calling a failing dependency for a while.",
                }
            },
            caller=operator,
        )
    )["createKnowledge"]
    assert payload["userErrors"] == []
    assert payload["knowledge"]["embeddingPending"] is True
    # Keyword search finds it already; semantic search cannot until it has a vector.
    assert titles(
        gql(
            SEARCH,
            {"q": "circuit breakers", "mode": "KEYWORD", "filter": {"tagsAny": [tag]}},
            caller=viewer,
        )
    ) == ["Circuit breakers"]
    embedder.failing = False
    deadline = time.monotonic() + 30
    while True:
        found = titles(
            gql(
                SEARCH,
                {
                    "q": "protect a service from a broken downstream",
                    "mode": "SEMANTIC",
                    "filter": {"tagsAny": [tag]},
                },
                caller=viewer,
            )
        )
        if found:
            break
        assert time.monotonic() < deadline, "the filler did not fill the pending embedding"
        time.sleep(0.2)
    assert found == ["Circuit breakers"]
    node = data(
        gql(
            """query($id: ID!) { node(id: $id) { ... on Knowledge { embeddingPending } } }""",
            {"id": payload["knowledge"]["id"]},
            caller=viewer,
        )
    )
    assert node["node"]["embeddingPending"] is False


def test_a_memory_is_kept_when_the_embedder_fails(
    flaky: tuple[GraphQL, FlakyEmbedder], operator: Caller
) -> None:
    gql, embedder = flaky
    agent = data(
        gql(
            """mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }""",
            {"n": unique("mem")},
            caller=operator,
        )
    )["createAgent"]["agent"]["id"]
    embedder.failing = True
    try:
        memory = data(
            gql(
                """mutation($a: ID!) { rememberMemory(input: {agentId: $a, content: "The deploy key lives in the vault",
                 kind: SEMANTIC}) { memory { id embeddingPending kind } userErrors { code } } }""",
                {"a": agent},
                caller=operator,
            )
        )["rememberMemory"]
    finally:
        embedder.failing = False
    assert memory["userErrors"] == []
    assert memory["memory"]["embeddingPending"] is True and memory["memory"]["kind"] == "SEMANTIC"


@pytest.fixture
async def alone(
    settings: Settings, profile: Profile, database_name: str
) -> AsyncIterator[Settings]:
    """A database no gateway serves: a running gateway's embedding filler would fill
    the rows `reembed` is meant to find pending, and race the test."""
    name = f"{database_name}_alone"
    await recreate_database(profile, name)
    yield settings.model_copy(update={"postgres_dsn": SecretStr(profile.postgres_dsn(name))})
    conn = await asyncpg.connect(profile.postgres_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def _pending_items(
    settings: Settings, embedder: LocalEmbedder, titles: Sequence[str]
) -> AsyncIterator[SearchStore]:
    """The search store of a migrated database in `embedder`'s space, with a knowledge
    item of each title waiting for its embedding."""
    async with PostgresStore(settings.postgres_options()) as postgres:
        await postgres.migrate()
        search = SearchStore(postgres)
        await ensure_space(search, EmbeddingSpace(embedder.model, 384))
        ctx = WriteContext(actor_id=None, request_id="test")
        for title in titles:
            await search.knowledge.create(ctx, KnowledgeInput(title=title), None)
        yield search


async def test_reembed_moves_the_space_and_resumes_after_a_failure(alone: Settings) -> None:
    local = LocalEmbedder()

    class Renamed(FlakyEmbedder):
        """The same vectors under another model name: a model change to the database."""

        def __init__(self, fail_after: int) -> None:
            super().__init__(local, failing=False)
            self.fail_after = fail_after

        @property
        def model(self) -> str:
            return "renamed-minilm"

        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            self.failing = self.calls >= self.fail_after
            return await super().embed(texts)

    async with _pending_items(alone, local, [f"reembed {index}" for index in range(5)]) as search:
        original = await stored_space(search)
        assert original == EmbeddingSpace(local.model, 384)
        try:
            interrupted = Renamed(fail_after=1)
            with pytest.raises(Exception, match="switched off"):
                await reembed(search, interrupted, batch_size=2)
            # Moved, and part-way through: the rest is still pending.
            assert await stored_space(search) == EmbeddingSpace("renamed-minilm", 384)
            left = await search.knowledge.count_pending()
            assert left > 0
            seen: list[tuple[str, int, int]] = []
            moved, report = await reembed(
                search,
                Renamed(fail_after=10_000),
                batch_size=50,
                progress=lambda stage, done, total: seen.append((stage, done, total)),
            )
            assert moved is False  # already the space: it resumed
            assert report.knowledge == left
            assert await search.knowledge.count_pending() == 0
            assert seen and seen[0][0] == "embedding knowledge items"
            # A gateway configured for the old model now refuses to start.
            with pytest.raises(EmbeddingSpaceMismatch, match="polygraph reembed"):
                await ensure_space(search, EmbeddingSpace(local.model, 384))
            with pytest.raises(EmbeddingSpaceMismatch, match="768 dimensions"):
                await ensure_space(search, EmbeddingSpace("renamed-minilm", 768))
        finally:
            # Back to the model it started with.
            await reembed(search, local, batch_size=256)
            assert await stored_space(search) == original
            assert (await fill_pending(search, local)).knowledge == 0
    await local.aclose()


def test_a_gateway_for_another_dimension_refuses_to_start(settings: Settings) -> None:
    class Wider(FlakyEmbedder):
        @property
        def dimension(self) -> int:
            return 768

    app = create_app(settings, embedder=Wider(LocalEmbedder()))
    with (
        pytest.raises(EmbeddingSpaceMismatch, match=r"384 dimensions.*768 dimensions"),
        TestClient(app),
    ):
        pass


async def test_the_filler_skips_a_row_another_transaction_holds_instead_of_waiting(
    alone: Settings,
) -> None:
    """A writer holding a row while the filler stores its batch: the filler fills the
    rest and leaves that row pending for its next pass. Waiting instead, it deadlocked
    with writers that lock several rows in another order."""
    local = LocalEmbedder()
    async with _pending_items(alone, local, ["held 0", "held 1"]) as search:
        pending = await search.knowledge.pending(10)
        vectors = await local.embed([text for _, text in pending])
        batch = [
            (item_id, text, vector)
            for (item_id, text), vector in zip(pending, vectors, strict=True)
        ]
        held, free = pending[0][0], pending[1][0]
        writer = await asyncpg.connect(alone.postgres_dsn.get_secret_value())
        try:
            async with writer.transaction():
                await writer.execute("SELECT 1 FROM knowledge_items WHERE id = $1 FOR UPDATE", held)
                # The limit only stops a broken test: a waiting filler never returns.
                filled = await asyncio.wait_for(search.knowledge.fill(batch), timeout=60)
                assert filled == 1
            still_pending = {item_id for item_id, _ in await search.knowledge.pending(10)}
            assert still_pending == {held}
            assert free not in still_pending
            assert await search.knowledge.fill(batch[:1]) == 1
            assert await search.knowledge.count_pending() == 0
        finally:
            await writer.close()
    await local.aclose()
