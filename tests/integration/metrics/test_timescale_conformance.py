"""The TimescaleDB path's very statements, run in a real TimescaleDB (2.23 in PGlite,
WebAssembly, through Node): the DDL builds what it claims, and both paths return
the same aggregates for the same points."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from stores.metrics import Aggregate, MetricPoint, MetricsStore, Source, Window
from stores.metrics.buckets import ORIGIN, choose_source
from stores.metrics.sql import TIMESCALE, SetupStep, timescale
from stores.metrics.sql import common as sql
from tests.integration.metrics.conftest import hour_ago, run_timescale

SETUP_PARAMS = {
    "chunk_interval": "1 day",
    "compress_after": "7 days",
    "retention": "30 days",
    "rollup_retention": "400 days",
}


def _statement(step: SetupStep) -> dict[str, Any]:
    if not step.params:
        return {"sql": step.sql}
    return {"sql": step.sql, "params": [SETUP_PARAMS[name] for name in step.params]}


def _setup() -> list[dict[str, Any]]:
    return [
        {"sql": "CREATE EXTENSION IF NOT EXISTS timescaledb"},
        *(_statement(step) for step in TIMESCALE.setup),
        # Setup is idempotent: a second gateway (or restart) runs it again.
        *(_statement(step) for step in TIMESCALE.setup),
        {"sql": sql.CREATE_STAGING},
    ]


def _load(points: list[MetricPoint]) -> list[dict[str, Any]]:
    return [
        {"sql": "BEGIN"},
        {
            "sql": "INSERT INTO metric_staging (time, agent_id, name, value)"
            " SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::text[], $4::float8[])",
            "params": [
                [p.time.isoformat() for p in points],
                [str(p.agent_id) for p in points],
                [p.name for p in points],
                [p.value for p in points],
            ],
        },
        {"sql": TIMESCALE.insert_from_staging, "params": []},
        {"sql": "COMMIT"},
    ]


def _ok(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors
    return results


def test_ddl_makes_a_hypertable_continuous_aggregates_compression_and_retention() -> None:
    checks = [
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        " ORDER BY 1",
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
        " ORDER BY 1",
        "SELECT coalesce(hypertable_name, '') AS target, proc_name,"
        " config->>'drop_after' AS drop_after, config->>'compress_after' AS compress_after"
        " FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%'"
        " AND proc_name <> 'policy_job_stat_history_retention' ORDER BY 2, 1",
        "SELECT segmentby_column_index, attname FROM timescaledb_information.compression_settings"
        " WHERE hypertable_name = 'metric_points' AND segmentby_column_index IS NOT NULL"
        " ORDER BY 1",
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_name = 'metric_points'",
    ]
    results = _ok(run_timescale([*_setup(), *({"sql": q, "params": []} for q in checks)]))
    hypertables, aggregates, jobs, segments, dimensions = (r["rows"] for r in results[-5:])
    assert {"hypertable_name": "metric_points", "compression_enabled": True} in hypertables
    assert aggregates == [
        {"view_name": "metric_rollup_1h", "materialized_only": False},
        {"view_name": "metric_rollup_1m", "materialized_only": False},
    ]
    by_kind = {(job["proc_name"], job["target"]): job for job in jobs}
    assert by_kind[("policy_compression", "metric_points")]["compress_after"] == "7 days"
    assert by_kind[("policy_retention", "metric_points")]["drop_after"] == "30 days"
    refreshes = [kind for kind in by_kind if kind[0] == "policy_refresh_continuous_aggregate"]
    retentions = [kind for kind in by_kind if kind[0] == "policy_retention"]
    assert len(refreshes) == 2 and len(retentions) == 3, jobs
    assert [row["attname"] for row in segments] == ["agent_id", "name"]
    assert dimensions == [{"time_interval": "1 day"}]


def _points(agents: list[uuid.UUID], t0: datetime) -> list[MetricPoint]:
    rng = random.Random(11)
    # Distinct times per series, so `last` has no ties to break.
    seen: set[tuple[uuid.UUID, str, datetime]] = set()
    points: list[MetricPoint] = []
    while len(points) < 400:
        point = MetricPoint(
            rng.choice(agents),
            rng.choice(["energy", "entropy"]),
            t0 + timedelta(seconds=rng.randrange(0, 3 * 3600)),
            round(rng.uniform(0, 100), 2),
        )
        if (point.agent_id, point.name, point.time) not in seen:
            seen.add((point.agent_id, point.name, point.time))
            points.append(point)
    return points


QUESTIONS = [
    (width, aggregate)
    for width in (timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=1))
    for aggregate in Aggregate
]


def _series_statement(
    window: Window, aggregate: Aggregate, agents: list[uuid.UUID]
) -> dict[str, Any]:
    source = choose_source(window.width, aggregate, labelled=False)
    params: list[Any] = [
        [str(a) for a in agents],
        ["energy", "entropy"],
        window.start.isoformat(),
        window.end.isoformat(),
        f"{int(window.width.total_seconds())} seconds",
        ORIGIN.isoformat(),
    ]
    if source is Source.RAW:
        params.append({})
    return {"sql": TIMESCALE.series[(source, aggregate)], "params": params}


async def test_both_paths_return_the_same_aggregates(metrics: MetricsStore) -> None:
    agents = sorted(uuid.uuid4() for _ in range(2))
    t0 = hour_ago(4)
    points = _points(agents, t0)
    shuffled = points[:]
    random.Random(3).shuffle(shuffled)
    # Native: in three out-of-order batches, one of them sent twice.
    for start in range(0, 400, 150):
        await metrics.record(shuffled[start : start + 150])
    assert (await metrics.record(shuffled[:150])).inserted == 0

    windows = [(Window.of(t0, t0 + 3 * timedelta(hours=1), w), a) for w, a in QUESTIONS]
    queries = [_series_statement(window, aggregate, agents) for window, aggregate in windows]
    statements = [
        *_setup(),
        *_load(shuffled[:200]),
        *_load(shuffled[150:]),  # overlaps the first load: duplicates are skipped
        *queries,  # real-time aggregation: nothing materialised yet
        *({"sql": statement} for statement in timescale.REFRESH_ROLLUPS),
        *queries,  # from the materialised continuous aggregates
    ]
    results = _ok(run_timescale(statements))
    setup_count = len(_setup())
    inserted = [results[setup_count + 2], results[setup_count + 6]]
    assert [r["rows"][0]["inserted"] for r in inserted] == [200, 200]
    live = results[setup_count + 8 : setup_count + 8 + len(queries)]
    materialised = results[-len(queries) :]

    for (window, aggregate), before, after in zip(windows, live, materialised, strict=True):
        native = await metrics.series(agents, ["energy", "entropy"], window, aggregate)
        expected = {
            (str(agent), name, b.time): b.value
            for (agent, name), series in native.items()
            for b in series.buckets
        }
        assert expected, (window.width, aggregate)
        for rows in (before["rows"], after["rows"]):
            got = {
                (row["agent_id"], row["name"], datetime.fromisoformat(row["slot"])): row["value"]
                for row in rows
            }
            assert got.keys() == expected.keys(), (window.width, aggregate)
            for key, value in expected.items():
                assert float(got[key]) == pytest.approx(value, rel=1e-9), (
                    window.width, aggregate, key,
                )  # fmt: skip
