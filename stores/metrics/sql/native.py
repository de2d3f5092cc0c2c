"""Plain PostgreSQL (no TimescaleDB): every statement of the native path.

Raw points live in a table range-partitioned by time; the store creates
partitions ahead and drops whole partitions past the retention period. Rollups
at 1 minute and 1 hour are ordinary tables kept current by the insert itself: one
statement inserts the points and folds exactly the rows it inserted (duplicates
are not returned by RETURNING) into the rollups with `ON CONFLICT DO UPDATE`,
whose row locks serialise concurrent gateways on the same bucket. Re-sending a
batch therefore changes nothing, and late points merge into their old buckets.
"""

from __future__ import annotations

from stores.metrics.sql.common import Dialect, SetupStep

_ORIGIN = "'2000-01-03 00:00:00+00'::timestamptz"

SETUP = (
    SetupStep(
        """
        CREATE TABLE IF NOT EXISTS metric_points (
            time     timestamptz      NOT NULL,
            agent_id uuid             NOT NULL,
            name     text             NOT NULL,
            value    double precision NOT NULL,
            labels   jsonb            NOT NULL DEFAULT '{}'
        ) PARTITION BY RANGE (time)
        """
    ),
    # The identity of a point: sending it again is a no-op. Time first, so inserts
    # append to the index (twice the COPY rate of agent first); raw reads are for a
    # time window anyway, the long ones go to the rollups.
    SetupStep(
        "CREATE UNIQUE INDEX IF NOT EXISTS metric_points_key"
        " ON metric_points (time, agent_id, name, labels)"
    ),
    SetupStep(
        """
        CREATE TABLE IF NOT EXISTS metric_partitions (
            name        text PRIMARY KEY,
            range_start timestamptz NOT NULL,
            range_end   timestamptz NOT NULL,
            CHECK (range_start < range_end)
        )
        """
    ),
    *(
        SetupStep(
            f"""
            CREATE TABLE IF NOT EXISTS {table} (
                bucket     timestamptz      NOT NULL,
                agent_id   uuid             NOT NULL,
                name       text             NOT NULL,
                count      bigint           NOT NULL,
                sum        double precision NOT NULL,
                min        double precision NOT NULL,
                max        double precision NOT NULL,
                last_time  timestamptz      NOT NULL,
                last_value double precision NOT NULL,
                PRIMARY KEY (agent_id, name, bucket)
            )
            """
        )
        for table in ("metric_rollup_1m", "metric_rollup_1h")
    ),
)


# Folding rollup rows of new points into stored ones: counts and sums add up, extremes
# and the last value (ties on time to the larger value) merge.
_MERGE = """ON CONFLICT (agent_id, name, bucket) DO UPDATE SET
            count = r.count + EXCLUDED.count,
            sum = r.sum + EXCLUDED.sum,
            min = LEAST(r.min, EXCLUDED.min),
            max = GREATEST(r.max, EXCLUDED.max),
            last_value = CASE
                WHEN (EXCLUDED.last_time, EXCLUDED.last_value) > (r.last_time, r.last_value)
                THEN EXCLUDED.last_value ELSE r.last_value END,
            last_time = GREATEST(r.last_time, EXCLUDED.last_time)"""


def _fold(cte: str, table: str, width: str, source: str) -> str:
    return f"""
    {cte} AS (
        INSERT INTO {table} AS r
            (bucket, agent_id, name, count, sum, min, max, last_time, last_value)
        SELECT date_bin(INTERVAL '{width}', time, {_ORIGIN}), agent_id, name,
               count(*), sum(value), min(value), max(value), max(time),
               (array_agg(value ORDER BY time DESC, value DESC))[1]
        FROM {source}
        GROUP BY 1, agent_id, name
        {_MERGE}
        RETURNING 1
    )"""


INSERT_FROM_STAGING = f"""
WITH inserted AS (
    INSERT INTO metric_points (time, agent_id, name, value, labels)
    SELECT time, agent_id, name, value, labels FROM metric_staging
    ON CONFLICT DO NOTHING
    RETURNING time, agent_id, name, value
),{_fold("minute", "metric_rollup_1m", "1 minute", "inserted")},{
    _fold("hour", "metric_rollup_1h", "1 hour", "inserted")
}
SELECT count(*) AS inserted FROM inserted
"""


