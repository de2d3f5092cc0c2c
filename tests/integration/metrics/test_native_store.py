"""The native path (plain PostgreSQL partitions and rollups) against the local server."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from gateway.settings import Settings
from stores.metrics import (
    Aggregate,
    Backend,
    Fill,
    MetricPoint,
    MetricsStore,
    Source,
    Window,
)
from stores.metrics.buckets import ORIGIN
from stores.metrics.sql import NATIVE
from tests.integration.metrics.conftest import hour_ago, points_for

MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
EXACT = (
    Aggregate.AVG,
    Aggregate.MIN,
    Aggregate.MAX,
    Aggregate.SUM,
    Aggregate.COUNT,
    Aggregate.LAST,
)


async def _values(
    store: MetricsStore, agent: uuid.UUID, name: str, window: Window, aggregate: Aggregate
) -> tuple[Source, list[tuple[datetime, float | None]]]:
    series = (await store.series([agent], [name], window, aggregate))[(agent, name)]
    return series.source, [(b.time, b.value) for b in series.buckets]


async def _raw(
    store: MetricsStore,
    agents: list[uuid.UUID],
    names: list[str],
    window: Window,
    aggregate: Aggregate,
) -> dict[tuple[uuid.UUID, str, datetime], float]:
    async with store.connection() as conn:
        rows = await conn.fetch(
            NATIVE.series[(Source.RAW, aggregate)],
            agents, names, window.start, window.end, window.width, ORIGIN, {},
        )  # fmt: skip
    return {(r["agent_id"], r["name"], r["slot"]): r["value"] for r in rows}


async def test_the_local_server_runs_the_native_path(metrics: MetricsStore) -> None:
    assert metrics.backend is Backend.NATIVE
    probe = await metrics.probe()
    assert probe.up and probe.details["backend"] == "native"


async def test_duplicates_are_idempotent_and_late_points_land_in_their_buckets(
    metrics: MetricsStore,
) -> None:
    agent, t0 = uuid.uuid4(), hour_ago(3)
    first = [
        MetricPoint(agent, "cpu", t0 + timedelta(seconds=10), 1.0),
        MetricPoint(agent, "cpu", t0 + timedelta(seconds=70), 2.0),
        MetricPoint(agent, "cpu", t0 + timedelta(seconds=3610), 3.0),
    ]
    assert (await metrics.record(first)).inserted == 3
    # Out of order and late, mixed with the first batch again.
    late = [
        MetricPoint(agent, "cpu", t0 + timedelta(seconds=65), 5.0),
        *first,
        MetricPoint(agent, "cpu", t0 + timedelta(seconds=5), 4.0),
    ]
    result = await metrics.record(late)
    assert (result.inserted, result.duplicates) == (2, 3)
    # Same time, other labels: another point.
    labelled = MetricPoint(agent, "cpu", t0 + timedelta(seconds=5), 9.0, {"core": "1"})
    assert (await metrics.record([labelled, labelled])).inserted == 1

    minutes = Window.of(t0, t0 + 2 * HOUR, MINUTE)
    source, values = await _values(metrics, agent, "cpu", minutes, Aggregate.AVG)
    assert source is Source.MINUTE
    assert values == [
        (t0, (1.0 + 4.0 + 9.0) / 3),
        (t0 + MINUTE, 3.5),
        (t0 + 60 * MINUTE, 3.0),
    ]
    hours = Window.of(t0, t0 + 2 * HOUR, HOUR)
    assert await _values(metrics, agent, "cpu", hours, Aggregate.COUNT) == (
        Source.HOUR,
        [(t0, 5.0), (t0 + HOUR, 1.0)],
    )
    assert (await _values(metrics, agent, "cpu", hours, Aggregate.LAST))[1][0] == (t0, 2.0)
    only_core = await metrics.series([agent], ["cpu"], hours, Aggregate.SUM, labels={"core": "1"})
    series = only_core[(agent, "cpu")]
    assert series.source is Source.RAW and [b.value for b in series.buckets] == [9.0]


async def test_rollups_equal_raw_aggregation_with_concurrent_writers(
    metrics: MetricsStore, settings: Settings
) -> None:
    rng = random.Random(7)
    agents = [uuid.uuid4() for _ in range(3)]
    names = ["energy", "tokens"]
    t0 = hour_ago(5)
    points = [
        MetricPoint(
            rng.choice(agents),
            rng.choice(names),
            t0 + timedelta(seconds=rng.randrange(0, 4 * 3600), microseconds=rng.randrange(10**6)),
            round(rng.uniform(-50, 50), 3),
        )
        for _ in range(2_000)
    ]
    rng.shuffle(points)
    # Two gateways writing overlapping buckets at once, some points sent by both.
    async with MetricsStore(settings.metrics_options()) as other:
        await other.migrate()
        halves = [points[:1200], points[800:]]
        batches = [halves[0][i : i + 100] for i in range(0, 1200, 100)]
        batches_other = [halves[1][i : i + 100] for i in range(0, 1200, 100)]

        async def write(store: MetricsStore, chunks: list[list[MetricPoint]]) -> int:
            total = 0
            for chunk in chunks:
                total += (await store.record(chunk)).inserted
            return total

        inserted = await asyncio.gather(write(metrics, batches), write(other, batches_other))
    assert sum(inserted) == len({(p.agent_id, p.name, p.time) for p in points})

    for width in (MINUTE, 5 * MINUTE, HOUR, timedelta(days=1)):
        window = Window.of(t0, t0 + 4 * HOUR, width)
        for aggregate in EXACT:
            expected = await _raw(metrics, agents, names, window, aggregate)
            found = await metrics.series(agents, names, window, aggregate)
            got = {
                (agent, name, b.time): b.value
                for (agent, name), series in found.items()
                for b in series.buckets
            }
            assert {s.source for s in found.values()} == {
                Source.HOUR if width % HOUR == timedelta(0) else Source.MINUTE
            }
            assert got.keys() == expected.keys(), (width, aggregate)
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (width, aggregate, key)


async def test_bucket_boundaries_are_half_open_and_utc_whatever_the_offset(
    metrics: MetricsStore, settings: Settings
) -> None:
    agent = uuid.uuid4()
    t0 = hour_ago(4)
    kolkata = timezone(timedelta(hours=5, minutes=30))
    pacific = timezone(timedelta(hours=-8))
    await metrics.record(
        [
            MetricPoint(agent, "edge", t0.astimezone(kolkata), 1.0),  # first instant: in
            MetricPoint(agent, "edge", (t0 - timedelta(microseconds=1)).astimezone(pacific), 2.0),
            MetricPoint(agent, "edge", (t0 + HOUR - timedelta(microseconds=1)), 3.0),
            MetricPoint(agent, "edge", (t0 + HOUR).astimezone(kolkata), 4.0),
        ]
    )
    # from/to in another offset, and not on a boundary: widened to whole buckets.
    window = Window.of((t0 + 10 * MINUTE).astimezone(pacific), t0 + HOUR + MINUTE, HOUR)
    assert (window.start, window.end) == (t0, t0 + 2 * HOUR)
    _, values = await _values(metrics, agent, "edge", window, Aggregate.SUM)
    assert values == [(t0, 4.0), (t0 + HOUR, 4.0)]
    assert all(moment.utcoffset() == timedelta(0) for moment, _ in values)
    # The session time zone of a connection changes nothing: buckets are absolute.
    conn = await asyncpg.connect(
        settings.postgres_dsn.get_secret_value(),
        server_settings={"search_path": "metrics", "timezone": "Asia/Kolkata"},
    )
    try:
        days = Window.of(t0 - 2 * HOUR, t0 + 2 * HOUR, timedelta(days=1))
        rows = await conn.fetch(
            NATIVE.series[(Source.RAW, Aggregate.COUNT)].replace("$7::jsonb", "'{}'::jsonb"),
            [agent], ["edge"], days.start, days.end, days.width, ORIGIN,
        )  # fmt: skip
    finally:
        await conn.close()
    expected_days = {
        moment.replace(hour=0, minute=0, second=0, microsecond=0)
        # Every point: the last one falls on the next day when t0 is 23:00 UTC.
        for moment in (t0, t0 - timedelta(microseconds=1), t0 + HOUR)
    }
    assert {row["slot"].astimezone(UTC) for row in rows} == expected_days
    assert sum(row["value"] for row in rows) == 4


async def test_gaps_are_filled_as_asked(metrics: MetricsStore) -> None:
    agent, t0 = uuid.uuid4(), hour_ago(2)
    await metrics.record([MetricPoint(agent, "gap", t0 + m * MINUTE, float(m)) for m in (1, 4)])
    window = Window.of(t0, t0 + 6 * MINUTE, MINUTE)

    async def filled(how: Fill) -> list[float | None]:
        found = await metrics.series([agent], ["gap"], window, Aggregate.MAX, how=how)
        return [b.value for b in found[(agent, "gap")].buckets]

    assert await filled(Fill.NONE) == [1.0, 4.0]
    assert await filled(Fill.NULL) == [None, 1.0, None, None, 4.0, None]
    assert await filled(Fill.PREVIOUS) == [None, 1.0, 1.0, 1.0, 4.0, 4.0]
    assert await filled(Fill.LINEAR) == [None, 1.0, 2.0, 3.0, 4.0, None]


async def test_percentiles_read_raw_points(metrics: MetricsStore) -> None:
    agent, t0 = uuid.uuid4(), hour_ago(2)
    await metrics.record(points_for(agent, "lat", t0, [float(v) for v in range(1, 101)]))
    window = Window.of(t0, t0 + HOUR, HOUR)
    for aggregate, expected in (
        (Aggregate.P50, 50.5),
        (Aggregate.P95, 95.05),
        (Aggregate.P99, 99.01),
    ):
        source, values = await _values(metrics, agent, "lat", window, aggregate)
        assert source is Source.RAW
        assert values[0][1] == pytest.approx(expected)


async def test_retention_drops_old_partitions_and_nothing_else(
    schema_store: Callable[..., MetricsStore], metrics: MetricsStore
) -> None:
    now = datetime.now(UTC)
    agent = uuid.uuid4()
    keep_elsewhere = MetricPoint(agent, "old", now - timedelta(days=10), 7.0)
    await metrics.record([keep_elsewhere])
    async with schema_store(retention=timedelta(days=3), chunk_interval=timedelta(days=1)) as store:
        await store.migrate()
        old = [MetricPoint(agent, "old", now - timedelta(days=d), float(d)) for d in (10, 6)]
        recent = [MetricPoint(agent, "old", now - timedelta(hours=h), float(h)) for h in (1, 30)]
        await store.record(old + recent)
        report = await store.maintain(now)
        assert len(report.dropped) >= 2
        async with store.connection() as conn:
            left = await conn.fetch("SELECT time FROM metric_points WHERE agent_id = $1", agent)
            partitions = await conn.fetch("SELECT range_start, range_end FROM metric_partitions")
            rollups = await conn.fetchval(
                "SELECT count(*) FROM metric_rollup_1h WHERE agent_id = $1", agent
            )
        assert sorted(row["time"] for row in left) == sorted(p.time for p in recent)
        # Rollups have their own, longer retention.
        assert rollups == 4
        assert min(row["range_start"] for row in partitions) <= now - timedelta(days=3)
        assert max(row["range_end"] for row in partitions) >= now + 3 * timedelta(days=1)
    # The gateway's own schema lost nothing.
    window = Window.of(now - timedelta(days=11), now, timedelta(days=1))
    found = await metrics.series([agent], ["old"], window, Aggregate.SUM)
    assert [b.value for b in found[(agent, "old")].buckets] == [7.0]


async def test_summary_gives_the_latest_value_and_the_trend(metrics: MetricsStore) -> None:
    agent, now = uuid.uuid4(), datetime.now(UTC)
    await metrics.record(
        [
            MetricPoint(agent, "load", now - timedelta(minutes=100), 10.0),
            MetricPoint(agent, "load", now - timedelta(minutes=70), 12.0),
            MetricPoint(agent, "load", now - timedelta(minutes=20), 20.0),
            MetricPoint(agent, "load", now - timedelta(minutes=10), 18.0),
            MetricPoint(agent, "load", now - timedelta(minutes=500), 99.0),  # too old
        ]
    )
    (row,) = await metrics.summary([agent], ["load"], window=HOUR, now=now)
    assert (row.latest_value, row.latest_at) == (18.0, now - timedelta(minutes=10))
    assert (row.recent_avg, row.previous_avg, row.trend, row.points) == (19.0, 11.0, 8.0, 4)
