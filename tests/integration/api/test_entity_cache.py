"""The entity cache: two levels, invalidated by PostgreSQL on every change, below
every permission check; a client reads its own writes on any replica."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.graphql_view import GraphQLView
from gateway.prepared import PreparedPath
from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore, RedisStore, roundtrips
from stores.cache import CacheOptions, EntityCache, entities
from stores.cache.local import MISSING
from stores.postgres.inputs import AgentInput, TaskInput
from stores.postgres.records import WriteContext
from stores.redis.entity_cache import KEY_PREFIX, SharedEntityCache, generation_key, vouch_key
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes
from tests.integration.api.test_agents_api import create_agent
from tests.support.caches import cache_behind_gate, redis_behind_gate
from tests.support.redis_servers import own_redis_server
from tests.support.serving import wait_until
from tests.support.waiting import until

AGENT = "query($id: ID!) { node(id: $id) { ... on Agent { id name notes version } } }"
UPDATE = """
mutation($id: ID!, $notes: String!) {
  updateAgent(input: {id: $id, notes: $notes}) { agent { notes } userErrors { code } }
}
"""
EMAIL = "query($id: ID!) { node(id: $id) { ... on User { id email } } }"


@pytest.fixture
def cached(settings: Settings) -> Settings:
    # Lifetimes far past any test: only invalidations can end an entry.
    return settings.model_copy(
        update={"cache_enabled": True, "cache_agent_ttl_s": 3600, "rate_limit_enabled": False}
    )


@pytest.fixture
def replicas(cached: Settings) -> Iterator[tuple[GraphQL, GraphQL]]:
    with TestClient(create_app(cached)) as first, TestClient(create_app(cached)) as second:
        yield GraphQL(first), GraphQL(second)


def _agent(gql: GraphQL, caller: Caller, agent_id: str) -> dict[str, Any]:
    node: dict[str, Any] = data(gql(AGENT, {"id": agent_id}, caller=caller))["node"]
    return node


def _entity_cache(gql: GraphQL) -> EntityCache:
    cache = gql.client.app.state.stores.entity_cache  # type: ignore[attr-defined]
    assert isinstance(cache, EntityCache)
    return cache


def _prepared(gql: GraphQL) -> PreparedPath | None:
    """The gateway's prepared path: None on graphql-core's executor."""
    for route in gql.client.app.routes:  # type: ignore[attr-defined]
        endpoint = getattr(route, "endpoint", None)
        if isinstance(endpoint, GraphQLView):
            return endpoint.prepared
    raise AssertionError("no GraphQL route")


def test_reads_come_from_each_level_in_turn(
    replicas: tuple[GraphQL, GraphQL], operator: Caller
) -> None:
    first, second = replicas
    agent = create_agent(first, operator)

    _agent(first, operator, str(agent["id"]))
    counts = _entity_cache(first).counts
    assert counts.misses["agents"] >= 1
    local_hits = counts.hits[("agents", "local")]
    _agent(first, operator, str(agent["id"]))
    assert counts.hits[("agents", "local")] == local_hits + 1

    # The other replica finds it in Redis, then in its own memory.
    _agent(second, operator, str(agent["id"]))
    assert _entity_cache(second).counts.hits[("agents", "shared")] == 1
    _agent(second, operator, str(agent["id"]))
    assert _entity_cache(second).counts.hits[("agents", "local")] == 1


def test_a_writer_reads_its_write_on_every_replica(
    replicas: tuple[GraphQL, GraphQL], operator: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = replicas
    agent = create_agent(first, operator, notes="before")
    for gql in (first, second, first, second):  # cached in both levels of both replicas
        assert _agent(gql, operator, str(agent["id"]))["notes"] == "before"

    written = data(first(UPDATE, {"id": agent["id"], "notes": "after"}, caller=operator))
    assert written["updateAgent"]["userErrors"] == []
    # The writer's replica: at once, the mutation waited for its change to come back.
    assert _agent(first, operator, str(agent["id"]))["notes"] == "after"
    # The other replica drops its copy when PostgreSQL's notice arrives (no TTL passed).
    wait_until(
        lambda: _agent(second, operator, str(agent["id"]))["notes"] == "after",
        what="the second replica to drop its copy",
    )
    # The same mutation again takes the prepared path (gateway/prepared.py), which
    # settles the cache as the extension did: the writer reads it at once.
    assert _agent(first, operator, str(agent["id"]))["notes"] == "after"  # cached again
    prepared = _prepared(first)
    assert prepared is None or prepared.queries.get(UPDATE, None) is not None
    cache = _entity_cache(first)
    settled: list[None] = []
    settle = cache.settle

    async def counted_settle() -> None:
        settled.append(None)
        await settle()

    monkeypatch.setattr(cache, "settle", counted_settle)
    again = data(first(UPDATE, {"id": agent["id"], "notes": "again"}, caller=operator))
    assert again["updateAgent"]["userErrors"] == []
    assert len(settled) == 1
    assert _agent(first, operator, str(agent["id"]))["notes"] == "again"


def test_a_change_made_outside_the_gateway_is_seen(
    replicas: tuple[GraphQL, GraphQL], operator: Caller, settings: Settings
) -> None:
    first, second = replicas
    agent = create_agent(first, operator, notes="before")
    for gql in (first, second):
        assert _agent(gql, operator, str(agent["id"]))["notes"] == "before"

    async def update_by_hand() -> None:
        async with (
            PostgresStore(settings.postgres_options()) as postgres,
            postgres.connection() as conn,
        ):
            await conn.execute("UPDATE agents SET notes = 'by hand' WHERE id = $1", raw_id)

    raw_id = UUID(base64.b64decode(str(agent["id"])).decode().split(":", 1)[1])
    asyncio.run(update_by_hand())
    for replica in (first, second):

        def updated(gql: GraphQL = replica) -> bool:
            return bool(_agent(gql, operator, str(agent["id"]))["notes"] == "by hand")

        wait_until(updated, what="a change made with SQL to reach the cache")


def test_a_cached_record_still_passes_every_permission_check(
    replicas: tuple[GraphQL, GraphQL], admin: Caller, operator: Caller, viewer: Caller
) -> None:
    first, _ = replicas
    user_id = base64.b64encode(f"User:{viewer.user_id}".encode()).decode()
    seen_by_admin = data(first(EMAIL, {"id": user_id}, caller=admin))["node"]
    assert seen_by_admin["email"]
    first(EMAIL, {"id": user_id}, caller=admin)
    assert _entity_cache(first).counts.hits[("users", "local")] >= 1

    refused = first(EMAIL, {"id": user_id}, caller=operator)
    assert "FORBIDDEN" in error_codes(refused), refused
    assert (refused.get("data") or {}).get("node") in (None, {"id": user_id, "email": None})


def test_round_trips_fall_as_the_cache_fills(
    replicas: tuple[GraphQL, GraphQL], operator: Caller
) -> None:
    first, _ = replicas
    agent = create_agent(first, operator)
    _entity_cache(first).local.clear()
    _agent(first, operator, str(agent["id"]))
    _agent(first, operator, str(agent["id"]))
    # API keys are checked in PostgreSQL each time; the agent itself costs nothing now.
    again = dict(first.last_round_trips)
    _entity_cache(first).local.clear()
    _agent(first, operator, str(agent["id"]))
    from_redis = dict(first.last_round_trips)
    assert from_redis["redis"] == again["redis"] + 1
    assert from_redis["postgres"] == again["postgres"]


async def _new_agents(postgres: PostgresStore, count: int) -> list[UUID]:
    ctx = WriteContext(actor_id=None, request_id="test")
    made = [
        await postgres.agents.create(ctx, AgentInput(name=f"cached-{uuid4()}"))
        for _ in range(count)
    ]
    return [agent.id for agent in made]


async def test_one_load_per_key_however_many_readers(settings: Settings) -> None:
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(settings.redis_options()) as redis,
    ):
        cache = EntityCache(postgres, redis, CacheOptions())
        await cache.start()
        try:
            agent_ids = await _new_agents(postgres, 2)
            with roundtrips.counting() as trips:
                results = await asyncio.gather(*(cache.agents.by_ids(agent_ids) for _ in range(50)))
            assert [sorted(found) for found in results] == [sorted(agent_ids)] * 50
            assert trips["postgres"] == 1
        finally:
            await cache.aclose()


async def test_redis_down_leaves_the_memory_level(settings: Settings) -> None:
    dead_redis = settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:9/0")})
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(dead_redis.redis_options()) as redis,
    ):
        cache = EntityCache(postgres, redis, CacheOptions())
        await cache.start()
        try:
            agent_ids = await _new_agents(postgres, 1)
            assert set(await cache.agents.by_ids(agent_ids)) == set(agent_ids)
            assert cache.counts.shared_failures >= 1
            assert cache.shared_available is False
            with roundtrips.counting() as trips:
                assert set(await cache.agents.by_ids(agent_ids)) == set(agent_ids)
            assert trips["postgres"] == 0 and trips["redis"] == 0
            await until(lambda: cache.following)
        finally:
            await cache.aclose()
    assert KEY_PREFIX.startswith("cache:")


async def _cached_agent(cache: EntityCache, postgres: PostgresStore) -> UUID:
    """A new agent, read through `cache`: in memory and in Redis."""
    [agent_id] = await _new_agents(postgres, 1)
    await cache.agents.by_ids([agent_id])
    assert await cache.shared.get_many("agents", [agent_id])  # type: ignore[union-attr]
    return agent_id


async def _rename(postgres: PostgresStore, agent_id: UUID) -> str:
    renamed = f"renamed-{uuid4()}"
    async with postgres.connection() as conn:
        await conn.execute("UPDATE agents SET name = $2 WHERE id = $1", agent_id, renamed)
    return renamed


async def test_a_change_redis_missed_is_never_served_from_it(settings: Settings) -> None:
    # Redis cut off while an agent changes, its data kept: the record it holds is
    # stale, and stays so unless the tombstone is written once Redis is back.
    async with cache_behind_gate(settings) as (cache, postgres, gate):
        agent_id = await _cached_agent(cache, postgres)
        gate.close()
        renamed = await _rename(postgres, agent_id)
        await cache.settle()
        assert cache.local.get(("agents", agent_id)) is MISSING
        assert cache.counts.shared_failures >= 1

        gate.open()
        await until(lambda: cache.shared_available is True)
        with roundtrips.counting() as trips:
            found = await cache.agents.by_ids([agent_id])
        assert found[agent_id].name == renamed
        # Read from PostgreSQL: Redis had only the tombstone.
        assert trips["postgres"] == 1
        assert await cache.shared.get_many("agents", [agent_id]) == {}  # type: ignore[union-attr]


async def test_redis_stays_unused_until_every_change_it_missed_is_written(
    settings: Settings,
) -> None:
    # The missed tombstones left the list one kind at a time, before Redis had them:
    # a reader that took L2 as usable then was served the stale record (seen in a
    # fresh `make test`, test above). Here the late write is caught on its way.
    async with cache_behind_gate(settings) as (cache, postgres, gate):
        agent_id = await _cached_agent(cache, postgres)
        gate.close()
        renamed = await _rename(postgres, agent_id)
        await cache.settle()

        gate.hold()
        gate.open()
        # The cache's first words to Redis once it answers: the late tombstone.
        await gate.held.wait()
        usable_mid_write = cache.shared_usable()
        gate.release()
        assert not usable_mid_write

        await until(lambda: cache.shared_available is True)
        found = await cache.agents.by_ids([agent_id])
        assert found[agent_id].name == renamed


async def test_changes_made_while_nobody_listened_are_not_served_from_redis(
    settings: Settings,
) -> None:
    async with cache_behind_gate(settings) as (cache, postgres, _):
        agent_id = await _cached_agent(cache, postgres)
        # This cache's listener goes (a PostgreSQL restart, a failover): a change
        # made before it is back reaches no one here.
        listener = cache._listener._conn
        assert listener is not None
        async with postgres.connection() as conn:
            await conn.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
        await until(lambda: not cache.following)
        renamed = await _rename(postgres, agent_id)

        await until(lambda: cache.following and cache.shared_available is True)
        found = await cache.agents.by_ids([agent_id])
        assert found[agent_id].name == renamed


@asynccontextmanager
async def _stores(settings: Settings) -> AsyncIterator[tuple[PostgresStore, RedisStore]]:
    """The stores replicas share, on a migrated database."""
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(settings.redis_options()) as redis,
    ):
        await postgres.migrate()
        yield postgres, redis


@asynccontextmanager
async def _replica(postgres: PostgresStore, redis: RedisStore) -> AsyncIterator[EntityCache]:
    """One gateway's entity cache, started and stopped."""
    cache = EntityCache(postgres, redis, CacheOptions())
    await cache.start()
    try:
        yield cache
    finally:
        await cache.aclose()


