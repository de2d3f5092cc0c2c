"""The demo knowledge: structured so that it labels itself, and searchable once seeded."""

from __future__ import annotations

import random
from uuid import uuid4

from starlette.testclient import TestClient

from gateway.settings import Settings
from seeding.knowledge import (
    ASPECTS,
    SUBJECTS,
    generate_items,
    grade,
    labelled_queries,
    seed_knowledge,
)
from stores import GraphStore, PostgresStore
from stores.embeddings import LocalEmbedder
from stores.postgres.inputs import AgentInput
from stores.postgres.records import WriteContext
from stores.search import KnowledgeFilter, SearchMode, SearchRequest, SearchStore
from tests.support.waiting import until


def test_items_cover_every_subject_and_aspect_and_queries_have_answers() -> None:
    items = generate_items(random.Random(1), len(SUBJECTS) * len(ASPECTS))
    assert {(i.subject, i.aspect) for i in items} == {(s, a) for s in SUBJECTS for a in ASPECTS}
    assert generate_items(random.Random(1), 5) == generate_items(random.Random(1), 5)
    queries = labelled_queries()
    assert len(queries) >= 50
    for query in queries:
        assert sum(grade(query, item) == 2 for item in items) == 1
        assert sum(grade(query, item) == 1 for item in items) == len(ASPECTS) - 1


async def test_seeded_items_and_memories_are_embedded_and_found(
    settings: Settings, client: TestClient
) -> None:
    # `client`: its lifespan migrated the database.
    embedder = LocalEmbedder()
    async with PostgresStore(settings.postgres_options()) as postgres:
        agent = await postgres.agents.create(
            WriteContext(actor_id=None, request_id="test"),
            AgentInput(name=f"seed-{uuid4().hex[:8]}"),
        )
        search = SearchStore(postgres)
        report = await seed_knowledge(
            search, embedder, [agent.id], items=56, memories_per_agent=2, seed_value=uuid4().int
        )
        assert (report.items, report.memories) == (56, 2)
        page = await search.knowledge.search(
            SearchRequest(
                mode=SearchMode.HYBRID,
                text="runbook rate limiter",
                vector=(await embedder.embed(["runbook rate limiter"]))[0],
                first=3,
                filter=KnowledgeFilter(agent_ids=(agent.id,)),
            )
        )
        assert page.hits[0].item.title.startswith("Runbook: rate limiter")
        recalled = await search.memories.recall(
            [agent.id], mode=SearchMode.SEMANTIC, text=None,
            vector=(await embedder.embed(["what do I know"]))[0], first=5,
        )  # fmt: skip
        assert len(recalled[agent.id]) == 2
        assert not any(hit.item.embedding_pending for hit in recalled[agent.id])
    await embedder.aclose()


async def test_seeded_items_reach_the_graph_through_the_outbox(
    settings: Settings, client: TestClient, graph: GraphStore
) -> None:
    # `client` runs a projector against this database, as a gateway beside `polygraph
    # seed` would; no graph rebuild is needed to see the items in Neo4j.
    async with PostgresStore(settings.postgres_options()) as postgres:
        agent = await postgres.agents.create(
            WriteContext(actor_id=None, request_id="test"),
            AgentInput(name=f"seed-{uuid4().hex[:8]}"),
        )
        embedder = LocalEmbedder()
        try:
            await seed_knowledge(
                SearchStore(postgres), embedder, [agent.id], items=20, memories_per_agent=0,
                seed_value=uuid4().int,
            )  # fmt: skip
        finally:
            await embedder.aclose()
        async with postgres.connection() as conn:
            ids = [
                str(row["id"])
                for row in await conn.fetch(
                    "SELECT id FROM knowledge_items WHERE agent_id = $1", agent.id
                )
            ]
            queued = await conn.fetch(
                "SELECT payload FROM outbox WHERE kind = 'knowledge.upserted'"
                " AND payload->>'id' = ANY($1::text[])",
                ids,
            )
    assert len(ids) == 20
    assert sorted(row["payload"]["id"] for row in queued) == sorted(ids)

    async def in_graph() -> bool:
        async with graph.session() as session:
            result = await session.run(
                "MATCH (k:Knowledge) WHERE k.id IN $ids RETURN count(k) AS n", ids=ids
            )
            found: int = (await result.single(strict=True))["n"]
        return found == len(ids)

    await until(in_graph)
