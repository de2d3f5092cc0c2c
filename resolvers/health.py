"""Three-tier health from a live probe of every store."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from resolvers.context import Stores
from stores import ProbeResult


class HealthTier(enum.Enum):
    HEALTHY = "healthy"
    MODERATE = "moderate"
    CRITICAL = "critical"


# PostgreSQL is the source of truth: without it nothing works. The others degrade.
_CRITICAL_STORES = frozenset({"postgres"})


@dataclass(frozen=True)
class HealthReport:
    status: HealthTier
    components: tuple[ProbeResult, ...]
    checked_at: float


async def check_health(stores: Stores) -> HealthReport:
    checks = [
        _bounded(stores.postgres.probe(), "postgres", stores.probe_timeout),
        _bounded(stores.graph.probe(), "neo4j", stores.probe_timeout),
        _bounded(stores.redis.probe(), "redis", stores.probe_timeout),
    ]
    if stores.metrics is not None:
        # Its details say which path runs: {"backend": "timescaledb" | "native"}.
        checks.append(_bounded(stores.metrics.probe(), "metrics", stores.probe_timeout))
    probes = await asyncio.gather(*checks)
    components = tuple([await _with_sessions_fallback(probe, stores) for probe in probes])
    return HealthReport(tier_of(components), components, time.time())


def tier_of(probes: Sequence[ProbeResult]) -> HealthTier:
    down = {probe.store for probe in probes if not probe.up}
    if down & _CRITICAL_STORES:
        return HealthTier.CRITICAL
    if down:
        return HealthTier.MODERATE
    return HealthTier.HEALTHY


async def _with_sessions_fallback(probe: ProbeResult, stores: Stores) -> ProbeResult:
    sessions = stores.sessions
    if probe.store != "redis" or sessions is None or not sessions.fallback_active:
        return probe
    # Redis answers the probe: move the sessions back now rather than on their next use.
    if probe.up and await sessions.recover():
        return probe
    detail = f"active; {sessions.fallback_operations} operations served from memory"
    return replace(probe, details={**probe.details, "sessions_fallback": detail})


async def _bounded(
    probe: Coroutine[Any, Any, ProbeResult], store: str, within: float
) -> ProbeResult:
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(probe, within)
    except TimeoutError:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return ProbeResult(store, False, elapsed, error=f"no answer within {within:g}s")