async def _stale_in_redis(postgres: PostgresStore, redis: RedisStore) -> tuple[UUID, str]:
    """An agent a replica cached in Redis and stopped, then renamed while no replica
    listened (a worker, `psql`): Redis holds the old record. Its id and new name."""
    async with _replica(postgres, redis) as first:
        agent_id = await _cached_agent(first, postgres)
    renamed = await _rename(postgres, agent_id)
    await _no_listener_left(postgres)
    return agent_id, renamed


async def _no_listener_left(postgres: PostgresStore) -> None:
    """Until no cache listener is connected to this database. A closed connection's
    backend leaves `pg_stat_activity` a moment after its client: a replica starting
    then would count it as another listener, one that never answers."""

    async def none_left() -> bool:
        async with postgres.connection() as conn:
            listeners: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = $1",
                entities.LISTENER_NAME,
            )
        return listeners == 0

    await until(none_left)


async def test_a_replica_starting_alone_does_not_trust_what_redis_kept(
    settings: Settings,
) -> None:
    # Every gateway stopped while an agent changes (a worker, `psql`): no listener
    # hears it, and Redis keeps the old record. A gateway started next must not
    # serve it.
    async with _stores(settings) as (postgres, redis):
        agent_id, renamed = await _stale_in_redis(postgres, redis)
        async with _replica(postgres, redis) as second:
            assert second.shared_available is True
            assert await second.shared.get_many("agents", [agent_id]) == {}  # type: ignore[union-attr]
            found = await second.agents.by_ids([agent_id])
            assert found[agent_id].name == renamed


