"""A resolved negotiation in the graph: projected from its outbox row, linked to the
agents that took part and the tasks it concerns, idempotent, and rebuilt from PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from stores import GraphStore, PostgresStore
from stores.graph import projection
from stores.graph.negotiations import ResolutionLinks, resolutions_of
from stores.postgres.conversation_records import ConversationInput, Member, MessageInput
from stores.postgres.outbox import OutboxEvent
from stores.postgres.records import WriteContext
from tests.integration.graph.conftest import Ids, Seed
from tests.integration.graph.test_rebuild import drain, run
from workers.graph_rebuild import rebuild
from workers.projector import Projector


@pytest.fixture
async def negotiations(graph: GraphStore) -> AsyncIterator[list[UUID]]:
    """Ids of the negotiations a test resolves; their nodes go when it ends."""
    made: list[UUID] = []
    yield made
    await run(
        graph,
        "UNWIND $ids AS id MATCH (n:Negotiation {id: id}) DETACH DELETE n",
        ids=[str(i) for i in made],
    )


def _ctx() -> WriteContext:
    return WriteContext(actor_id=None, request_id="negotiation-test")


async def _resolved(pg: PostgresStore, seed: Seed) -> tuple[UUID, ResolutionLinks]:
    agents = sorted([(await seed.agent())[0] for _ in range(3)])
    task, _ = await seed.task()
    roles = ("proposer", "opponent", "mediator")
    members = [Member(agent_id=a, role=r) for a, r in zip(agents, roles, strict=True)]
    conversation = await pg.conversations.create(
        _ctx(),
        ConversationInput(
            title="who owns the cache",
            kind="negotiation",
            participants=tuple(members),
            task_ids=(task,),
        ),
    )
    for version, (member, move) in enumerate(
        zip(
            [members[0], members[1], members[2], members[2]],
            ["thesis", "antithesis", "synthesis", "resolve"],
            strict=True,
        ),
        start=1,
    ):
        await pg.conversations.move(
            _ctx(), conversation.id, member, move, MessageInput(move), expected_version=version
        )
    return conversation.id, ResolutionLinks(tuple(agents), (task,))


async def test_a_resolution_is_linked_to_its_agents_and_tasks_and_rebuilt(
    pg: PostgresStore, graph: GraphStore, seed: Seed, ids: Ids, negotiations: list[UUID]
) -> None:
    negotiation, expected = await _resolved(pg, seed)
    negotiations.append(negotiation)
    await drain(Projector(pg, graph))
    assert await resolutions_of(graph, [negotiation]) == {negotiation: expected}

    # Applied again (a replay after a crash), nothing is duplicated.
    async with pg.connection() as conn:
        row = await conn.fetchrow(
            "SELECT id, kind, payload, created_at FROM outbox"
            " WHERE kind = 'negotiation.resolved' AND payload->>'id' = $1",
            str(negotiation),
        )
    assert row is not None
    await projection.apply(
        graph, [OutboxEvent(row["id"], row["kind"], row["payload"], row["created_at"])]
    )
    [counted] = await run(
        graph,
        "MATCH (n:Negotiation {id: $id}) RETURN COUNT { (:Agent)-[:AGREED_TO]->(n) } AS agents,"
        " COUNT { (n)-[:CONCERNS]->(:Task) } AS tasks",
        id=str(negotiation),
    )
    assert counted == {"agents": 3, "tasks": 1}

    # Lost from the graph, it comes back with a rebuild from PostgreSQL.
    await run(graph, "MATCH (n:Negotiation {id: $id}) DETACH DELETE n", id=str(negotiation))
    assert await resolutions_of(graph, [negotiation]) == {}
    report = await rebuild(pg, graph, prune_only=[*ids.all, negotiation])
    assert report.negotiations >= 1
    assert await resolutions_of(graph, [negotiation]) == {negotiation: expected}
