"""`polygraph seed --metrics-days`: realistic series through COPY, rollups brought up to date."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from gateway.seed import METRIC_SERIES, seed_metrics
from stores import PostgresStore
from stores.metrics import Aggregate, MetricsStore, Source, Window
from stores.metrics.buckets import ORIGIN
from stores.metrics.sql import NATIVE
from stores.postgres import metric_names


async def test_seed_writes_series_and_rollups_and_is_idempotent(
    postgres: PostgresStore, metrics: MetricsStore
) -> None:
    await postgres.migrate()
    agents = [uuid.uuid4(), uuid.uuid4()]
    stages: list[str] = []
    report = await seed_metrics(
        postgres, metrics, days=0.1, agent_ids=agents, progress=lambda s, d, t: stages.append(s)
    )
    assert report.points == report.inserted == 2 * len(METRIC_SERIES) * 144
    assert {"metric points", "metric rollups"} <= set(stages)
    registered = await metric_names.by_names(postgres, [name for name, *_ in METRIC_SERIES])
    assert registered["tokens"].unit == "tokens"

    again = await seed_metrics(postgres, metrics, days=0.1, agent_ids=agents)
    assert again.inserted == 0

    end = datetime.now(UTC)
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
