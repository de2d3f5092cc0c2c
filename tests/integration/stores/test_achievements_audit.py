from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from stores import PostgresStore
from stores.errors import InvalidInput, NotFound
from stores.postgres.inputs import AgentInput, AgentPatch, AuditFilter
from stores.postgres.pagination import PageRequest
from stores.postgres.records import LeaderboardEntry, WriteContext
from tests.integration.stores import audit_rows, new_agent, new_ctx, unique


async def test_award_and_read_per_agent(store: PostgresStore) -> None:
    one, two = await new_agent(store), await new_agent(store)
    ctx = new_ctx()
    first = await store.achievements.award(ctx, one.id, "first-task", 10)
    second = await store.achievements.award(new_ctx(), one.id, "streak", 5)
    assert (first.agent_id, first.type, first.points) == (one.id, "first-task", 10)

    found = await store.achievements.for_agents([one.id, two.id], first=10)
    assert found == {one.id: [second, first], two.id: []}
    # At most `first` per agent, newest first.
    assert await store.achievements.for_agents([one.id], first=1) == {one.id: [second]}
    [audit] = await audit_rows(store, ctx)
    assert (audit["action"], audit["resource_type"], audit["resource_id"]) == (
        "award",
        "achievement",
        str(first.id),
    )


@pytest.mark.parametrize(
    ("kind", "points", "field"),
    [("", 1, "type"), ("x" * 101, 1, "type"), ("ok", 2_000_000, "points"), ("ok", True, "points")],
)
async def test_award_refuses_bad_input(
    store: PostgresStore, kind: str, points: int, field: str
) -> None:
    agent = await new_agent(store)
    with pytest.raises(InvalidInput) as refused:
        await store.achievements.award(new_ctx(), agent.id, kind, points)
    assert refused.value.field == field


async def test_award_to_an_unknown_agent_is_not_found(store: PostgresStore) -> None:
    ctx = new_ctx()
    with pytest.raises(NotFound) as refused:
        await store.achievements.award(ctx, uuid4(), "ghost", 1)
    assert refused.value.field == "agentId"
    assert await audit_rows(store, ctx) == []


async def test_concurrent_duplicate_awards_count_once(store: PostgresStore) -> None:
    agent = await new_agent(store)
    actor, key = uuid4(), unique("key")
    awards = await asyncio.gather(
        *(
            store.achievements.award(new_ctx(actor_id=actor, key=key), agent.id, "once", 7)
            for _ in range(4)
        )
    )
    assert len({award.id for award in awards}) == 1
    assert len((await store.achievements.for_agents([agent.id], first=10))[agent.id]) == 1


async def test_leaderboard_ranks_by_points_since_a_time(store: PostgresStore) -> None:
    # Far-future awards keep this test's agents on top whatever else the database holds;
    # they are removed at the end.
    agents = [await new_agent(store) for _ in range(3)]
    later = datetime.now(UTC) + timedelta(days=3650)
    async with store.connection() as conn:
        for agent, points in zip(agents, (500_000, 900_000, 500_000), strict=True):
            await conn.execute(
                "INSERT INTO achievements (agent_id, type, points, awarded_at)"
                " VALUES ($1, 'bench', $2, $3)",
                agent.id,
                points,
                later,
            )
        await conn.execute(
            "INSERT INTO achievements (agent_id, type, points, awarded_at)"
            " VALUES ($1, 'old', 1, $2)",
            agents[2].id,
            later - timedelta(days=1),
        )

    try:
        board = await store.achievements.leaderboard(first=3, since=later)
        assert [(entry.agent_id, entry.points, entry.achievements) for entry in board] == sorted(
            [(agents[1].id, 900_000, 1), (agents[0].id, 500_000, 1), (agents[2].id, 500_000, 1)],
            key=lambda entry: (-entry[1], str(entry[0])),
        )
        wider = await store.achievements.leaderboard(first=3, since=later - timedelta(days=2))
        assert wider[1] == LeaderboardEntry(agents[2].id, 500_001, 2)
    finally:
        # Other tests in this database read the leaderboard too.
        async with store.connection() as conn:
            await conn.execute(
                "DELETE FROM achievements WHERE agent_id = ANY($1::uuid[])",
                [agent.id for agent in agents],
            )
    assert await store.achievements.leaderboard(first=0) == []
    with pytest.raises(InvalidInput):
        await store.achievements.leaderboard(first=101)


async def test_audit_filters_newest_first(store: PostgresStore) -> None:
    actor = uuid4()
    started = datetime.now(UTC)
    agent = await store.agents.create(new_ctx(actor_id=actor), AgentInput(name=unique("audited")))
    for notes in ("one", "two", "three"):
        await store.agents.update(
            new_ctx(actor_id=actor), agent.id, AgentPatch(notes=notes), expected_version=None
        )
    await store.achievements.award(new_ctx(actor_id=actor), agent.id, "audited", 1)

    everything = await store.audit.list(AuditFilter(actor_id=actor), PageRequest(), with_total=True)
    assert [e.action for e in everything.items] == ["award", "update", "update", "update", "create"]
    assert everything.total_count == 5
    assert [e.new_value["notes"] for e in everything.items[1:4] if e.new_value] == [
        "three",
        "two",
        "one",
    ]

    updates = await store.audit.list(
        AuditFilter(
            actor_id=actor, action="update", resource_type="agent", resource_id=str(agent.id)
        ),
        PageRequest(first=2),
    )
    assert [e.new_value["notes"] for e in updates.items if e.new_value] == ["three", "two"]
    assert updates.has_next_page
    rest = await store.audit.list(
        AuditFilter(actor_id=actor, action="update"), PageRequest(after=updates.cursors[-1])
    )
    assert [e.new_value["notes"] for e in rest.items if e.new_value] == ["one"]
    assert (rest.has_next_page, rest.has_previous_page) == (False, True)

    last_two = await store.audit.list(AuditFilter(actor_id=actor), PageRequest(last=2))
    assert last_two.items == everything.items[-2:]
    assert (last_two.has_previous_page, last_two.has_next_page) == (True, False)

    window = await store.audit.list(
        AuditFilter(actor_id=actor, since=started, until=datetime.now(UTC) + timedelta(1)),
        PageRequest(),
    )
    assert len(window.items) == 5
    none_yet = await store.audit.list(AuditFilter(actor_id=actor, until=started), PageRequest())
    assert none_yet.items == []


async def test_audit_keeps_addresses_and_drops_names(store: PostgresStore) -> None:
    actor = uuid4()
    for address in ("10.1.2.3", "::1", "testclient", None):
        ctx = WriteContext(actor_id=actor, request_id=unique("req"), client_address=address)
        await store.agents.create(ctx, AgentInput(name=unique("addr")))
    page = await store.audit.list(AuditFilter(actor_id=actor), PageRequest())
    assert [e.client_address for e in reversed(page.items)] == ["10.1.2.3", "::1", None, None]
    assert all(e.request_id and e.request_id.startswith("req-") for e in page.items)
