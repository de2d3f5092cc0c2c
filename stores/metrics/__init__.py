"""Metrics and telemetry: TimescaleDB hypertables, or native partitions without it."""

from stores.metrics.buckets import Window, format_bucket, parse_bucket
from stores.metrics.options import MetricsOptions
from stores.metrics.records import (
    Aggregate,
    Backend,
    BucketValue,
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
from stores.metrics.store import MetricsStore

__all__ = [
    "Aggregate",
    "Backend",
    "BucketValue",
    "CopyData",
    "EncodedPoints",
    "Fill",
    "MaintenanceReport",
    "MetricPoint",
    "MetricSummary",
    "MetricsOptions",
    "MetricsStore",
    "RecordResult",
    "Rollups",
    "Series",
    "SeriesRows",
    "Source",
    "Window",
    "format_bucket",
    "parse_bucket",
]
