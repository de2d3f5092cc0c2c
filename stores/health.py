"""What a store's health probe reports."""

from __future__ import annotations

from dataclasses import dataclass, field


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
