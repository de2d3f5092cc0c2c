"""Metric aggregates over closed windows, cached in two levels and ended by late points;
the permission checks still run on every read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from stores import PostgresStore, RedisStore
from stores.cache import CacheOptions, EntityCache
from stores.cache.aggregates import question_of
from stores.metrics import BucketValue, MetricPoint, Series, Source
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes
from tests.integration.metrics.test_metrics_api import RECORD, _agent, _at, _metric
from tests.support.caches import cache_behind_gate
from tests.support.serving import wait_until
from tests.support.waiting import until

HOUR = timedelta(hours=1)
SERIES = """query($names: [String!]!, $agents: [ID!]!, $from: DateTime!, $to: DateTime!) {
  metricSeries(names: $names, agents: $agents, from: $from, to: $to, bucket: "1h", aggregate: SUM) {
    agentId name points { time value } } }"""
CACHED_AGENT_METRICS = """query($id: ID!, $name: String!, $from: DateTime!, $to: DateTime!)
  @cached { node(id: $id) { ... on Agent { id metrics(name: $name, from: $from, to: $to,
  bucket: "1h", aggregate: SUM) { points { value } } } } }"""


@pytest.fixture
def replicas(settings: Settings) -> Iterator[tuple[GraphQL, GraphQL]]:
    cached = settings.model_copy(update={"cache_enabled": True, "rate_limit_enabled": False})
    with TestClient(create_app(cached)) as first, TestClient(create_app(cached)) as second:
        yield GraphQL(first), GraphQL(second)


def _cache(gql: GraphQL) -> EntityCache:
    cache = gql.client.app.state.stores.entity_cache  # type: ignore[attr-defined]
    assert isinstance(cache, EntityCache)
    return cache


def _record(
    gql: GraphQL, caller: Caller, agent: str, name: str, at: datetime, value: float
) -> None:
    point = {"agentId": agent, "name": name, "value": value, "time": at.isoformat()}
    assert data(gql(RECORD, {"points": [point]}, caller=caller))["recordMetrics"]["accepted"] == 1


def _sums(
    gql: GraphQL, caller: Caller, agent: str, name: str, start: datetime, end: datetime
) -> list[Any]:
    variables = {
        "names": [name],
        "agents": [agent],
        "from": start.isoformat(),
        "to": end.isoformat(),
    }
    found = data(gql(SERIES, variables, caller=caller))["metricSeries"]
    return [p["value"] for p in found[0]["points"]]


def test_a_closed_window_is_cached_and_a_late_point_ends_it(
    replicas: tuple[GraphQL, GraphQL], operator: Caller, viewer: Caller
) -> None:
    first, second = replicas
    agent, name = _agent(first, operator), _metric(first, operator)
    start = _at(3)
    _record(first, operator, agent, name, start, 1.0)
    end = start + 2 * HOUR

    assert _sums(first, viewer, agent, name, start, end) == [1.0]
    counts = _cache(first).counts
    misses = counts.misses["metrics"]
    assert _sums(first, viewer, agent, name, start, end) == [1.0]
    assert first.last_round_trips.get("metrics", 0) == 0
    assert counts.misses["metrics"] == misses
    assert counts.hits[("metrics", "local")] >= 1, (counts, first.last_round_trips)
    assert _sums(second, viewer, agent, name, start, end) == [1.0]
    assert _cache(second).counts.hits[("metrics", "shared")] >= 1
    assert second.last_round_trips.get("metrics", 0) == 0

    # A late point in the cached window: its writer's replica sees it at once, the other
    # once the notice arrives.
    _record(first, operator, agent, name, start + HOUR, 5.0)
    assert _sums(first, viewer, agent, name, start, end) == [1.0, 5.0]
    wait_until(
        lambda: _sums(second, viewer, agent, name, start, end) == [1.0, 5.0],
        what="the other replica to drop its cached aggregate",
    )


def test_an_open_window_is_not_cached(replicas: tuple[GraphQL, GraphQL], operator: Caller) -> None:
    first, _ = replicas
    agent, name = _agent(first, operator), _metric(first, operator)
    now = datetime.now(UTC)
    _record(first, operator, agent, name, now - timedelta(seconds=5), 2.0)
    for _ in range(2):
        assert _sums(first, operator, agent, name, now - HOUR, now + HOUR) == [2.0]
        assert first.last_round_trips.get("metrics") == 1


def test_permission_checks_run_on_cached_aggregates(
    replicas: tuple[GraphQL, GraphQL], operator: Caller, viewer: Caller
) -> None:
    first, _ = replicas
    agent, name = _agent(first, operator), _metric(first, operator)
    start = _at(4)
    _record(first, operator, agent, name, start, 3.0)
    assert _sums(first, viewer, agent, name, start, start + HOUR) == [3.0]
    variables = {
        "names": [name],
        "agents": [agent],
        "from": start.isoformat(),
        "to": (start + HOUR).isoformat(),
    }
    anonymous = first(SERIES, variables)
    assert error_codes(anonymous) == ["UNAUTHENTICATED"], anonymous
    assert anonymous.get("data") is None


def test_a_cached_query_over_closed_metrics_is_ended_by_a_late_point(
    replicas: tuple[GraphQL, GraphQL], operator: Caller
) -> None:
    first, _ = replicas
    agent, name = _agent(first, operator), _metric(first, operator)
    start = _at(5)
    _record(first, operator, agent, name, start, 1.0)
    variables = {
        "id": agent,
        "name": name,
        "from": start.isoformat(),
        "to": (start + 2 * HOUR).isoformat(),
    }
    outcomes = [first(CACHED_AGENT_METRICS, variables, caller=operator) for _ in range(2)]
    assert outcomes[0]["extensions"]["cache"]["stored"] is True, outcomes[0]
    assert outcomes[1]["extensions"]["cache"]["status"] == "HIT"
    _record(first, operator, agent, name, start + HOUR, 2.0)
    after = first(CACHED_AGENT_METRICS, variables, caller=operator)
    assert after["extensions"]["cache"]["status"] == "MISS"
    assert [p["value"] for p in data(after)["node"]["metrics"]["points"]] == [1.0, 2.0]


async def test_one_load_per_key_however_many_readers(settings: Settings) -> None:
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(settings.redis_options()) as redis,
    ):
        cache = EntityCache(postgres, redis, CacheOptions())
        await cache.start()
        loads: list[list[UUID]] = []
        agent_id = uuid4()

        async def load(ids: list[UUID]) -> dict[UUID, list[Series]]:
            loads.append(ids)
            await asyncio.sleep(0)  # let every reader arrive while this load runs
            return {a: [Series(a, "n", Source.RAW, [])] for a in ids}

        try:
            question = uuid4().bytes
            found = await asyncio.gather(
                *(cache.aggregates.series(question, [agent_id], load) for _ in range(20))
            )
            assert loads == [[agent_id]]
            assert all(f[agent_id][0].agent_id == agent_id for f in found)
        finally:
            await cache.aclose()


async def test_a_late_point_redis_missed_ends_its_aggregate_there_once_it_is_back(
    settings: Settings,
) -> None:
    # Redis cut off (its data kept) while a late point lands in a cached window: once
    # it answers again, the entry it holds must not be served.
    async with cache_behind_gate(settings) as (cache, _, gate):
        agent_id = uuid4()
        window_start = _at(6)
        question = question_of("a late point while Redis was away", uuid4())
        stored = {"value": 1.0}

        async def load(agent_ids: list[UUID]) -> dict[UUID, list[Series]]:
            bucket = BucketValue(window_start, stored["value"])
            return {a: [Series(a, "energy", Source.RAW, [bucket])] for a in agent_ids}

        async def cached_value() -> float | None:
            found = await cache.aggregates.series(question, [agent_id], load)
            return found[agent_id][0].buckets[0].value

        assert await cached_value() == 1.0
        cache.aggregates.local.clear()
        stored["value"] = 2.0
        assert await cached_value() == 1.0, "served from Redis"

        gate.close()
        stored["value"] = 3.0
        late = MetricPoint(agent_id, "energy", window_start + timedelta(minutes=5), 2.0)
        await cache.aggregates.recorded([late])
        assert cache.shared_available is False

        gate.open()
        await until(lambda: cache.shared_available is True)
        assert await cached_value() == 3.0