async def test_a_replica_starting_beside_one_that_follows_keeps_redis(
    settings: Settings,
) -> None:
    async with _stores(settings) as (postgres, redis), _replica(postgres, redis) as running:
        agent_id = await _cached_agent(running, postgres)
        # The running replica heard every change: what Redis holds is current.
        async with _replica(postgres, redis) as starting:
            with roundtrips.counting() as trips:
                found = await starting.agents.by_ids([agent_id])
            assert found[agent_id].id == agent_id
            assert trips["postgres"] == 0 and trips["redis"] == 1


async def test_a_replica_starting_beside_one_that_never_answers_does_not_trust_redis(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A listener that does not answer (a replica hung, or one that lost changes and
    # has not told Redis yet) vouches for nothing: the starting replica waits for an
    # answer, then drops what Redis kept.
    monkeypatch.setattr(entities, "_VOUCH_WAIT_S", 0.5)
    async with _stores(settings) as (postgres, redis):
        agent_id, renamed = await _stale_in_redis(postgres, redis)
        silent = await asyncpg.connect(
            settings.postgres_dsn.get_secret_value(),
            server_settings={"application_name": entities.LISTENER_NAME},
        )
        try:
            await silent.add_listener(entities.CHANNEL, lambda *_: None)
            async with _replica(postgres, redis) as starting:
                found = await starting.agents.by_ids([agent_id])
                assert found[agent_id].name == renamed
        finally:
            await silent.close()


async def test_replicas_starting_together_decline_rather_than_wait_for_each_other(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers of one `serve --workers N` start at once: each sees the others'
    # listeners, and none can vouch. Each declines, so none waits out the deadline
    # (an hour here: the test would stop at its bound instead), and both drop L2.
    monkeypatch.setattr(entities, "_VOUCH_WAIT_S", 3600.0)
    async with _stores(settings) as (postgres, redis):
        agent_id, renamed = await _stale_in_redis(postgres, redis)
        caches = [EntityCache(postgres, redis, CacheOptions()) for _ in range(2)]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(cache.start() for cache in caches))
            for cache in caches:
                found = await cache.agents.by_ids([agent_id])
                assert found[agent_id].name == renamed
        finally:
            for cache in caches:
                await cache.aclose()


async def test_a_replica_following_changes_into_another_redis_does_not_vouch_for_this_one(
    settings: Settings, profile: Profile, tmp_path: Path
) -> None:
    # Gateways that share PostgreSQL but not Redis: one following into its own Redis
    # says nothing of what this one kept.
    with own_redis_server(profile, tmp_path / "redis") as server:
        elsewhere = settings.model_copy(
            update={"redis_url": SecretStr(f"redis://127.0.0.1:{server.port}/0")}
        )
        async with (
            _stores(settings) as (postgres, redis),
            RedisStore(elsewhere.redis_options()) as other_redis,
        ):
            agent_id, renamed = await _stale_in_redis(postgres, redis)
            async with _replica(postgres, other_redis), _replica(postgres, redis) as starting:
                found = await starting.agents.by_ids([agent_id])
                assert found[agent_id].name == renamed


async def test_a_replica_starting_while_redis_is_away_drops_it_once_back(
    settings: Settings,
) -> None:
    # Redis unreachable when a gateway starts, then back with what it held: the
    # entries older than the gateway's listener are dropped before L2 is used.
    async with _stores(settings) as (postgres, redis), redis_behind_gate(settings) as gated:
        gated_redis, gate = gated
        agent_id, renamed = await _stale_in_redis(postgres, redis)
        gate.close()
        async with _replica(postgres, gated_redis) as late:
            assert late.shared_available is False
            gate.open()
            await until(lambda: late.shared_available is True)
            found = await late.agents.by_ids([agent_id])
            assert found[agent_id].name == renamed


async def test_dropping_kinds_takes_their_entries_only(settings: Settings) -> None:
    async with RedisStore(settings.redis_options()) as redis:
        shared = SharedEntityCache(redis)
        ids = [uuid4(), uuid4()]
        for kind in ("agents", "tasks", "users"):
            await shared.put_many(kind, dict.fromkeys(ids, b"x"), dict.fromkeys(ids, 60.0))
        others = [f"{KEY_PREFIX}q:a-query-result", vouch_key("a-token"), generation_key("users")]
        await redis.client.set(others[0], b"kept")
        await redis.client.set(others[1], b"1", ex=60)
        await redis.client.set(others[2], 7)
        generations = [generation_key(kind) for kind in ("agents", "tasks")]
        before = [int(await redis.client.get(key) or 0) for key in generations]

        await shared.drop_kinds(["agents", "tasks"])

        assert await shared.get_many("agents", ids) == {}
        assert await shared.get_many("tasks", ids) == {}
        assert set(await shared.get_many("users", ids)) == set(ids)
        assert all([await redis.client.exists(key) for key in others])
        assert await redis.client.get(others[2]) == b"7"
        after = [int(await redis.client.get(key) or 0) for key in generations]
        assert after == [count + 1 for count in before]


def test_health_names_the_cache_levels_in_use(
    replicas: tuple[GraphQL, GraphQL], viewer: Caller
) -> None:
    first, _ = replicas
    health = data(first("{ health { components { name entityCache } } }", caller=viewer))
    by_store = {c["name"]: c["entityCache"] for c in health["health"]["components"]}
    assert by_store["redis"] == "memory and redis"
    assert by_store["postgres"] is None


async def test_a_pending_task_is_not_cached_and_its_claim_sends_no_notice(
    settings: Settings,
) -> None:
    async with PostgresStore(settings.postgres_options()) as postgres:
        cache = EntityCache(postgres, None, CacheOptions())
        dropped: list[UUID] = []
        cache.on_dropped = lambda kind, ids: dropped.extend(ids or []) if kind == "tasks" else None
        await cache.start()
        try:
            ctx = WriteContext(actor_id=None, request_id="test")
            task = await postgres.tasks.create(ctx, TaskInput(title=f"queued-{uuid4()}"))
            assert (await cache.tasks.by_ids([task.id]))[task.id].status == "pending"
            assert cache.local.get(("tasks", task.id)) is MISSING

            async with postgres.connection() as conn:
                await conn.execute("UPDATE tasks SET status = 'assigned' WHERE id = $1", task.id)
            await cache.settle()  # every notice sent before now has arrived
            assert task.id not in dropped
            assert (await cache.tasks.by_ids([task.id]))[task.id].status == "assigned"
            assert cache.local.get(("tasks", task.id)) is not MISSING

            async with postgres.connection() as conn:
                await conn.execute("UPDATE tasks SET status = 'completed' WHERE id = $1", task.id)
            await cache.settle()
            assert task.id in dropped
            assert (await cache.tasks.by_ids([task.id]))[task.id].status == "completed"
        finally:
            await cache.aclose()


async def test_workflows_and_finished_tasks_are_cached_with_their_own_lifetimes(
    settings: Settings,
) -> None:
    async with PostgresStore(settings.postgres_options()) as postgres:
        options = CacheOptions(workflow_ttl_s=600, task_ttl_s=300, finished_task_ttl_s=86_400)
        cache = EntityCache(postgres, None, options)
        await cache.start()
        try:
            ctx = WriteContext(actor_id=None, request_id="test")
            workflow = await postgres.workflows.create(
                ctx, f"flow-{uuid4()}", {"steps": [], "edges": []}
            )
            await cache.workflows.by_ids([workflow.id])
            await cache.workflows.by_ids([workflow.id])
            assert cache.counts.hits[("workflows", "local")] == 1
            async with postgres.connection() as conn:
                await conn.execute(
                    "UPDATE workflows SET name = 'renamed' WHERE id = $1", workflow.id
                )
            await cache.settle()
            assert (await cache.workflows.by_ids([workflow.id]))[workflow.id].name == "renamed"

            task = await postgres.tasks.create(ctx, TaskInput(title=f"done-{uuid4()}"))
            async with postgres.connection() as conn:
                await conn.execute("UPDATE tasks SET status = 'completed' WHERE id = $1", task.id)
            finished = (await cache.tasks.by_ids([task.id]))[task.id]
            assert cache._task_ttl(finished) == 86_400
            assert cache._task_ttl(replace(finished, status="assigned")) == 300
        finally:
            await cache.aclose()
