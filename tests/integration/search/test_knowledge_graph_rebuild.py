"""`polygraph graph rebuild` recreates the knowledge graph from PostgreSQL."""

from __future__ import annotations

from starlette.testclient import TestClient

from stores import GraphStore, PostgresStore
from stores.graph.knowledge import related_of
from stores.postgres.outbox import unprocessed
from stores.postgres.records import WriteContext
from stores.search import KnowledgeInput, SearchStore
from tests.support.waiting import until
from workers.graph_rebuild import rebuild


async def test_rebuild_restores_knowledge_links(
    postgres: PostgresStore, graph: GraphStore, client: TestClient
) -> None:
    search = SearchStore(postgres)
    ctx = WriteContext(actor_id=None, request_id="test")
    claim = await search.knowledge.create(ctx, KnowledgeInput(title="claim"), [1.0] + [0.0] * 383)
    evidence = await search.knowledge.create(
        ctx, KnowledgeInput(title="evidence"), [0.0, 1.0] + [0.0] * 382
    )
    await search.knowledge.relate(ctx, evidence.id, claim.id, "SUPPORTS")
    # The test gateway's projector applies these rows in the background; the graph
    # loses them only once they are applied, or it would apply them afterwards.
    await until(lambda: _all_applied(postgres, ctx.outbox_ids))
    # The graph lost it (say, Neo4j was restored from an old backup).
    async with graph.session() as session:
        await session.run(
            "UNWIND $ids AS id MATCH (k:Knowledge {id: id}) DETACH DELETE k",
            ids=[str(claim.id), str(evidence.id)],
        )
    assert (await related_of(graph, [claim.id]))[claim.id] == []
    report = await rebuild(postgres, graph, prune_only=[claim.id, evidence.id])
    assert report.knowledge >= 2 and report.knowledge_links >= 1
    links = await related_of(graph, [claim.id, evidence.id])
    assert [(link.type, link.item_id, link.outgoing) for link in links[claim.id]] == [
        ("SUPPORTS", evidence.id, False)
    ]
    assert [(link.type, link.item_id, link.outgoing) for link in links[evidence.id]] == [
        ("SUPPORTS", claim.id, True)
    ]


async def _all_applied(postgres: PostgresStore, outbox_ids: list[int]) -> bool:
    return not await unprocessed(postgres, outbox_ids)
