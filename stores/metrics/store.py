"""The metrics store: its own asyncpg pool, on TimescaleDB when the server has it.

It has a pool (and DSN) of its own rather than borrowing PostgreSQL's: metrics
may live on another server (a TimescaleDB service next to a managed PostgreSQL
without it), bulk COPY never takes connections from request traffic, and its
round trips are counted apart as `metrics`. By default the DSN is PostgreSQL's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from stores import roundtrips
from stores._pg_pool import ObservedConnection, PgPool
from stores.errors import StoreRefused, StoreUnavailable
from stores.health import ProbeResult, ms_since
from stores.metrics import partitions
from stores.metrics.buckets import (
    HOUR,
    ORIGIN,
    Window,
    align_down,
    align_up,
    choose_source,
    fill,
)
from stores.metrics.options import MetricsOptions
from stores.metrics.records import (
    Aggregate,
    Backend,
    CopyData,
    EncodedPoints,
    Fill,
    MaintenanceReport,
    MetricPoint,
    MetricSummary,
    RecordResult,
    Rollups,
    Series,
    SeriesRows,
    Source,
)
from stores.metrics.sql import NATIVE, TIMESCALE, native, timescale
from stores.metrics.sql import common as sql
from stores.postgres.options import PgConnection

logger = logging.getLogger(__name__)

NAME = "metrics"
# Bump when a backend's setup statements change; setup is idempotent, so it reruns.
SCHEMA_VERSION = 1
# Any constant works as long as nothing else in the database takes the same lock.
_SETUP_LOCK = 0x706F6C79_6D657472  # "polymetr"

# (time, agent_id, name, value, labels), the column order of COPY.
PointRow = tuple[datetime, UUID, str, float, dict[str, Any]]
UnlabelledRow = tuple[datetime, UUID, str, float]
_DIALECTS = {Backend.NATIVE: NATIVE, Backend.TIMESCALEDB: TIMESCALE}
# Encoded COPY data goes to the server in pieces of this size.
_COPY_CHUNK = 1 << 20


class MetricsStore:
    """Points in, aggregated series out; see `stores.metrics.sql` for what runs where."""

    __slots__ = (
        "_backend",
        "_extension_version",
        "_maintenance",
        "_options",
        "_partitions",
        "_pool",
        "options",
    )

    def __init__(self, options: MetricsOptions) -> None:
        self.options = options
        self._options = options
        self._pool = PgPool(
            NAME,
            self._connect,
            _init_connection,
            min_size=options.min_size,
            max_size=options.max_size,
            acquire_timeout=options.acquire_timeout,
            close_timeout=options.close_timeout,
        )
        self._backend: Backend | None = None
        self._extension_version: str | None = None
        self._partitions: dict[str, partitions.Partition] = {}
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def backend(self) -> Backend | None:
        """The path in use; None until `migrate()` ran or the recorded one was read."""
        return self._backend

    async def open(self) -> None:
        await self._pool.open()

    async def aclose(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await self._pool.aclose()

    async def __aenter__(self) -> MetricsStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def connection(self) -> AbstractAsyncContextManager[PgConnection]:
        """A pooled connection; an unreachable server surfaces as `StoreUnavailable`."""
        return self._pool.connection()

    # Schema and maintenance

    async def migrate(self) -> list[str]:
        """Pick the backend, create or update its tables; returns what was applied."""
        async with self.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _SETUP_LOCK)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._options.schema}")
                # The schema may be new: have the connection see it in its search path.
                await conn.execute("SELECT set_config('search_path', $1, false)", self._path)
                await conn.execute(sql.SCHEMA_STATE)
                recorded = await conn.fetchrow(sql.RECORDED_BACKEND)
                backend = await self._choose(conn, recorded["backend"] if recorded else None)
                dialect = _DIALECTS[backend]
                up_to_date = recorded is not None and recorded["version"] == SCHEMA_VERSION
                if not up_to_date:
                    async with conn.transaction():
                        for step in dialect.setup:
                            await conn.execute(step.sql, *self._setup_params(step.params))
                        await conn.execute(sql.RECORD_BACKEND, backend.value, SCHEMA_VERSION)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _SETUP_LOCK)
        self._backend = backend
        logger.info(
            "metrics: %s path in schema %s%s",
            backend.value,
            self._options.schema,
            f" (timescaledb {self._extension_version})" if self._extension_version else "",
        )
        await self.maintain()
        return [] if up_to_date else [f"{backend.value} v{SCHEMA_VERSION}"]

    async def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        """Native path: partitions ahead, expired ones dropped, old rollup rows deleted.
        TimescaleDB runs its own policies for all of this."""
        if await self._ready() is not Backend.NATIVE:
            return MaintenanceReport()
        now = now or datetime.now(UTC)
        options = self._options
        horizon = now - options.retention
        wanted = partitions.partitions_covering(
            horizon, now + options.partitions_ahead * options.chunk_interval, options.chunk_interval
        )
        async with self.connection() as conn:
            created = await partitions.ensure(conn, wanted)
            dropped = await partitions.drop_expired(conn, horizon)
            deleted = 0
            for statement in native.EXPIRE_ROLLUPS:
                status = await conn.execute(statement, now - options.rollup_retention)
                deleted += int(status.split()[-1])
            self._partitions = {p.name: p for p in await partitions.known(conn)}
        return MaintenanceReport(tuple(created), tuple(dropped), deleted)

    def start_maintenance(self) -> None:
        """Run `maintain()` every `maintenance_interval` seconds until closed."""
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(
                self._maintain_forever(), name="polygraph-metrics-maintenance"
            )

    async def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with self.connection() as conn:
                row = await conn.fetchrow(sql.DETECT)
            backend = await self._ready()
        except (StoreUnavailable, StoreRefused) as exc:
            reason = exc.reason if isinstance(exc, StoreUnavailable) else str(exc)
            return ProbeResult(NAME, False, ms_since(started), error=reason)
        assert row is not None
        details = {"backend": backend.value}
        if row["installed"]:
            details["timescaledb"] = row["installed"]
        return ProbeResult(NAME, True, ms_since(started), row["server_version"], details)

    # Writes

    async def record(self, points: Sequence[MetricPoint]) -> RecordResult:
        """Insert points (already validated); duplicates of stored points are skipped."""
        if not points:
            return RecordResult(0, 0)
        dialect = _DIALECTS[await self._ready()]
        if dialect is NATIVE:
            await self._ensure_partitions(min(p.time for p in points), max(p.time for p in points))
        rows = [(p.time, p.agent_id, p.name, p.value, p.labels) for p in points]
        async with self.connection() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "metric_staging", records=rows, columns=sql.STAGING_COLUMNS
            )
            inserted: int = await conn.fetchval(dialect.insert_from_staging)
        return RecordResult(len(rows), inserted)

    async def copy_points(
        self,
        rows: Sequence[PointRow | UnlabelledRow] | EncodedPoints,
        rollups: Rollups | None = None,
    ) -> RecordResult:
        """Bulk load: COPY straight into the points table, about twice as fast as
        `record()`. A batch holding a point that is already stored falls back to
        `record()`'s path, which folds what it inserts into the rollups.
        On the fast path the rollups are folded only when the caller passes `rollups`
        (native path): exactly these rows' 1-minute and 1-hour rollups, written in the
        same transaction as the points, so rollups equal raw aggregation at every commit.
        Otherwise (or on TimescaleDB) call `refresh_rollups()` when done.
        Rows come as tuples (4-tuples without labels skip encoding them: the column
        default is `{}`) or already encoded, which spares the client most of its work."""
        if isinstance(rows, EncodedPoints):
            count, earliest, latest = rows.copy.rows, rows.earliest, rows.latest
        elif rows:
            count, earliest, latest = len(rows), min(r[0] for r in rows), max(r[0] for r in rows)
        else:
            return RecordResult(0, 0)
        backend = await self._ready()
        if backend is Backend.NATIVE:
            await self._ensure_partitions(earliest, latest)
        try:
            async with self.connection() as conn, conn.transaction():
                await _copy(conn, "metric_points", rows)
                if rollups is not None and backend is Backend.NATIVE:
                    await _copy_rollups(conn, rollups)
        except asyncpg.UniqueViolationError:
            async with self.connection() as conn, conn.transaction():
                await _copy(conn, "metric_staging", rows)
                inserted: int = await conn.fetchval(_DIALECTS[backend].insert_from_staging)
            return RecordResult(count, inserted)
        return RecordResult(count, count)

    async def refresh_rollups(self, start: datetime, end: datetime, *, workers: int = 2) -> None:
        """Recompute the rollups of `[start, end)` (widened to whole hours) from raw
        points, `workers` connections each taking a share of the agents."""
        backend = await self._ready()
        if backend is Backend.TIMESCALEDB:
            async with self.connection() as conn:
                # Refreshing a continuous aggregate cannot run inside a transaction.
                for statement in timescale.REFRESH_ROLLUPS:
                    await conn.execute(statement)
            return
        start, end = align_down(start, HOUR), align_up(end, HOUR)
        bounds: list[UUID | None] = [UUID(int=(2**128 * k) // workers) for k in range(workers)]

        async def refresh(low: UUID | None, high: UUID | None) -> None:
            async with self.connection() as conn, conn.transaction():
                await conn.execute(native.LOCK_POINTS)
                for statement in native.REFRESH_ROLLUPS:
                    await conn.execute(statement, start, end, low, high)

        bounds.append(None)
        await asyncio.gather(*(refresh(bounds[k], bounds[k + 1]) for k in range(workers)))

    # Reads

    async def series(
        self,
        agent_ids: Sequence[UUID],
        names: Sequence[str],
        window: Window,
        aggregate: Aggregate,
        *,
        how: Fill = Fill.NONE,
        labels: dict[str, Any] | None = None,
    ) -> dict[tuple[UUID, str], Series]:
        """One query for every agent and name; a series per pair, empty ones included."""
        read = await self.series_rows(agent_ids, names, window, aggregate, labels=labels)
        found = read.buckets()
        return {
            (agent_id, name): Series(
                agent_id, name, read.source, fill(window, found.get((agent_id, name), []), how)
            )
            for agent_id in agent_ids
            for name in names
        }

    async def series_rows(
        self,
        agent_ids: Sequence[UUID],
        names: Sequence[str],
        window: Window,
        aggregate: Aggregate,
        *,
        labels: dict[str, Any] | None = None,
    ) -> SeriesRows:
        """`series` as the query's rows, in one query: empty buckets left out."""
        dialect = _DIALECTS[await self._ready()]
        source = choose_source(window.width, aggregate, labelled=bool(labels))
        params: list[object] = [
            list(agent_ids),
            list(names),
            window.start,
            window.end,
            window.width,
            ORIGIN,
        ]
        if source is Source.RAW:
            params.append(labels or {})
        async with self.connection() as conn:
            rows = await conn.fetch(dialect.series[(source, aggregate)], *params)
        # Ordered by agent, name and slot (the column's collation is the database's, which
        # is deterministic): one run of rows per series.
        return SeriesRows(source, rows)

    async def summary(
        self,
        agent_ids: Sequence[UUID] | None,
        names: Sequence[str] | None,
        *,
        window: timedelta,
        now: datetime | None = None,
        limit: int = 1000,
    ) -> list[MetricSummary]:
        """Latest value per agent and metric, with the mean of the last `window` against
        the one before it; series silent for two windows are left out."""
        await self._ready()
        async with self.connection() as conn:
            rows = await conn.fetch(
                sql.SUMMARY,
                list(agent_ids) if agent_ids is not None else None,
                list(names) if names is not None else None,
                now or datetime.now(UTC),
                window,
                limit,
            )
        return [
            MetricSummary(
                agent_id=row["agent_id"],
                name=row["name"],
                latest_value=row["latest_value"],
                latest_at=row["latest_at"],
                recent_avg=row["recent_avg"],
                previous_avg=row["previous_avg"],
                points=row["points"],
            )
            for row in rows
        ]

    # Internals

    @property
    def _path(self) -> str:
        return f"{self._options.schema}, public"

    def _setup_params(self, names: Iterable[str]) -> list[object]:
        return [getattr(self._options, name) for name in names]

    async def _ready(self) -> Backend:
        if self._backend is None:
            async with self.connection() as conn:
                state = await conn.fetchval("SELECT to_regclass('metrics_schema')")
                row = await conn.fetchrow(sql.RECORDED_BACKEND) if state else None
            if row is None:
                raise StoreRefused(
                    f"the metrics schema {self._options.schema!r} is not set up;"
                    " run `polygraph migrate`"
                )
            self._backend = Backend(row["backend"])
        return self._backend

    async def _choose(self, conn: PgConnection, recorded: str | None) -> Backend:
        found = await conn.fetchrow(sql.DETECT)
        assert found is not None
        installed: str | None = found["installed"]
        wanted = self._options.backend
        if recorded is not None:
            if wanted != "auto" and wanted != recorded:
                raise StoreRefused(
                    f"schema {self._options.schema!r} holds {recorded} metrics; the setting asks"
                    f" for {wanted}: use another POLYGRAPH_METRICS_SCHEMA or backend `auto`"
                )
            self._extension_version = installed
            return Backend(recorded)
        if wanted == "native":
            return Backend.NATIVE
        if installed is None and found["available"] is not None:
            try:
                async with conn.transaction():
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                installed = await conn.fetchval(
                    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                )
            except asyncpg.PostgresError as exc:
                logger.warning("timescaledb is available but cannot be created: %s", exc)
        self._extension_version = installed
        if installed is not None:
            return Backend.TIMESCALEDB
        if wanted == "timescaledb":
            raise StoreRefused(
                "POLYGRAPH_METRICS_BACKEND=timescaledb, but the server has no timescaledb"
                " extension; install it or use `auto` or `native`"
            )
        return Backend.NATIVE

    async def _ensure_partitions(self, earliest: datetime, latest: datetime) -> None:
        wanted = partitions.partitions_covering(earliest, latest, self._options.chunk_interval)
        if all(p.name in self._partitions for p in wanted):
            return
        async with self.connection() as conn:
            await partitions.ensure(conn, (p for p in wanted if p.name not in self._partitions))
            self._partitions = {p.name: p for p in await partitions.known(conn)}

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.maintenance_interval)
            try:
                report = await self.maintain()
            except Exception as exc:
                logger.warning("metrics maintenance failed, retrying later: %s", exc)
            else:
                if report.created or report.dropped:
                    logger.info(
                        "metrics partitions: created %s, dropped %s",
                        ", ".join(report.created) or "none",
                        ", ".join(report.dropped) or "none",
                    )

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._options.dsn,
            connection_class=ObservedConnection,
            timeout=self._options.acquire_timeout,
            command_timeout=self._options.statement_timeout,
            server_settings={
                "application_name": "polygraph-metrics",
                "search_path": self._path,
                "timezone": "UTC",
                "statement_timeout": str(int(self._options.statement_timeout * 1000)),
            },
        )


