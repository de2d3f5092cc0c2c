from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

BackendChoice = Literal["auto", "timescaledb", "native"]

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, kw_only=True)
class MetricsOptions:
    """How the metrics store connects and keeps its data. Timeouts are in seconds.

    `schema` holds every metrics table, so metrics sit apart from the domain tables
    even when they share a database (and tests can work in a schema of their own).
    """

    dsn: str
    backend: BackendChoice = "auto"
    schema: str = "metrics"
    min_size: int = 1
    max_size: int = 5
    statement_timeout: float = 60.0
    acquire_timeout: float = 5.0
    close_timeout: float = 10.0
    # Raw points: one partition (native) or chunk (TimescaleDB) per interval.
    chunk_interval: timedelta = timedelta(days=1)
    partitions_ahead: int = 3
    compress_after: timedelta = timedelta(days=7)
    retention: timedelta = timedelta(days=30)
    rollup_retention: timedelta = timedelta(days=400)
    # Points further ahead than this are refused as a clock error.
    max_future: timedelta = timedelta(minutes=10)
    maintenance_interval: float = 3600.0

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.schema):
            raise ValueError("schema must be a lower-case SQL identifier, e.g. `metrics`")
        if self.min_size < 0 or self.max_size < 1 or self.min_size > self.max_size:
            raise ValueError("pool sizes need 0 <= min_size <= max_size and max_size >= 1")
        if self.statement_timeout <= 0 or self.acquire_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.chunk_interval < timedelta(minutes=1) or self.chunk_interval > timedelta(days=31):
            raise ValueError("chunk_interval must be between 1 minute and 31 days")
        if timedelta(days=1) % self.chunk_interval and self.chunk_interval % timedelta(days=1):
            raise ValueError("chunk_interval must divide a day or be a whole number of days")
        if self.retention < self.chunk_interval:
            raise ValueError("retention must be at least one chunk_interval")
        if self.rollup_retention < self.retention:
            raise ValueError("rollup_retention must be at least retention")
        if self.partitions_ahead < 1:
            raise ValueError("partitions_ahead must be at least 1")
        if self.maintenance_interval <= 0:
            raise ValueError("maintenance_interval must be positive")

    def __repr__(self) -> str:
        # The DSN may carry a password.
        return f"MetricsOptions(backend={self.backend!r}, schema={self.schema!r})"
