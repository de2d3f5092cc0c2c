"""Whole query results (`@cached`): kept per caller scope, ended by the change notices
of what they read, never for results with errors or reads no notice covers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from stores import PostgresStore, RedisStore, roundtrips
from stores.cache import CacheOptions, EntityCache
from stores.cache.queries import key_of
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes
from tests.integration.api.test_agents_api import create_agent
from tests.support.serving import wait_until

AGENT = """
query CachedAgent($id: ID!) @cached(ttl: 300) {
  node(id: $id) { ... on Agent { id name notes } }
}
"""
UPDATE = """
mutation($id: ID!, $notes: String!) {
  updateAgent(input: {id: $id, notes: $notes}) { agent { notes } userErrors { code } }
}
"""
EMAIL = "query($id: ID!) @cached { node(id: $id) { ... on User { id email } } }"


@pytest.fixture
def cached(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"cache_enabled": True, "cache_agent_ttl_s": 3600, "rate_limit_enabled": False}
    )


@pytest.fixture
def replicas(cached: Settings) -> Iterator[tuple[GraphQL, GraphQL]]:
    with TestClient(create_app(cached)) as first, TestClient(create_app(cached)) as second:
        yield GraphQL(first), GraphQL(second)


def _cache(body: dict[str, Any]) -> dict[str, Any]:
    outcome: dict[str, Any] = body["extensions"]["cache"]
    return outcome


def _notes(gql: GraphQL, caller: Caller, agent_id: object) -> tuple[str, dict[str, Any]]:
    body = gql(AGENT, {"id": agent_id}, caller=caller)
    return data(body)["node"]["notes"], _cache(body)


def test_hit_miss_and_each_level(replicas: tuple[GraphQL, GraphQL], operator: Caller) -> None:
    first, second = replicas
    agent = create_agent(first, operator, notes="n")

    notes, outcome = _notes(first, operator, agent["id"])
    assert (notes, outcome) == ("n", {"status": "MISS", "stored": True, "ttl": 300.0})
    notes, outcome = _notes(first, operator, agent["id"])
    assert (notes, outcome["status"], outcome["level"]) == ("n", "HIT", "local")
    assert first.last_round_trips.get("redis", 0) == 0
    # Another replica finds it in Redis, then in its own memory.
    assert _notes(second, operator, agent["id"])[1]["level"] == "shared"
    assert _notes(second, operator, agent["id"])[1]["level"] == "local"
    # Other variables, another entry.
    other = create_agent(first, operator, notes="m")
    assert _notes(first, operator, other["id"]) == (
        "m",
        {"status": "MISS", "stored": True, "ttl": 300.0},
    )


def test_a_write_ends_the_result_at_once_for_the_writer_and_soon_elsewhere(
    replicas: tuple[GraphQL, GraphQL], operator: Caller
) -> None:
    first, second = replicas
    agent = create_agent(first, operator, notes="before")
    for gql in (first, second, first, second):
        assert _notes(gql, operator, agent["id"])[0] == "before"
    assert _notes(second, operator, agent["id"])[1]["status"] == "HIT"

    written = data(first(UPDATE, {"id": agent["id"], "notes": "after"}, caller=operator))
    assert written["updateAgent"]["userErrors"] == []
    assert _notes(first, operator, agent["id"])[0] == "after"
    wait_until(
        lambda: _notes(second, operator, agent["id"])[0] == "after",
        what="the second replica to drop its cached result",
    )


def test_a_less_privileged_caller_never_gets_an_admins_result(
    replicas: tuple[GraphQL, GraphQL], admin: Caller, operator: Caller, viewer: Caller
) -> None:
    first, _ = replicas
    user_id = base64.b64encode(f"User:{viewer.user_id}".encode()).decode()
    for _ in range(2):
        seen = first(EMAIL, {"id": user_id}, caller=admin)
        assert data(seen)["node"]["email"]
    assert _cache(seen)["status"] == "HIT"

    refused = first(EMAIL, {"id": user_id}, caller=operator)
    assert "FORBIDDEN" in error_codes(refused), refused
    assert _cache(refused) == {"status": "MISS", "stored": False, "reason": "errors"}
    assert "@" not in str(refused.get("data"))


def test_results_that_read_what_no_notice_covers_are_not_kept(
    replicas: tuple[GraphQL, GraphQL], operator: Caller
) -> None:
    first, _ = replicas
    listing = "query @cached { agents(first: 2) { edges { node { id } } } }"
    for _ in range(2):
        outcome = _cache(first(listing, caller=operator))
        assert outcome == {
            "status": "MISS",
            "stored": False,
            "reason": "read what no change notice covers",
        }


def test_no_directive_no_cache_and_bad_ttls_and_mutations_refused(
    replicas: tuple[GraphQL, GraphQL], operator: Caller
) -> None:
    first, _ = replicas
    agent = create_agent(first, operator)
    plain = first(AGENT.replace("@cached(ttl: 300)", ""), {"id": agent["id"]}, caller=operator)
    assert "cache" not in (plain.get("extensions") or {})
    zero = first(AGENT.replace("300", "0"), {"id": agent["id"]}, caller=operator)
    assert error_codes(zero) == ["BAD_USER_INPUT"]
    mutation = first(
        UPDATE.replace("mutation(", "mutation M(").replace(
            ") {\n  update", ") @cached {\n  update"
        ),
        {"id": agent["id"], "notes": "x"},
        caller=operator,
    )
    assert error_codes(mutation) == ["GRAPHQL_VALIDATION_FAILED"], mutation


def test_without_the_entity_cache_a_cached_query_reads_its_store_every_time(
    gql: GraphQL, operator: Caller
) -> None:
    # The suite's gateway runs without the entity cache, and so without its extensions.
    agent = create_agent(gql, operator, notes="n")
    for notes in ("n", "m"):
        body = gql(AGENT, {"id": agent["id"]}, caller=operator)
        assert data(body)["node"]["notes"] == notes
        assert "cache" not in (body.get("extensions") or {})
        assert gql.last_round_trips["postgres"] >= 1
        updated = gql(UPDATE, {"id": agent["id"], "notes": "m"}, caller=operator)
        assert data(updated)["updateAgent"]["userErrors"] == []
    # A ttl the cache would refuse means nothing without it.
    zero = gql(AGENT.replace("300", "0"), {"id": agent["id"]}, caller=operator)
    assert data(zero)["node"]["notes"] == "m"


def test_a_result_larger_than_the_bound_is_not_kept(cached: Settings, operator: Caller) -> None:
    small = cached.model_copy(update={"cache_query_max_bytes": 16})
    with TestClient(create_app(small)) as client:
        gql = GraphQL(client)
        agent = create_agent(gql, operator)
        for _ in range(2):
            outcome = _cache(gql(AGENT, {"id": agent["id"]}, caller=operator))
            assert outcome == {"status": "MISS", "stored": False, "reason": "too large"}


async def test_redis_down_leaves_the_memory_level(settings: Settings) -> None:
    dead_redis = settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:9/0")})
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(dead_redis.redis_options()) as redis,
    ):
        cache = EntityCache(postgres, redis, CacheOptions())
        await cache.start()
        try:
            queries = cache.queries
            key = key_of(uuid4().bytes)
            missed = await queries.lookup(key, 60)
            assert missed.body is None and missed.shared_generations is None
            assert cache.shared_available is False
            assert await queries.store(key, b'{"a":1}', {"agents"}, missed, 60)
            with roundtrips.counting() as trips:
                hit = await queries.lookup(key, 60)
            assert (hit.body, hit.level) == (b'{"a":1}', "local")
            assert trips["redis"] == 0
            # A change notice of a kind it read ends it.
            cache.generations["agents"] += 1
            assert (await queries.lookup(key, 60)).body is None
        finally:
            await cache.aclose()


async def test_one_computation_per_key_at_a_time(settings: Settings) -> None:
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(settings.redis_options()) as redis,
    ):
        cache = EntityCache(postgres, redis, CacheOptions())
        queries = cache.queries
        key = key_of(uuid4().bytes)
        assert queries.begin(key) is None  # this caller computes
        waiting = [queries.begin(key) for _ in range(3)]
        assert all(w is not None and not w.done() for w in waiting)
        queries.end(key, b"{}")
        assert [await w for w in waiting if w is not None] == [b"{}"] * 3
        assert queries.begin(key) is None  # the next computation is this caller's again
        queries.end(key, None)
