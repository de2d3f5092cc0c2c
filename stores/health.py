"""What a store's health probe reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """A store's connections as metrics show them."""

    in_use: int
    idle: int
    waiting: int
    max: int


@dataclass(frozen=True)
class ProbeResult:
    """One live probe of one server."""

    store: str
    up: bool
    latency_ms: float
    version: str | None = None
    # Extra versions worth showing, e.g. {"pgvector": "0.8.6"}.
    details: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), as probes report them."""
    return round((time.perf_counter() - started) * 1000, 3)