async def _copy(
    conn: PgConnection, table: str, rows: Sequence[PointRow | UnlabelledRow] | EncodedPoints
) -> None:
    if isinstance(rows, EncodedPoints):
        await _copy_encoded(conn, table, rows.copy)
    else:
        columns = sql.STAGING_COLUMNS[: len(rows[0])]
        await conn.copy_records_to_table(table, records=rows, columns=columns)


async def _copy_encoded(conn: PgConnection, table: str, data: CopyData) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        view = memoryview(data.data)
        for at in range(0, len(view), _COPY_CHUNK):
            yield bytes(view[at : at + _COPY_CHUNK])

    await conn.copy_to_table(table, source=chunks(), columns=data.columns, format="binary")


async def _copy_rollups(conn: PgConnection, rollups: Rollups) -> None:
    """Write the rollups of points just inserted, all of them new: COPY when none of
    their buckets has a row yet (a fresh range, the common case of a seed), else fold
    them in like an insert does. The savepoint keeps the points if the COPY fails."""
    pairs = tuple(zip(native.ROLLUP_TABLES, (rollups.minutes, rollups.hours), strict=True))
    try:
        async with conn.transaction():
            for table, data in pairs:
                await _copy_encoded(conn, table, data)
    except asyncpg.UniqueViolationError:
        await conn.execute(native.CREATE_ROLLUP_STAGING)
        for table, data in pairs:
            await _copy_encoded(conn, "metric_rollup_staging", data)
            await conn.execute(native.MERGE_ROLLUP_STAGING[table])
            await conn.execute(native.CLEAR_ROLLUP_STAGING)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary jsonb serves COPY, which asyncpg speaks in binary only.
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )
    await conn.execute(sql.CREATE_STAGING)
    assert isinstance(conn, ObservedConnection)
    conn.observer = _count_round_trip


def _encode_jsonb(value: object) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])


def _count_round_trip(query: str, seconds: float) -> None:
    roundtrips.record(NAME)
