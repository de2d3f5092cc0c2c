"""Plain records the metrics store takes and returns."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple
from uuid import UUID


class Backend(enum.Enum):
    TIMESCALEDB = "timescaledb"
    NATIVE = "native"


class Aggregate(enum.Enum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    LAST = "last"
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"


PERCENTILES = frozenset({Aggregate.P50, Aggregate.P95, Aggregate.P99})


class Fill(enum.Enum):
    NONE = "none"
    NULL = "null"
    PREVIOUS = "previous"
    LINEAR = "linear"


class Source(enum.Enum):
    """Where a series is read from: the raw points or a rollup of them."""

    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"


@dataclass(frozen=True, slots=True)
class MetricPoint:
    agent_id: UUID
    name: str
    time: datetime
    value: float
    labels: dict[str, Any] = field(default_factory=dict)


class BucketValue(NamedTuple):
    """One bucket of a series: its start and the aggregate (None: a filled gap). A named
    tuple: a day of five-minute buckets for twenty agents is thousands of them, and a
    tuple is made in C."""

    time: datetime
    value: float | None


@dataclass(frozen=True, slots=True)
class Series:
    agent_id: UUID
    name: str
    source: Source
    buckets: list[BucketValue]


class SeriesRows(NamedTuple):
    """Every series of one read as rows, `(agent_id, name, time, value)`, each series'
    rows together and by bucket start, and what they were read from. A series with no
    bucket has no row. For a caller that maps rows straight to its answer, with no
    `Series` or bucket made."""

    source: Source
    rows: Sequence[Any]

    def buckets(self) -> dict[tuple[UUID, str], list[BucketValue]]:
        """Each series' buckets, by agent and name (series with none left out)."""
        return {
            series: [_new_tuple(BucketValue, (time, value)) for _, _, time, value in run]
            for series, run in groupby(self.rows, key=_SERIES_OF_ROW)
        }


# A row's series (its agent and name), and a bucket made without the named tuple's
# Python `__new__`: a day of buckets for twenty agents is thousands of them.
_SERIES_OF_ROW = itemgetter(0, 1)
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class MetricSummary:
    agent_id: UUID
    name: str
    latest_value: float
    latest_at: datetime
    recent_avg: float | None
    previous_avg: float | None
    points: int

    @property
    def trend(self) -> float | None:
        """Change of the mean from the previous window to the recent one."""
        if self.recent_avg is None or self.previous_avg is None:
            return None
        return self.recent_avg - self.previous_avg


@dataclass(frozen=True, slots=True)
class RecordResult:
    received: int
    inserted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    created: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    rollup_rows_deleted: int = 0


@dataclass(frozen=True)
class CopyData:
    """Rows in PostgreSQL's binary COPY format for `columns`, in that order (made by
    `stores.metrics.binary`)."""

    columns: tuple[str, ...]
    data: bytes
    rows: int


@dataclass(frozen=True)
class EncodedPoints:
    """Points ready for COPY, and the time range they span (for their partitions)."""

    copy: CopyData
    earliest: datetime
    latest: datetime


@dataclass(frozen=True)
class Rollups:
    """The 1-minute and 1-hour rollup rows of exactly the points of one bulk batch,
    computed by whoever made the points (the seeder knows every one of them)."""

    minutes: CopyData
    hours: CopyData
