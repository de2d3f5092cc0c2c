"""Reads shared by both backends, and the statement set each backend provides.

Read statements differ only in the bucketing function (`time_bucket` with
TimescaleDB, `date_bin` without), so they are rendered here from one text. The
format fields are filled from the constants below only, never from input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stores.metrics.records import PERCENTILES, Aggregate, Source

# Staging for COPY: COPY cannot say ON CONFLICT, so rows land here first. It is a
# temporary table, made once per pooled connection and emptied at every commit.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS metric_staging (
    time     timestamptz NOT NULL,
    agent_id uuid        NOT NULL,
    name     text        NOT NULL,
    value    double precision NOT NULL,
    labels   jsonb       NOT NULL DEFAULT '{}'
) ON COMMIT DELETE ROWS
"""
STAGING_COLUMNS = ("time", "agent_id", "name", "value", "labels")

SCHEMA_STATE = """
CREATE TABLE IF NOT EXISTS metrics_schema (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    backend    text NOT NULL,
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
RECORDED_BACKEND = "SELECT backend, version FROM metrics_schema"
RECORD_BACKEND = """
INSERT INTO metrics_schema (backend, version) VALUES ($1, $2)
ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, applied_at = now()
"""
DETECT = """
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS installed,
       (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb')
           AS available,
       current_setting('server_version') AS server_version
"""

_RAW_EXPRESSIONS = {
    Aggregate.AVG: "avg(value)",
    Aggregate.MIN: "min(value)",
    Aggregate.MAX: "max(value)",
    Aggregate.SUM: "sum(value)",
    Aggregate.COUNT: "count(*)::double precision",
    # Ties on time go to the larger value, so both backends agree.
    Aggregate.LAST: "(array_agg(value ORDER BY time DESC, value DESC))[1]",
    Aggregate.P50: "percentile_cont(0.5) WITHIN GROUP (ORDER BY value)",
    Aggregate.P95: "percentile_cont(0.95) WITHIN GROUP (ORDER BY value)",
    Aggregate.P99: "percentile_cont(0.99) WITHIN GROUP (ORDER BY value)",
}
# Rollup rows merge exactly into wider buckets; percentiles do not, so they read raw.
_ROLLUP_EXPRESSIONS = {
    Aggregate.AVG: "sum(sum) / sum(count)::double precision",
    Aggregate.MIN: "min(min)",
    Aggregate.MAX: "max(max)",
    Aggregate.SUM: "sum(sum)",
    Aggregate.COUNT: "sum(count)::double precision",
    Aggregate.LAST: "(array_agg(last_value ORDER BY last_time DESC, last_value DESC))[1]",
}
ROLLUP_TABLES = {Source.MINUTE: "metric_rollup_1m", Source.HOUR: "metric_rollup_1h"}

# $1 agent ids, $2 names, $3 from, $4 to, $5 bucket width, $6 origin, $7 labels (raw only).
_RAW_SERIES = """
SELECT agent_id, name, {bucket}($5::interval, time, $6::timestamptz) AS slot, {expr} AS value
FROM metric_points
WHERE agent_id = ANY($1::uuid[]) AND name = ANY($2::text[])
  AND time >= $3::timestamptz AND time < $4::timestamptz AND labels @> $7::jsonb
GROUP BY agent_id, name, slot
ORDER BY agent_id, name, slot
"""
_ROLLUP_SERIES = """
SELECT agent_id, name, {bucket}($5::interval, bucket, $6::timestamptz) AS slot, {expr} AS value
FROM {table}
WHERE agent_id = ANY($1::uuid[]) AND name = ANY($2::text[])
  AND bucket >= $3::timestamptz AND bucket < $4::timestamptz
GROUP BY agent_id, name, slot
ORDER BY agent_id, name, slot
"""

# $1 agent ids or NULL, $2 names or NULL, $3 now, $4 trend window, $5 row limit.
SUMMARY = """
SELECT agent_id, name,
       (array_agg(value ORDER BY time DESC, value DESC))[1] AS latest_value,
       max(time) AS latest_at,
       avg(value) FILTER (WHERE time >= $3::timestamptz - $4::interval) AS recent_avg,
       avg(value) FILTER (WHERE time < $3::timestamptz - $4::interval) AS previous_avg,
       count(*) AS points
FROM metric_points
WHERE ($1::uuid[] IS NULL OR agent_id = ANY($1::uuid[]))
  AND ($2::text[] IS NULL OR name = ANY($2::text[]))
  AND time >= $3::timestamptz - 2 * $4::interval
GROUP BY agent_id, name
ORDER BY agent_id, name
LIMIT $5
"""


@dataclass(frozen=True)
class SetupStep:
    """A setup statement and the names of the options bound to $1, $2, ..."""

    sql: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dialect:
    """One backend's statements; `setup` is idempotent and runs in order."""

    backend: str
    setup: tuple[SetupStep, ...]
    insert_from_staging: str
    bucket_function: str
    series: dict[tuple[Source, Aggregate], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.series.update(render_series(self.bucket_function))


def render_series(bucket_function: str) -> dict[tuple[Source, Aggregate], str]:
    statements: dict[tuple[Source, Aggregate], str] = {}
    for aggregate, expr in _RAW_EXPRESSIONS.items():
        statements[(Source.RAW, aggregate)] = _RAW_SERIES.format(bucket=bucket_function, expr=expr)
    for source, table in ROLLUP_TABLES.items():
        for aggregate, expr in _ROLLUP_EXPRESSIONS.items():
            assert aggregate not in PERCENTILES
            statements[(source, aggregate)] = _ROLLUP_SERIES.format(
                bucket=bucket_function, expr=expr, table=table
            )
    return statements
