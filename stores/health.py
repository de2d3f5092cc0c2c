"""What a store's health probe reports."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

# Why a PostgreSQL pool closed a connection (`PoolUsage.closed`; not counted: closing
# at shutdown):
# its statement was cut short by a cancellation or the client-side timeout,
CUT_SHORT = "cut_short"
# it was given back inside a transaction,
IN_TRANSACTION = "in_transaction"
# it was opened before `expire_connections`,
EXPIRED = "expired"
# it was beyond `min_size` and unused for the idle lifetime,
UNUSED = "unused"
# it had been lent `max_uses` times,
RECYCLED = "recycled"
# or the server or the network had closed it.
LOST = "lost"
CLOSE_REASONS = (CUT_SHORT, IN_TRANSACTION, EXPIRED, UNUSED, RECYCLED, LOST)


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """A store's connections as metrics show them."""

    in_use: int
    idle: int
    waiting: int
    max: int
    # Since the pool opened (PostgreSQL's; the drivers of Neo4j and Redis do not say):
    # connections opened, and closed by the pool by reason (`CLOSE_REASONS`).
    opened: int = 0
    closed: Mapping[str, int] = field(default_factory=dict)


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