ROLLUP_TABLES = ("metric_rollup_1m", "metric_rollup_1h")
# Rollup rows computed by the caller for points a bulk COPY has just inserted (all new)
# go straight into the rollup tables with COPY. When a bucket already has a row (older
# points, or a gateway recording into the same minute) that COPY fails, and they land
# here to be folded in with the same merge as an insert's.
CREATE_ROLLUP_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS metric_rollup_staging
    (LIKE metric_rollup_1m INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
MERGE_ROLLUP_STAGING = {
    table: f"""
    INSERT INTO {table} AS r
        (bucket, agent_id, name, count, sum, min, max, last_time, last_value)
    SELECT bucket, agent_id, name, count, sum, min, max, last_time, last_value
    FROM metric_rollup_staging
    ORDER BY agent_id, name, bucket
    {_MERGE}
    """
    for table in ROLLUP_TABLES
}
CLEAR_ROLLUP_STAGING = "TRUNCATE metric_rollup_staging"


def _refresh(table: str, source: str) -> str:
    return f"""
    INSERT INTO {table} AS r
        (bucket, agent_id, name, count, sum, min, max, last_time, last_value)
    {source}
    ON CONFLICT (agent_id, name, bucket) DO UPDATE SET
        count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
        last_time = EXCLUDED.last_time, last_value = EXCLUDED.last_value
    """


# Rollups recomputed for whole hours [$1, $2) and agents in [$3, $4 or beyond), after a bulk
# COPY that bypassed the folding insert: minutes from raw points, hours from minutes.
# The SHARE lock on the points comes first, in its own statement: inserts (and their
# folds) wait, and started ones finish first, so the recomputation sees every point;
# refreshes of other agent ranges share the lock and run side by side.
LOCK_POINTS = "LOCK TABLE metric_points IN SHARE MODE"
REFRESH_ROLLUPS = (
    _refresh(
        "metric_rollup_1m",
        f"""SELECT date_bin(INTERVAL '1 minute', time, {_ORIGIN}), agent_id, name,
               count(*), sum(value), min(value), max(value), max(time),
               (array_agg(value ORDER BY time DESC, value DESC))[1]
        FROM metric_points
        WHERE time >= $1::timestamptz AND time < $2::timestamptz
          AND agent_id >= $3::uuid AND ($4::uuid IS NULL OR agent_id < $4::uuid)
        GROUP BY 1, agent_id, name
        ORDER BY agent_id, name, 1""",
    ),
    _refresh(
        "metric_rollup_1h",
        f"""SELECT date_bin(INTERVAL '1 hour', bucket, {_ORIGIN}), agent_id, name,
               sum(count), sum(sum), min(min), max(max), max(last_time),
               (array_agg(last_value ORDER BY last_time DESC, last_value DESC))[1]
        FROM metric_rollup_1m
        WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
          AND agent_id >= $3::uuid AND ($4::uuid IS NULL OR agent_id < $4::uuid)
        GROUP BY 1, agent_id, name
        ORDER BY agent_id, name, 1""",
    ),
)

# Partitions. Names and bounds are made by `stores.metrics.partitions` from the
# chunk interval, never from input; DDL cannot take parameters.
CREATE_PARTITION = (
    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF metric_points"
    " FOR VALUES FROM ('{start}') TO ('{end}')"
)
DROP_PARTITION = "DROP TABLE IF EXISTS {name}"
KNOWN_PARTITIONS = "SELECT name, range_start, range_end FROM metric_partitions"
OVERLAPPING_PARTITION = """
SELECT name FROM metric_partitions
WHERE range_start < $2::timestamptz AND range_end > $1::timestamptz
LIMIT 1
"""
REGISTER_PARTITION = """
INSERT INTO metric_partitions (name, range_start, range_end) VALUES ($1, $2, $3)
ON CONFLICT (name) DO NOTHING
"""
EXPIRED_PARTITIONS = """
SELECT name FROM metric_partitions WHERE range_end <= $1::timestamptz ORDER BY range_start
"""
FORGET_PARTITION = "DELETE FROM metric_partitions WHERE name = $1"
EXPIRE_ROLLUPS = (
    "DELETE FROM metric_rollup_1m WHERE bucket < $1::timestamptz",
    "DELETE FROM metric_rollup_1h WHERE bucket < $1::timestamptz",
)

NATIVE = Dialect(
    backend="native",
    setup=SETUP,
    insert_from_staging=INSERT_FROM_STAGING,
    bucket_function="date_bin",
)
