"""`polygraph seed --metrics-days`: realistic series through COPY, rollups brought up to date."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from seeding.platform import METRIC_SERIES, generate_metric_rows, seed_metrics
from stores import PostgresStore
from stores.metrics import Aggregate, MetricPoint, MetricsStore, Source, Window
from stores.metrics.buckets import ORIGIN
from stores.metrics.sql import NATIVE
from stores.postgres import metric_names


async def test_seed_writes_series_and_rollups_and_is_idempotent(
    postgres: PostgresStore, metrics: MetricsStore
) -> None:
    await postgres.migrate()
    agents = [uuid.uuid4(), uuid.uuid4()]
    stages: list[str] = []
    # One end for both runs: a minute turning between them would shift the second.
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    report = await seed_metrics(
        postgres,
        metrics,
        days=0.1,
        agent_ids=agents,
        progress=lambda s, d, t: stages.append(s),
        end=end,
    )
    assert report.points == report.inserted == 2 * len(METRIC_SERIES) * 144
    assert {"metric points", "metric rollups"} <= set(stages)
    registered = await metric_names.by_names(postgres, [name for name, *_ in METRIC_SERIES])
    assert registered["tokens"].unit == "tokens"

    again = await seed_metrics(postgres, metrics, days=0.1, agent_ids=agents, end=end)
    assert again.inserted == 0

    window = Window.of(end - timedelta(hours=3), end, timedelta(hours=1))
    names = [name for name, *_ in METRIC_SERIES]
    rolled = await metrics.series(agents, names, window, Aggregate.COUNT)
    assert {s.source for s in rolled.values()} == {Source.HOUR}
    async with metrics.connection() as conn:
        raw = await conn.fetch(
            NATIVE.series[(Source.RAW, Aggregate.COUNT)],
            agents, names, window.start, window.end, window.width, ORIGIN, {},
        )  # fmt: skip
    from_raw = {(r["agent_id"], r["name"], r["slot"]): r["value"] for r in raw}
    from_rollups = {(a, n, b.time): b.value for (a, n), s in rolled.items() for b in s.buckets}
    assert from_rollups == from_raw
    assert sum(from_raw.values()) == report.points
    energy = await metrics.series(agents, ["energy"], window, Aggregate.MAX)
    assert all(0 <= (b.value or 0) < 3 for s in energy.values() for b in s.buckets)


async def _rollups_match_raw(metrics: MetricsStore, agents: list[uuid.UUID]) -> int:
    """Every rollup row of these agents against the same aggregation of the raw points;
    returns how many rows were compared."""
    compared = 0
    async with metrics.connection() as conn:
        for table, width in (("metric_rollup_1m", "1 minute"), ("metric_rollup_1h", "1 hour")):
            raw = await conn.fetch(
                f"""SELECT date_bin(INTERVAL '{width}', time, $2) AS bucket, agent_id, name,
                           count(*) AS count, sum(value) AS sum, min(value) AS min,
                           max(value) AS max, max(time) AS last_time,
                           (array_agg(value ORDER BY time DESC, value DESC))[1] AS last_value
                    FROM metric_points WHERE agent_id = ANY($1) GROUP BY 1, 2, 3""",
                agents, ORIGIN,
            )  # fmt: skip
            stored = await conn.fetch(f"SELECT * FROM {table} WHERE agent_id = ANY($1)", agents)
            expected = {(r["bucket"], r["agent_id"], r["name"]): r for r in raw}
            assert len(stored) == len(expected), table
            for row in stored:
                want = expected[(row["bucket"], row["agent_id"], row["name"])]
                assert (row["count"], row["min"], row["max"], row["last_time"]) == (
                    want["count"], want["min"], want["max"], want["last_time"]
                )  # fmt: skip
                assert row["last_value"] == want["last_value"]
                assert math.isclose(row["sum"], want["sum"], rel_tol=1e-9, abs_tol=1e-9)
                compared += 1
    return compared


async def test_rollups_written_with_the_points_equal_raw_aggregation(
    postgres: PostgresStore, metrics: MetricsStore
) -> None:
    """The seeder's own rollups (COPY on a fresh range), a batch cut mid-hour and
    mid-minute (its buckets merged into the previous batch's), a late point through the
    folding insert, and a rerun over a wider range that meets the stored points."""
    await postgres.migrate()
    agents = [uuid.uuid4(), uuid.uuid4()]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    end = now - timedelta(hours=1)
    start = end - timedelta(hours=3)
    rng = np.random.default_rng(7)
    # 7-second steps do not divide a minute; 500-point batches cut anywhere.
    for made in generate_metric_rows(rng, agents, start, end, timedelta(seconds=7), batch=500):
        result = await metrics.copy_points(made.points, made.rollups)
        assert result.inserted == made.points.copy.rows
    assert await _rollups_match_raw(metrics, agents) > 0

    late = MetricPoint(agents[0], "energy", start + timedelta(minutes=30, seconds=1), 0.5)
    assert (await metrics.record([late])).inserted == 1
    assert await _rollups_match_raw(metrics, agents) > 0

    wider = await seed_metrics(postgres, metrics, days=5 / 24, agent_ids=agents, end=now)
    assert 0 < wider.inserted < wider.points
    assert await _rollups_match_raw(metrics, agents) > 0
    again = await seed_metrics(postgres, metrics, days=5 / 24, agent_ids=agents, end=now)
    assert again.inserted == 0
    assert await _rollups_match_raw(metrics, agents) > 0
