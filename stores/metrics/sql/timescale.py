"""TimescaleDB: every statement of the hypertable path.

Raw points are a hypertable (chunk interval from settings), compressed after an
age with one segment per agent and metric, dropped by a retention policy. The 1
minute continuous aggregate reads the hypertable; the 1 hour one reads the 1
minute one (hierarchical). Both answer in real time (`materialized_only = false`),
so a point is visible in the rollups before the refresh policy materialises it.

Setup parameters, by name: chunk_interval, compress_after, retention,
rollup_retention. The conformance test runs these very statements in TimescaleDB.
"""

from __future__ import annotations

from stores.metrics.sql.common import Dialect, SetupStep

_HYPERTABLE_HAS_COMPRESSION = """
SELECT 1 FROM timescaledb_information.hypertables
WHERE hypertable_schema = current_schema() AND hypertable_name = 'metric_points'
  AND compression_enabled
"""

SETUP = (
    SetupStep(
        """
        CREATE TABLE IF NOT EXISTS metric_points (
            time     timestamptz      NOT NULL,
            agent_id uuid             NOT NULL,
            name     text             NOT NULL,
            value    double precision NOT NULL,
            labels   jsonb            NOT NULL DEFAULT '{}'
        )
        """
    ),
    SetupStep(
        "SELECT create_hypertable('metric_points', by_range('time', $1::interval),"
        " if_not_exists => true)",
        ("chunk_interval",),
    ),
    # For a changed setting: applies to chunks made from now on.
    SetupStep("SELECT set_chunk_time_interval('metric_points', $1::interval)", ("chunk_interval",)),
    SetupStep(
        "CREATE UNIQUE INDEX IF NOT EXISTS metric_points_key"
        " ON metric_points (agent_id, name, time, labels)"
    ),
    # Changing compression settings is refused once chunks are compressed: set them once.
    SetupStep(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS ({_HYPERTABLE_HAS_COMPRESSION}) THEN
                ALTER TABLE metric_points SET (
                    timescaledb.compress,
                    timescaledb.compress_segmentby = 'agent_id, name',
                    timescaledb.compress_orderby = 'time DESC'
                );
            END IF;
        END $$
        """
    ),
    SetupStep("SELECT remove_compression_policy('metric_points', if_exists => true)"),
    SetupStep("SELECT add_compression_policy('metric_points', $1::interval)", ("compress_after",)),
    SetupStep("SELECT remove_retention_policy('metric_points', if_exists => true)"),
    SetupStep("SELECT add_retention_policy('metric_points', $1::interval)", ("retention",)),
    SetupStep(
        """
        CREATE MATERIALIZED VIEW IF NOT EXISTS metric_rollup_1m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, agent_id, name,
               count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
               max(time) AS last_time, last(value, time) AS last_value
        FROM metric_points
        GROUP BY 1, agent_id, name
        WITH NO DATA
        """
    ),
    SetupStep(
        """
        CREATE MATERIALIZED VIEW IF NOT EXISTS metric_rollup_1h
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, agent_id, name,
               sum(count) AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
               max(last_time) AS last_time, last(last_value, last_time) AS last_value
        FROM metric_rollup_1m
        GROUP BY 1, agent_id, name
        WITH NO DATA
        """
    ),
    # Late points are accepted for the whole retention period, so refreshes reach that far.
    *(
        step
        for view, every in (("metric_rollup_1m", "1 minute"), ("metric_rollup_1h", "1 hour"))
        for step in (
            SetupStep(f"SELECT remove_continuous_aggregate_policy('{view}', if_exists => true)"),
            SetupStep(
                f"SELECT add_continuous_aggregate_policy('{view}',"
                f" start_offset => $1::interval, end_offset => INTERVAL '{every}',"
                f" schedule_interval => INTERVAL '{every}')",
                ("retention",),
            ),
            SetupStep(f"SELECT remove_retention_policy('{view}', if_exists => true)"),
            SetupStep(
                f"SELECT add_retention_policy('{view}', $1::interval)", ("rollup_retention",)
            ),
        )
    ),
)

INSERT_FROM_STAGING = """
WITH inserted AS (
    INSERT INTO metric_points (time, agent_id, name, value, labels)
    SELECT time, agent_id, name, value, labels FROM metric_staging
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) AS inserted FROM inserted
"""

# Policies run in TimescaleDB's background workers; this makes rollups current now.
REFRESH_ROLLUPS = (
    "CALL refresh_continuous_aggregate('metric_rollup_1m', NULL, NULL)",
    "CALL refresh_continuous_aggregate('metric_rollup_1h', NULL, NULL)",
)

TIMESCALE = Dialect(
    backend="timescaledb",
    setup=SETUP,
    insert_from_staging=INSERT_FROM_STAGING,
    bucket_function="time_bucket",
)
